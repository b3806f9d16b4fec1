"""``python -m trainer --show-config [--config X]``: every config key with its type, default,
allowed values and help, read from the config's own fields (their types and ``spec`` metadata),
so the table cannot drift from what the trainer accepts. The trainer README's key table is this
output (``tests/test_show_config.py`` keeps them equal)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from trainer.config import Config
from trainer.schema import choices, field_map, hints, type_name
from trainer.sections import expand, fields_of, nested_class, section_class

Row = tuple[str, str, str, str, str]
#: Bound metadata → how the table words it.
_BOUNDS = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))


def _value(value: Any) -> str:
    """A value as it would be written in YAML or ``--set`` (``null``, ``true``, ``[1, 5]``)."""
    text = json.dumps(value, ensure_ascii=False)
    return text[1:-1] if isinstance(value, str) and text[1:-1] == value and value else text


def _allowed(f: dataclasses.Field[Any]) -> str:
    listed = choices(f)
    each = choices(f, "each_choices")
    bounds = [f"{word} {f.metadata[key]}" for key, word in _BOUNDS if key in f.metadata]
    if listed is not None:
        return ", ".join(map(str, listed))
    if each is not None:
        return "each of " + ", ".join(map(str, each))
    return ", ".join(bounds)


def _package_rows(cls: type, values: dict[str, Any], path: str) -> Iterator[Row]:
    """The rows of a package section (its class's fields, the model's of its kind)."""
    for name, (tp, f) in fields_of(cls, path).items():
        inner = nested_class(tp)
        if inner is not None:
            yield from _package_rows(inner, values[name], f"{path}.{name}")
        else:
            help_text = str(f.metadata.get("help", ""))
            yield f"{path}.{name}", type_name(tp), _value(values[name]), _allowed(f), help_text


def rows(cfg: Any, prefix: str = "") -> Iterator[Row]:
    """(key, type, value in ``cfg``, allowed, help) of every leaf key of config ``cfg``."""
    types = hints(type(cfg))
    for name, f in field_map(type(cfg)).items():
        key, value = f"{prefix}{name}", getattr(cfg, name)
        section = f.metadata.get("package")
        if section is not None:
            owner = section_class(section, value)
            yield from _package_rows(owner, expand(owner, value, section), section)
            continue
        if dataclasses.is_dataclass(value):
            yield from rows(value, f"{key}.")
            continue
        help_text = str(f.metadata.get("help", ""))
        yield key, type_name(types[name]), _value(value), _allowed(f), help_text


def render(cfg: Config | None = None, preset: str | None = None) -> str:
    """The Markdown table of every key; values are ``cfg``'s (the built-in defaults if None)."""
    source = f"preset {preset}" if preset else "the built-in defaults"
    lines = [
        f"Every config key (`--set KEY=VALUE`); the value column holds {source}.",
        "",
        "| key | type | value | allowed | help |",
        "|---|---|---|---|---|",
    ]
    for key, tp, value, allowed, help_text in rows(cfg if cfg is not None else Config()):
        cells = [f"`{key}`", tp, f"`{value}`", allowed, help_text]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
