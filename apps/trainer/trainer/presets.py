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


def _parse(text: str, where: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config file must hold a mapping of keys, got {data!r}")
    return data


def _read_preset(name: str) -> dict[str, Any]:
    names = preset_names()
    if name not in names:
        raise ConfigError(
            f"--config: unknown preset {name!r}; choose one of {', '.join(names)} or a .yaml path"
        )
    text = (configs_dir() / f"{name}.yaml").read_text("utf-8")
    return _parse(text, f"preset {name}")


def _resolve(data: dict[str, Any], where: str, depth: int) -> dict[str, Any]:
    """Apply ``base: NAME`` inheritance (a preset name; the file's keys win)."""
    base = data.pop("base", None)
    if base is None:
        return data
    if depth > 8:
        raise ConfigError(f"{where}: 'base' chain is too deep (a cycle?)")
    if not isinstance(base, str):
        raise ConfigError(f"{where}.base: expected a preset name, got {base!r}")
    parent = _resolve(_read_preset(base), f"preset {base}", depth + 1)
    return deep_merge(parent, data)


def load_config_data(name_or_path: str) -> dict[str, Any]:
    """Plain data of a preset name or a YAML file path (``base:`` resolved)."""
    looks_like_path = name_or_path.endswith((".yaml", ".yml")) or "/" in name_or_path
    if looks_like_path:
        path = Path(name_or_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"--config: no such file {str(path)!r}")
        data = _parse(path.read_text("utf-8"), str(path))
        data.setdefault("name", path.stem)
        return _resolve(data, str(path), 0)
    data = _read_preset(name_or_path)
    data.setdefault("name", name_or_path)
    return _resolve(data, f"preset {name_or_path}", 0)
