"""Typed conversion of plain YAML data into nested config dataclasses.

Every field of a config dataclass is declared with a type hint and, where it matters, metadata:
``choices`` (allowed values, or a function returning them, for a list a package owns and that is
read only when needed), ``min``/``max`` (inclusive bounds), ``gt`` (exclusive lower bound),
``each_choices`` (allowed values of a list's items) and ``help``. `from_dict` walks the data against
those hints and raises one `ConfigError` naming the key path and what is allowed, at the first
problem.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

import yaml  # type: ignore[import-untyped]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config problem; the message names the key path and what is allowed."""

    exit_code = 2


def spec(default: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with validation metadata (choices, min, max, gt, each_choices, help)."""
    if isinstance(default, list | dict):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(cls: type) -> Any:
    """A dataclass-valued field defaulting to ``cls()``."""
    return dataclasses.field(default_factory=cls)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {_type_name(inner)}"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, str(tp)
    )


def hints(cls: type) -> dict[str, Any]:
    """Resolved type hints of a config dataclass."""
    return typing.get_type_hints(cls)


def field_map(cls: type) -> dict[str, dataclasses.Field[Any]]:
    """The dataclass fields of ``cls`` by name."""
    return {f.name: f for f in dataclasses.fields(cls)}


def parse_scalar(text: str, tp: Any, path: str, *, none_is_value: bool = False) -> Any:
    """Parse an override's text as the field's type (``--set a.b=TEXT``).

    ``null``, ``~``, an empty text and ``none`` mean null, except ``none`` where the field takes
    the word as a value (``none_is_value``: ``model.position=none``, no position encoding).
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        word = text.strip().lower()
        is_null = word in ("null", "~", "") or (word == "none" and not none_is_value)
        if type(None) in args and is_null:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_scalar(text, arg, path)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{path}: cannot read {text!r} as {_type_name(tp)}")
    if origin is list:
        (inner,) = typing.get_args(tp)
        stripped = text.strip()
        if stripped.startswith("["):
            try:
                items = yaml.safe_load(stripped)
            except yaml.YAMLError as err:
                raise ConfigError(f"{path}: cannot read {text!r} as a list ({err})") from None
            return [
                parse_scalar(str(i) if not isinstance(i, str) else i, inner, path) for i in items
            ]
        if stripped == "":
            return []
        return [parse_scalar(part.strip(), inner, path) for part in stripped.split(",")]
    if tp is bool:
        low = text.strip().lower()
        if low in ("true", "yes", "on", "1"):
            return True
        if low in ("false", "no", "off", "0"):
            return False
        raise ConfigError(f"{path}: expected true/false, got {text!r}")
    if tp is int:
        try:
            return int(text.strip().replace("_", ""))
        except ValueError:
            raise ConfigError(f"{path}: expected an integer, got {text!r}") from None
    if tp is float:
        try:
            return float(text.strip())
        except ValueError:
            raise ConfigError(f"{path}: expected a number, got {text!r}") from None
    if tp is str:
        return text
    raise ConfigError(f"{path}: cannot be set from the command line (type {_type_name(tp)})")


def _convert(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` against type ``tp`` (no coercion except int → float)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)  # type: ignore[arg-type]
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected {_type_name(tp)}, got {value!r}")
        return [_convert(inner, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            # YAML 1.1 reads "3e-4" as a string; accept numeric strings for float fields.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported type {tp}")


def choices(f: dataclasses.Field[Any]) -> tuple[Any, ...] | None:
    """The values field ``f`` allows (None: any value of its type).

    A callable ``choices`` is called here, so a list owned by a package (e.g. ``tjx.nn``'s remat
    policies) is imported only when a value is checked, not when the CLI prints ``--help``.
    """
    allowed = f.metadata.get("choices")
    if allowed is None:
        return None
    return tuple(allowed() if callable(allowed) else allowed)


def check_field(f: dataclasses.Field[Any], value: Any, path: str) -> None:
    """Apply a field's metadata constraints to a converted value."""
    meta = f.metadata
    if value is None:
        return
    allowed_values = choices(f)
    if allowed_values is not None and value not in allowed_values:
        allowed = ", ".join(repr(c) for c in allowed_values)
        raise ConfigError(f"{path}: {value!r} is not allowed; choose one of {allowed}")
    if "each_choices" in meta:
        each = meta["each_choices"]
        each = tuple(each() if callable(each) else each)
        for item in value:
            if item not in each:
                allowed = ", ".join(repr(c) for c in each)
                raise ConfigError(f"{path}: {item!r} is not allowed; items must be among {allowed}")
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, int | float) and not isinstance(item, bool):
            if "min" in meta and item < meta["min"]:
                raise ConfigError(f"{path}: {item!r} is too small; allowed: >= {meta['min']}")
            if "gt" in meta and item <= meta["gt"]:
                raise ConfigError(f"{path}: {item!r} is too small; allowed: > {meta['gt']}")
            if "max" in meta and item > meta["max"]:
                raise ConfigError(f"{path}: {item!r} is too large; allowed: <= {meta['max']}")
            if "lt" in meta and item >= meta["lt"]:
                raise ConfigError(f"{path}: {item!r} is too large; allowed: < {meta['lt']}")


def from_dict(cls: type[T], data: Any, path: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and wrong types."""
    where = path or "config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of keys, got {data!r}")
    fields = field_map(cls)
    types_ = hints(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in fields:
            allowed = ", ".join(sorted(fields))
            raise ConfigError(f"{key_path}: unknown key; allowed keys here: {allowed}")
        converted = _convert(types_[key], value, key_path)
        check_field(fields[key], converted, key_path)
        kwargs[key] = converted
    return cls(**kwargs)


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML-safe data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    return obj


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """``update`` merged into a copy of ``base`` (mappings merge, everything else replaces)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
