"""An app's config files: a preset's name or a YAML file's path read as plain data, with ``base:``
inheritance (a file names the preset or file it changes), each problem one `ConfigError` naming
the file. The YAML is read safely and a key given twice is an error (`load_yaml`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tjx.core.config.text import deep_merge
from tjx.core.config.values import ConfigError
from tjx.core.config.yaml_io import DuplicateKeyError, load_yaml


def _same(data: dict[str, Any]) -> dict[str, Any]:
    return data


@dataclass(frozen=True)
class ConfigFiles:
    """Where an app's presets are and how its files are read.

    Attributes
    ----------
    presets : callable
        The folder of preset files ``<name>.yaml`` (called when first needed: it may raise).
    migrate : callable
        Each file's data in today's keys, before a child's keys win over its base's.
    flag : str
        The command-line flag that names the file (in errors).
    empty : str
        How an empty file's error goes on after "the file holds no settings".
    """

    presets: Callable[[], Path]
    migrate: Callable[[dict[str, Any]], dict[str, Any]] = _same
    flag: str = "--config"
    empty: str = "; give at least `base: <preset>`"

    def names(self) -> list[str]:
        """The presets' names."""
        return sorted(p.stem for p in self.presets().glob("*.yaml"))

    def load(self, name_or_path: str) -> dict[str, Any]:
        """Plain data of a preset name or a YAML file path (``base:`` resolved; ``name``: the
        preset's, or the file's stem, unless the file sets one)."""
        source = _source(name_or_path)
        data = self._read(source, self.flag)
        data.setdefault("name", source.stem if isinstance(source, Path) else source)
        first = str(source.resolve()) if isinstance(source, Path) else _name(source)
        return self._resolve(data, source, (first,))

    def _read(self, source: str | Path, key: str) -> dict[str, Any]:
        """The settings in preset ``source`` (a name) or YAML file ``source`` (a path); ``key`` is
        the setting that names it (the flag, or ``FILE.base``)."""
        where = _name(source)
        if isinstance(source, str):
            names = self.names()
            if source not in names:
                raise ConfigError(
                    f"{self.flag}: unknown preset {source!r}; choose one of {', '.join(names)} "
                    "or a .yaml path"
                )
            text = (self.presets() / f"{source}.yaml").read_text("utf-8")
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
            data = load_yaml(text)  # safe (no code runs), and a key given twice is an error
        except yaml.YAMLError as err:
            raise ConfigError(f"{where}: not valid YAML ({err})".replace("\n", " ")) from None
        except DuplicateKeyError as err:
            raise ConfigError(f"{where}: {err}") from None
        if data is None:
            raise ConfigError(f"{where}: the file holds no settings{self.empty}")
        if not isinstance(data, dict):
            raise ConfigError(f"{where}: a config file must hold a mapping of keys, got {data!r}")
        return self.migrate(data)  # each file's older key names first: a child's win over its base

    def _resolve(
        self, data: dict[str, Any], source: str | Path, chain: tuple[str, ...]
    ) -> dict[str, Any]:
        """Apply ``base:`` (a preset name, or a YAML path relative to the file that names it, else
        to the working directory; the file's own keys win). ``chain``: the files read so far, so
        that a base coming back to one is an error naming the chain."""
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
        inherited = self._resolve(self._read(parent, key), parent, (*chain, _name(parent)))
        return deep_merge(inherited, data)


def _name(source: str | Path) -> str:
    """What errors and the ``base:`` chain call a preset name or a YAML file path."""
    return str(source) if isinstance(source, Path) else f"preset {source}"


def _source(ref: str) -> str | Path:
    """A preset name, or a path where ``ref`` looks like one (ends in .yaml/.yml or has a /)."""
    return Path(ref).expanduser() if ref.endswith((".yaml", ".yml")) or "/" in ref else ref
