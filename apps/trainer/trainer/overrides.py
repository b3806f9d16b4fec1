"""``--set a.b=c`` overrides: the text is parsed as the type of the field it names."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainer import sections
from trainer.config import Config, build_config
from trainer.migrate import migrate, renamed
from trainer.presets import load_config_data
from trainer.schema import ConfigError, choices, convert, field_map, hints
from trainer.sections import section_class


def field_at(path: str, data: dict[str, Any] | None = None) -> tuple[dataclasses.Field[Any], Any]:
    """The config field at dotted ``path`` and its declared type (errors name allowed keys); a
    package section's keys are its class's fields (the model's: those of ``data``'s kind)."""
    cls: Any = Config
    parts = path.split(".")
    for i, part in enumerate(parts, 1):
        fields = field_map(cls)
        if part not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{'.'.join(parts[:i])}: unknown key; allowed keys here: {allowed}")
        section = fields[part].metadata.get("package")
        if section is not None:
            if i == len(parts):
                raise ConfigError(f"{path}: is a section; set one of its keys")
            owner = section_class(section, (data or {}).get(section))
            return sections.field_at(owner, parts[i:], section)
        field, tp = fields[part], hints(cls)[part]
        if i < len(parts) and not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(parts[:i])}: is a value, not a section (in {path!r})")
        cls = tp
    if dataclasses.is_dataclass(cls):
        sub = ", ".join(sorted(field_map(cls)))  # type: ignore[arg-type]
        raise ConfigError(f"{path}: is a section; set one of its keys: {sub}")
    return field, cls


def parse_override(text: str, data: dict[str, Any] | None = None) -> tuple[str, Any]:
    """``"train.steps=1_000"`` → ``("train.steps", 1000)`` typed by the field."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
    key, value = text.split("=", 1)
    key = renamed(key.strip())
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    field, tp = field_at(key, data)
    # "none" is a value where a field's own choices hold it (model.position: no positions).
    none_is_value = value.strip().lower() == "none" and "none" in (choices(field) or ())
    return key, convert(tp, value, key, from_text=True, none_is_value=none_is_value)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of config ``data`` with every ``--set`` applied in order."""
    out: dict[str, Any] = migrate(data)
    for text in overrides:
        key, value = parse_override(text, out)
        node = out
        *parents, name = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[name] = value
    return out


def load_config(preset: str, overrides: list[str]) -> Config:
    """The validated config of a preset (or YAML file) with ``--set`` overrides applied.

    The command line's path minus its flags (``--data``, checks of the run directory): the
    config other code builds to compile or run the trainer's step.

    Parameters
    ----------
    preset : str
        A preset name (``tiny``, ``gpt2_small``, ...) or a YAML file's path, as ``--config``.
    overrides : list[str]
        ``a.b=c`` overrides, as ``--set`` takes them.

    Returns
    -------
    Config
        The typed, validated config. Raises `ConfigError` if any part of it is invalid.
    """
    return build_config(apply_overrides(load_config_data(preset), overrides))
