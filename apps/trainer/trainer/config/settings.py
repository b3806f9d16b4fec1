"""A command line's settings as plain data: presets and YAML files (``base:`` chains, each file
`migrate`d from an older layout), then ``--set`` overrides typed by their fields (an old key name
`renamed`); `trainer.config.typed.read_config` makes the `Config` of the result. Presets are the
YAML files of ``configs/`` beside the ``trainer`` package (Pants' source root is
``apps/trainer``)."""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from tjx.core import config
from tjx.core.config import ConfigError, deep_merge, keyed, value_text
from tjx.core.lazy import lazy_imports
from trainer.config.seams import ConfigData
from trainer.config.typed import SCHEMA, Config, for_new_run, read_config

with lazy_imports(globals()):  # they load jax, which the command line must not wait for
    from tjx import nn, optim

__all__ = ["deep_merge", "value_text"]  # tjx.core.config's, kept under the names callers know


def renamed(key: str) -> str:
    """Today's name of dotted ``key`` (itself unless it, or a section holding it, was renamed)."""
    for section, table in (("model", nn.RENAMED_MODEL_KEYS), ("optimizer", optim.RENAMED_KEYS)):
        for old, new in table.items():
            # A key that became a section of its name (model.norm → model.norm.kind): only
            # the key itself is old, the section's keys are today's.
            whole = key.startswith(f"{section}.{old}.") and not new.startswith(f"{old}.")
            if key == f"{section}.{old}" or whole:
                return f"{section}.{new}" + key[len(section) + 1 + len(old) :]
    return key


def migrate(data: ConfigData) -> ConfigData:
    """A copy of config ``data`` in today's keys (tjx.nn's and tjx.optim's migrations of their
    sections; data that is no mapping is returned as is)."""
    if not isinstance(data, dict):
        return data
    out = copy.deepcopy(data)
    model, optimizer = out.get("model"), out.get("optimizer")
    with keyed(None):
        if isinstance(model, dict):  # an old config's optimizer.lr marks its model old too
            old = isinstance(optimizer, dict) and "lr" in optimizer
            out["model"] = nn.migrate_model_section(model, old_layout=old)
        if isinstance(optimizer, dict):
            out["optimizer"] = optim.migrate_section(optimizer)
    return out


def configs_dir() -> Path:
    """The folder of shipped presets, ``configs/`` beside the ``trainer`` package (two up)."""
    folder = Path(__file__).resolve().parents[2] / "configs"
    if not folder.is_dir():
        raise ConfigError(f"the trainer's presets are missing: no folder {folder}")
    return folder


FILES = config.ConfigFiles(
    configs_dir,
    migrate=migrate,
    empty=" (it would train on every default); give at least `base: tiny` or another preset",
)


def preset_names() -> list[str]:
    """Names of the shipped presets (``tiny``, ``gpt2_small``, ...)."""
    return FILES.names()


def load_config_data(name_or_path: str) -> ConfigData:
    """Plain data of a preset name or a YAML file path (``base:`` resolved, each file migrated)."""
    return FILES.load(name_or_path)


def field_at(key: str, data: ConfigData | None = None) -> tuple[dataclasses.Field[object], object]:
    """The field at dotted ``key`` and the type ``--set`` reads (`tjx.core.config.Schema.field_at`);
    the model's keys are those of ``data``'s kind."""
    return SCHEMA.field_at(key, SCHEMA.kind_of(data or {}))


def parse_override(text: str, data: ConfigData | None = None) -> tuple[str, object]:
    """``"train.steps=1_000"`` → ``("train.steps", 1000)`` typed by the field (an old key name is
    read as today's: ``optimizer.lr`` → ``optimizer.schedule.peak_lr``)."""
    return config.parse_override(SCHEMA, text, data, renamed)


def parse_pair(flag: str, text: str, expected: str) -> tuple[int, int]:
    """``"A:B"`` → (A, B), two integers; else a ConfigError naming ``flag`` and, in words, the
    ``expected`` form (each flag checks its own bounds on them)."""
    try:
        a, b = (int(part) for part in text.split(":"))
    except ValueError:
        raise ConfigError(f"{flag}: expected {expected}, got {text!r}") from None
    return a, b


def apply_overrides(
    data: ConfigData, overrides: list[str], say: Callable[[str], None] | None = None
) -> ConfigData:
    """A copy of config ``data`` with every ``--set`` applied in order
    (`tjx.core.config.apply_overrides`; an old key name works, and ``say`` hears its new name
    once)."""
    return config.apply_overrides(SCHEMA, data, overrides, renamed, say)


def changed(before: ConfigData, after: ConfigData) -> list[str]:
    """``key=value`` of every key whose value ``after`` (a preset's data with a command line's
    overrides) differs from ``before`` (the preset's), as ``--set`` would write it."""
    return config.changed(SCHEMA, before, after)


def load_config(preset: str, overrides: list[str]) -> Config:
    """The validated config of a preset name or YAML path (``--config``) with ``a.b=c``
    overrides (``--set``): the command line's config minus its other flags (`ConfigError`), as
    a new run reads it (`for_new_run`, its lines on stderr)."""
    data, lines = for_new_run(apply_overrides(load_config_data(preset), overrides))
    print(*lines, sep="\n", file=sys.stderr, flush=True, end="\n" if lines else "")
    return read_config(data)


def rows(cfg: Config) -> Iterator[tuple[str, str, str, str, str]]:
    """``--show-config``'s (key, type, value in ``cfg``, allowed, help) of every key, from the
    fields themselves (tjx.core.config's `key_rows`): the README's key table is this output."""
    return config.key_rows(SCHEMA, cfg.to_dict())


def render(cfg: Config, preset: str | None = None) -> str:
    """The Markdown table of every key; values are ``cfg``'s (``preset`` names where from)."""
    where = f"preset {preset}" if preset else "the built-in defaults"
    return config.key_table(SCHEMA, cfg.to_dict(), where)
