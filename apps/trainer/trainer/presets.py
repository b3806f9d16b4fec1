"""Config presets: the YAML files of ``apps/trainer/configs/``.

They ship beside the ``trainer`` package (Pants' source root is ``apps/trainer``, so the binary, the
tests and ``tools/devtest`` all hold ``configs/`` next to ``trainer/``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tjx import ckpt
from trainer.migrate import migrate
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


def _name(source: str | Path) -> str:
    """What errors and the ``base:`` chain call a preset name or a YAML file path."""
    return str(source) if isinstance(source, Path) else f"preset {source}"


def _read(source: str | Path, key: str) -> dict[str, Any]:
    """The settings in preset ``source`` (a name) or YAML file ``source`` (a path); ``key`` is the
    setting that names it (``--config`` or ``FILE.base``)."""
    where = _name(source)
    if isinstance(source, str):
        names = preset_names()
        if source not in names:
            raise ConfigError(
                f"--config: unknown preset {source!r}; choose one of {', '.join(names)} or a "
                ".yaml path"
            )
        text = (configs_dir() / f"{source}.yaml").read_text("utf-8")
    elif source.is_dir():
        raise ConfigError(f"{key}: {where!r} is a directory; pass a .yaml file")
    elif not source.is_file():
        raise ConfigError(f"{key}: no such file {where!r}")
    else:
        try:
            text = source.read_text("utf-8")
        except UnicodeDecodeError as err:
            raise ConfigError(
                f"{where}: not UTF-8 text (byte {err.start}); save the config as UTF-8"
            ) from None
    try:
        data = ckpt.load_yaml(text)  # safe (no code runs), and a key given twice is an error
    except yaml.YAMLError as err:
        raise ConfigError(f"{where}: not valid YAML ({err})".replace("\n", " ")) from None
    except ckpt.DuplicateKeyError as err:
        raise ConfigError(f"{where}: {err}") from None
    if data is None:
        raise ConfigError(
            f"{where}: the file holds no settings (it would train on every default); give at "
            "least `base: tiny` or another preset"
        )
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: a config file must hold a mapping of keys, got {data!r}")
    return migrate(data)  # each file's older key names first: a child's then win over its base


def _source(ref: str) -> str | Path:
    """A preset name, or a path where ``ref`` looks like one (ends in .yaml/.yml or has a /)."""
    return Path(ref).expanduser() if ref.endswith((".yaml", ".yml")) or "/" in ref else ref


def _resolve(data: dict[str, Any], source: str | Path, chain: tuple[str, ...]) -> dict[str, Any]:
    """Apply ``base:`` inheritance (a preset name, or a YAML path relative to the file that names
    it, else to the working directory; the file's own keys win). ``chain``: the resolved names of
    the files read so far, so that a base coming back to one is an error naming the chain."""
    base = data.pop("base", None)
    if base is None:
        return data
    key = f"{_name(source)}.base"
    if not isinstance(base, str):
        raise ConfigError(f"{key}: expected a preset name or a .yaml path, got {base!r}")
    parent = _source(base)
    if isinstance(parent, Path):
        here = source.resolve().parent if isinstance(source, Path) else Path()
        parent = (here / parent).resolve()
    if _name(parent) in chain:
        raise ConfigError(f"{key}: a cycle: {' -> '.join([*chain, _name(parent)])}")
    return deep_merge(_resolve(_read(parent, key), parent, (*chain, _name(parent))), data)


def load_config_data(name_or_path: str) -> dict[str, Any]:
    """Plain data of a preset name or a YAML file path (``base:`` resolved)."""
    source = _source(name_or_path)
    data = _read(source, "--config")
    if isinstance(source, Path):
        data.setdefault("name", source.stem)
        return _resolve(data, source, (str(source.resolve()),))
    data.setdefault("name", source)
    return _resolve(data, source, (_name(source),))
