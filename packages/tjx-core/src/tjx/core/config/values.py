"""One config value, read and checked by its dataclass field: its type (`convert`, from YAML or
from ``--set`` text), its metadata (`check_field`: ``choices``, ``each_choices``, bounds) and how
errors word the type (`type_name`). Every problem is one `ConfigError` naming the key path and what
is allowed. Fields are declared with `setting` (tjx.core.fields, the one helper every
package uses); `tjx.core.config.schema` walks a tree of such dataclasses. A config class's own
checks of one value, for its ``__post_init__`` (`choice`, `positive`, `rate`), are here too: each a
``ValueError`` naming ``Class.field``, as a Python caller sees the class.

No jax and no numpy here: an app's command line is read and checked before it pays for them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import operator
import types
import typing
from collections.abc import Iterable, Iterator
from importlib import import_module
from typing import Any

import yaml  # type: ignore[import-untyped]


class ConfigError(ValueError):
    """A config problem; the message names the key path and what is allowed."""

    exit_code = 2


# Scalar field types: what a YAML value must be an instance of, and the type's name in errors.
_SCALARS: dict[Any, tuple[Any, str]] = {
    bool: (bool, "true/false"),
    int: (int, "an integer"),
    float: (int | float, "a number"),
    str: (str, "a string"),
    dict: (dict, "a mapping"),  # free-form entries a package checks itself (data.sources)
}
_BOOL_WORDS = dict.fromkeys(("true", "yes", "on", "1"), True)
_BOOL_WORDS |= dict.fromkeys(("false", "no", "off", "0"), False)
_NULL_WORDS = ("null", "~", "", "none")


def type_name(tp: Any) -> str:
    """How errors and ``--show-config`` word type ``tp`` ("an integer or null")."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in typing.get_args(tp))
    if origin is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {type_name(inner)}"
    if origin is tuple and _variadic(tp):
        return f"a list of {type_name(typing.get_args(tp)[0])}"
    if origin is tuple:
        return "a list of " + ", ".join(type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return _SCALARS[tp][1] if tp in _SCALARS else str(tp)


def _variadic(tp: Any) -> bool:
    """Whether ``tp`` is ``tuple[X, ...]`` (a list of any length), not a fixed-length tuple."""
    args = typing.get_args(tp)
    return len(args) == 2 and args[1] is Ellipsis


def _from_text(text: str, tp: Any, path: str) -> Any:
    """The value YAML would give for override ``text`` on a scalar or list field of type ``tp``.

    Text that does not read as ``tp`` comes back unchanged, for `convert` to reject quoting it.
    """
    word = text.strip()
    if typing.get_origin(tp) in (list, tuple):
        if not word.startswith("["):
            return [part.strip() for part in word.split(",")] if word else []
        try:
            items = yaml.safe_load(word)
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: cannot read {text!r} as a list ({err})") from None
        # Items stay text, to be read as the item type just like comma-form items; a mapping
        # (``[{source: ./web, weight: 3}]``) stays one.
        return [item if isinstance(item, str | dict) else str(item) for item in items]
    if tp is bool:
        return _BOOL_WORDS.get(word.lower(), text)
    if tp is int:
        try:
            return int(word.replace("_", ""))  # 1_000
        except ValueError:
            return text
    return text  # a float is read from text by `convert`, as YAML's "3e-4" is


def convert(
    tp: Any, value: Any, path: str, *, from_text: bool = False, none_is_value: bool = False
) -> Any:
    """``value`` checked against type ``tp``, naming ``path`` in errors.

    Nothing is coerced but int → float and a numeric string → float (YAML 1.1 reads ``3e-4`` as a
    string). With ``from_text``, ``value`` is the text of ``--set a.b=TEXT``, read as ``tp``:
    ``null``, ``~``, an empty text and ``none`` mean null for an optional field, except ``none``
    where the field takes the word as a value (``none_is_value``: ``model.position=none``, no
    position encoding).
    """
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        word = value.strip().lower() if from_text else None
        if type(None) in args and (
            value is None or (word in _NULL_WORDS and not (word == "none" and none_is_value))
        ):
            return None
        for arg in args:
            if arg is not type(None):
                try:
                    return convert(arg, value, path, from_text=from_text)
                except ConfigError:
                    continue
        if from_text:
            raise ConfigError(f"{path}: cannot read {value!r} as {type_name(tp)}")
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    if from_text and isinstance(value, str):  # a list's mapping item is already a value
        value = _from_text(value, tp, path)
    if origin is tuple and _variadic(tp):  # tuple[str, ...] (lora.targets): any length
        item = typing.get_args(tp)[0]
        tp, origin = list[item], list  # type: ignore[valid-type]
    if origin is tuple:  # a fixed-length tuple field (rope_scaling): a list of its item types
        items = typing.get_args(tp)
        if not isinstance(value, list | tuple) or len(value) != len(items):
            raise ConfigError(f"{path}: expected a list of {len(items)} values, got {value!r}")
        pairs = enumerate(zip(items, value, strict=True))
        return [convert(t, v, f"{path}[{i}]", from_text=from_text) for i, (t, v) in pairs]
    if origin is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
        # An override's items keep the field's path: its text is one value.
        return [
            convert(inner, v, path if from_text else f"{path}[{i}]", from_text=from_text)
            for i, v in enumerate(value)
        ]
    if tp not in _SCALARS:
        raise ConfigError(f"{path}: unsupported type {tp}")
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    # bool is an int subclass, so only a bool field takes true/false.
    if not isinstance(value, _SCALARS[tp][0]) or (tp is not bool and isinstance(value, bool)):
        raise ConfigError(f"{path}: expected {type_name(tp)}, got {value!r}")
    return float(value) if tp is float else value


def choices(f: dataclasses.Field[Any], key: str = "choices") -> tuple[Any, ...] | None:
    """The values field ``f`` allows (None: any value of its type); with ``key="each_choices"``,
    the values its list's items allow.

    ``"module:NAME"`` names a package's own list (``"tjx.nn:REMAT_POLICIES"``): the package
    validates its configs with it, so the trainer keeps no copy that could drift. It is imported
    here, when a value is checked, because importing tjx.nn or tjx.optim loads JAX, which
    ``--help`` and a bad command line should not wait for. A config's ``null`` is its type's
    business, so ``None`` is left out of such a list.
    """
    allowed = f.metadata.get(key)
    if isinstance(allowed, str):
        module, name = allowed.split(":")
        allowed = getattr(import_module(module), name)
    return None if allowed is None else tuple(c for c in allowed if c is not None)


@contextlib.contextmanager
def keyed(key: str | None, *errors: type[Exception]) -> Iterator[None]:
    """Turn a package's ``errors`` (default: ``ValueError``) into one `ConfigError` naming the
    config key or flag ``key`` at fault (``None``: the message names it already)."""
    caught = errors or (ValueError,)
    try:
        yield
    except caught as err:
        raise ConfigError(f"{key}: {err}" if key else str(err)) from None


def check_unchanged(section: Any, keys: Iterable[str], path: str, why: str) -> None:
    """Refuse settings of a section that is switched off, where they would do nothing.

    Parameters
    ----------
    section : dataclass instance
        The section as read (its class builds with no arguments: its defaults).
    keys : iterable of str
        The keys the config gave, checked in this order. One at its class's default passes: a
        saved config lists every key.
    path, why : str
        The section's key path, and the message: the first key changed is a `ConfigError`
        ``"<path>.<key>: <why>"``.
    """
    default = type(section)()
    for key in keys:
        if getattr(section, key) != getattr(default, key):
            raise ConfigError(f"{path}.{key}: {why}")


# Bound metadata: the key, the test a value fails it by, and the error's words.
_BOUNDS = (
    ("min", operator.lt, "too small; allowed: >="),
    ("gt", operator.le, "too small; allowed: >"),
    ("max", operator.gt, "too large; allowed: <="),
    ("lt", operator.ge, "too large; allowed: <"),
)


def check_field(f: dataclasses.Field[Any], value: Any, path: str) -> None:
    """Apply a field's metadata constraints to a converted value."""
    if value is None:
        return
    for key, items, hint in (
        ("choices", [value], "choose one of"),
        ("each_choices", value, "items must be among"),
    ):
        allowed = choices(f, key)
        if allowed is None:
            continue
        for item in items:
            if item not in allowed:
                listed = ", ".join(repr(c) for c in allowed)
                raise ConfigError(f"{path}: {item!r} is not allowed; {hint} {listed}")
    for item in value if isinstance(value, list) else [value]:
        if isinstance(item, int | float) and not isinstance(item, bool):
            for key, fails, words in _BOUNDS:
                if key in f.metadata and fails(item, f.metadata[key]):
                    raise ConfigError(f"{path}: {item!r} is {words} {f.metadata[key]}")


# A config class's own checks of one value, for its ``__post_init__`` (tjx-nn's model, MoE, LoRA
# and preference configs): each a ValueError naming ``Class.field``, as a Python caller sees it
# (a schema reading the same field words it as the key path, `check_field`).
def choice(cls: str, field: str, value: Any, allowed: tuple[str, ...]) -> None:
    """``cls.field`` is one of ``allowed``, else a ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{cls}.{field} must be one of {allowed}; got {value!r}")


def positive(cls: str, field: str, value: Any, *, allow_zero: bool = False) -> None:
    """``cls.field`` is a positive int (``allow_zero``: non-negative), else a ValueError."""
    ok = isinstance(value, int) and not isinstance(value, bool)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ValueError(f"{cls}.{field} must be {kind} int; got {value!r}")


def rate(cls: str, field: str, value: Any) -> None:
    """``cls.field`` is a rate in [0, 1), else a ValueError."""
    if not isinstance(value, int | float) or not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{cls}.{field} must be a float in [0, 1); got {value!r}")


def positive_float(cls: str, field: str, value: Any) -> float | None:
    """None, or ``cls.field``'s ``value`` as a positive finite float, else a ValueError."""
    if value is None:
        return None
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or not 0.0 < float(value) < math.inf:
        raise ValueError(f"{cls}.{field} must be a positive number or None; got {value!r}")
    return float(value)


def meta(cls: type, name: str) -> dataclasses.Field[Any]:
    """Field ``name`` of ``cls`` (its default) with the metadata its owner gave it: a subclass
    that only changes a default (``LlamaConfig.norm``) keeps the base class's ``help``."""
    own: dataclasses.Field[Any] = cls.__dataclass_fields__[name]  # type: ignore[attr-defined]
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and f.metadata:
            if own.default_factory is not dataclasses.MISSING:
                merged = dataclasses.field(default_factory=own.default_factory, metadata=f.metadata)
            else:
                merged = dataclasses.field(default=own.default, metadata=f.metadata)
            merged.name = name
            return merged  # type: ignore[no-any-return]
    return own


def nested_class(tp: Any) -> type | None:
    """The dataclass a field of type ``tp`` holds (``ScheduleConfig | None`` → ScheduleConfig)."""
    for arg in (tp, *typing.get_args(tp)):
        if dataclasses.is_dataclass(arg):
            return arg  # type: ignore[return-value]
    return None


def optional(tp: Any) -> bool:
    """Whether type ``tp`` takes null."""
    origin = typing.get_origin(tp)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)
