"""Config presets: the YAML files of ``apps/trainer/configs/``.

They ship beside the ``trainer`` package (Pants' source root is ``apps/trainer``, so the binary, the
tests and ``tools/devtest`` all hold ``configs/`` next to ``trainer/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from trainer.schema import ConfigError, deep_merge


def configs_dir() -> Path:
    """The folder of shipped presets, ``configs/`` beside the ``trainer`` package."""
    folder = Path(__file__).resolve().parent.parent / "configs"
    if not folder.is_dir():
        raise ConfigError(f"the trainer's presets are missing: no folder {folder}")
    return folder


def preset_names() -> list[str]:
    """Names of the shipped presets (``tiny``, ``gpt2_small``, ...)."""
    return sorted(p.stem for p in configs_dir().glob("*.yaml"))


class _UniqueKeyLoader(yaml.SafeLoader):  # type: ignore[misc]
    """PyYAML's safe loader, except that a key given twice in one mapping is an error (PyYAML
    keeps the last one silently, so a typo'd second ``lr:`` would win unnoticed)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"key {key!r} is given twice (line {line}); keep one")
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader subclass: no code runs
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})".replace("\n", " ")) from None
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    if data is None:
        raise ConfigError(
            f"{where}: the file holds no settings (it would train on every default); give at "
            "least `base: tiny` or another preset"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config file must hold a mapping of keys, got {data!r}")
    return data


def _read_file(path: Path, key: str = "--config") -> dict[str, Any]:
    if path.is_dir():
        raise ConfigError(f"{key}: {str(path)!r} is a directory; pass a .yaml file")
    if not path.is_file():
        raise ConfigError(f"{key}: no such file {str(path)!r}")
    try:
        text = path.read_text("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"{path}: not UTF-8 text (byte {err.start}); save the config as UTF-8"
        ) from None
    return _parse(text, str(path))


def _read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise ConfigError(
            f"--config: unknown preset {name!r}; choose one of {', '.join(names)} or a .yaml path"
        )
    text = (configs_dir() / f"{name}.yaml").read_text("utf-8")
    return _parse(text, f"preset {name}")


def _looks_like_path(name: str) -> bool:
    return name.endswith((".yaml", ".yml")) or "/" in name


def _resolve(
    data: dict[str, Any], where: str, here: Path | None, seen: tuple[str, ...]
) -> dict[str, Any]:
    """Apply ``base:`` inheritance (a preset name, or a YAML path relative to the file that names
    it; the file's own keys win). A base that comes back to a file already in the chain is an
    error naming the chain."""
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{where}.base: expected a preset name or a .yaml path, got {base!r}")
    path: Path | None = None
    if _looks_like_path(base):
        path = Path(base).expanduser()
        path = (path if path.is_absolute() or here is None else here / path).resolve()
    ident = str(path) if path is not None else f"preset {base}"
    if ident in seen:
        raise ConfigError(f"{where}.base: a cycle: {' -> '.join([*seen, ident])}")
    parent = _read_file(path, f"{where}.base") if path is not None else _read_preset(base)
    parent_here = path.parent if path is not None else None
    return deep_merge(_resolve(parent, ident, parent_here, (*seen, ident)), data)


def load_config_data(name_or_path: str) -> dict[str, Any]:
    """Plain data of a preset name or a YAML file path (``base:`` resolved)."""
    if _looks_like_path(name_or_path):
        path = Path(name_or_path).expanduser()
        data = _read_file(path)
        data.setdefault("name", path.stem)
        return _resolve(data, str(path), path.resolve().parent, (str(path.resolve()),))
    data = _read_preset(name_or_path)
    data.setdefault("name", name_or_path)
    return _resolve(data, f"preset {name_or_path}", None, (f"preset {name_or_path}",))
