"""A config as a person types and reads it: ``--set KEY=VALUE`` overrides (`apply_overrides`), the
keys a command line changes (`changed`, a run's first screen), a value as YAML would write it
(`value_text`) and the table of every key with its type, value, allowed values and help
(`key_table`, read from the fields themselves so it cannot drift from what is accepted)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from tjx.core.config.schema import Schema
from tjx.core.config.values import ConfigError, choices, convert, type_name


def flatten_config(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as dotted keys: ``{"a": {"b": 1}}`` → ``{"a.b": 1}``.

    Lists and scalars are leaves; an empty mapping leaves no key.
    """
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            out.update(flatten_config(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def value_text(value: Any) -> str:
    """A value as it would be written in YAML or ``--set`` (``null``, ``true``, ``[1, 5]``)."""
    text = json.dumps(value, ensure_ascii=False)
    return text[1:-1] if isinstance(value, str) and text[1:-1] == value and value else text


def _same(key: str) -> str:
    return key


def parse_override(
    schema: Schema,
    text: str,
    data: dict[str, Any] | None = None,
    renamed: Callable[[str], str] = _same,
) -> tuple[str, Any]:
    """``"train.steps=1_000"`` → ``("train.steps", 1000)`` typed by the field of ``schema`` (for
    ``data``'s kind); ``renamed`` gives an old key's name today."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
    key, value = text.split("=", 1)
    key = renamed(key.strip())
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    field, tp = schema.field_at(key, schema.kind_of(data or {}))
    # "none" is a value where a field's own choices hold it (model.position.kind: no positions).
    none_is_value = value.strip().lower() == "none" and "none" in (choices(field) or ())
    return key, convert(tp, value, key, from_text=True, none_is_value=none_is_value)


def apply_overrides(
    schema: Schema,
    data: dict[str, Any],
    overrides: list[str],
    renamed: Callable[[str], str] = _same,
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A copy of config ``data`` with every ``--set`` applied in order (a key set twice: the last
    wins). A setting given under its old and its new name is refused, as in a file: neither may
    silently win; an old name alone works, and ``say`` hears its new name once."""
    out: dict[str, Any] = dict(data)
    named: dict[str, str] = {}  # today's key → the name the command line gave it
    for text in overrides:
        key, value = parse_override(schema, text, out, renamed)
        given = text.split("=", 1)[0].strip()
        first, before = key not in named, named.setdefault(key, given)
        if before != given:  # one setting under its old and its new name
            old = given if given != key else before
            raise ConfigError(f"--set {old}: is {key} now, which is set too; keep only {key}")
        if first and given != key and say is not None:
            say(f"trainer: note: --set {given} is {key} now (the old name still works)")
        node = out
        *parents, name = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = node = dict(child) if isinstance(child, dict) else {}
        node[name] = value
    return out


def changed(schema: Schema, before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """``key=value`` of every key whose value ``after`` (a preset's data with a command line's
    overrides) differs from ``before`` (the preset's; a key it leaves out: the field's default),
    as ``--set`` would write it."""
    ours, theirs = flatten_config(after), flatten_config(before)
    kind = schema.kind_of(after)
    out = []
    for key, value in ours.items():
        if key not in theirs:
            theirs[key] = schema.default(key, kind)
        if theirs[key] != value:
            out.append(f"{key}={value_text(value)}")
    return out


#: Bound metadata → how the table words it.
_BOUNDS = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))


def _allowed(f: dataclasses.Field[Any]) -> str:
    listed, each = choices(f), choices(f, "each_choices")
    if listed is not None:
        return ", ".join(map(str, listed))
    if each is not None:
        return "each of " + ", ".join(map(str, each))
    return ", ".join(f"{word} {f.metadata[key]}" for key, word in _BOUNDS if key in f.metadata)


def key_rows(schema: Schema, data: dict[str, Any]) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, type, value in config ``data``, allowed, help) of every key of ``data``'s kind."""
    flat = flatten_config(data)
    for key, tp, f in schema.leaves(schema.kind_of(data)):
        help_text = str(f.metadata.get("help", ""))
        yield key, type_name(tp), value_text(flat[key]), _allowed(f), help_text


def key_table(schema: Schema, data: dict[str, Any], source: str) -> str:
    """The Markdown table of every key; values are config ``data``'s (``source`` says whose)."""
    lines = [
        f"Every config key (`--set KEY=VALUE`); the value column holds {source}.",
        "",
        "| key | type | value | allowed | help |",
        "|---|---|---|---|---|",
    ]
    for key, tp, value, allowed, help_text in key_rows(schema, data):
        cells = [f"`{key}`", tp, f"`{value}`", allowed, help_text]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"
