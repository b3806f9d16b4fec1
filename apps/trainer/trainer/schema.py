"""The config's schema: every key of every section, walked one way (`keys`, `lookup`, `leaves`),
and one value read from YAML or ``--set`` text as its field's type (`convert`) and checked against
its metadata (`check_field`). Every problem is one `ConfigError` naming the key path and what is
allowed (the CLI turns it into exit code 2).

A section's keys are its class's fields, the trainer's own sections (`trainer.sections`) and the
packages' classes alike (``model`` is tjx.nn's class of ``model.kind``, ``optimizer`` tjx.optim's
`OptimizerConfig`, ``mesh`` tjx.parallel's `MeshConfig`), with the metadata their owner gave them
(`setting`: ``help``, ``choices`` — a list, or ``"module:NAME"`` for one a package owns —,
``each_choices``, bounds ``min``/``max``/``gt``/``lt``, ``resumable``). So a field a package
adds is read, written, set and listed with no change here. The packages load JAX: their classes
are imported when a section is first walked, never when the command line is parsed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import operator
import types
import typing
from collections.abc import Iterator
from importlib import import_module
from typing import Any

import yaml  # type: ignore[import-untyped]


class ConfigError(ValueError):
    """A config problem; the message names the key path and what is allowed."""

    exit_code = 2


def setting(default: Any, *, factory: bool = False, **meta: Any) -> Any:
    """A config field: its default (with ``factory``, a callable that makes it: a list, a nested
    config) and the metadata apps read to list, document and check it: ``help`` (one line),
    ``choices`` (the allowed values), ``resumable`` (a resumed run may change it) and bounds
    (``min``, ``max``, ``gt``, ``lt``). The same helper in every package (a test keeps them so)."""
    if factory:
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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


#: Each package section: the class it is (``module:NAME``; the model's is chosen by ``kind``).
PACKAGE_SECTIONS = {
    "model": "tjx.nn:MODEL_KINDS",
    "optimizer": "tjx.optim:OptimizerConfig",
    "mesh": "tjx.parallel:MeshConfig",
    "lora": "tjx.nn:LoraConfig",
    "preference": "tjx.nn:PreferenceConfig",
}
#: The model kinds the trainer trains (``--help`` lists them without loading JAX).
KINDS = ("gpt2", "llama", "bert", "vit", "encdec")
#: The trainer's own keys of a section, before the class's fields.
OWN_KEYS: dict[str, dict[str, tuple[Any, dataclasses.Field[Any]]]] = {
    "model": {
        "kind": (str, setting("gpt2", choices=KINDS, help="model family (tjx.nn.MODEL_KINDS)")),
        # The one trainer rule on a model field: its vocabulary is the tokenizer's by default.
        "vocab_size": (
            int | None,
            setting(None, min=2, help="tokens in the vocabulary; null: the tokenizer's"),
        ),
    },
    "lora": {
        "enabled": (
            bool,
            setting(False, help="train low-rank adapters only; the base model stays frozen"),
        ),
    },
}
#: Keys a section's class has that the trainer fills itself (set them elsewhere).
FILLED = {"optimizer.schedule.total_steps": "train.steps"}


def section_class(section: str, kind: Any = "gpt2") -> type:
    """The class of package section ``section`` (``"model"``: the one of ``kind``)."""
    module, name = PACKAGE_SECTIONS[section].split(":")
    found = getattr(import_module(module), name)
    if section != "model":
        return found  # type: ignore[no-any-return]
    if not isinstance(kind, str) or kind not in found:
        allowed = ", ".join(repr(k) for k in found)
        raise ConfigError(f"model.kind: {kind!r} is not allowed; choose one of {allowed}")
    return found[kind]  # type: ignore[no-any-return]


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


def keys(cls: type, path: str, kind: Any = "gpt2") -> dict[str, tuple[Any, dataclasses.Field[Any]]]:
    """Every key of the section at ``path`` (``""``: the top) of class ``cls``: (type, field).

    A field whose metadata names a package ``section`` is that package's class; one marked
    ``key=False`` is no key (a `Config`'s bookkeeping); a dtype field (``Any``) is written by name.
    """
    own = OWN_KEYS.get(path, {})
    hints = typing.get_type_hints(cls)
    out = dict(own)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{path}.{f.name}" if path else f.name
        if f.name in own or key in FILLED or f.metadata.get("key") is False:
            continue
        section = f.metadata.get("section")
        tp = section_class(section, kind) if section else hints[f.name]
        out[f.name] = (str if tp is Any else tp, meta(cls, f.name))
    return out


def values(cls: type, data: Any, path: str, kind: Any = "gpt2") -> dict[str, Any]:
    """The keys ``data`` sets in the section of class ``cls`` at ``path``, each read as its type
    and checked (nested sections as mappings). In a package's section, a ``null`` on a field that
    takes none (``model.position: null``) is the class's own default, and is left out."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {data!r}")
    package = path.split(".")[0] in PACKAGE_SECTIONS
    out: dict[str, Any] = {}
    for key in data:
        tp, f = _entry(cls, path, key, kind)
        inner, key_path = nested_class(tp), f"{path}.{key}"
        if data[key] is None and package and (inner is not None or not optional(tp)):
            continue
        if inner is not None:
            out[key] = values(inner, data[key], key_path, kind)
            continue
        out[key] = convert(tp, data[key], key_path)
        check_field(f, out[key], key_path)
    return out


def _entry(cls: type, path: str, key: str, kind: Any) -> tuple[Any, dataclasses.Field[Any]]:
    """(type, field) of ``key`` in the section at ``path``; a key the trainer fills itself or an
    unknown one is a `ConfigError` saying what to set instead."""
    here = f"{path}.{key}" if path else str(key)
    if here in FILLED:
        raise ConfigError(f"{here}: the trainer sets it from {FILLED[here]}; set that")
    known = keys(cls, path, kind)
    if key not in known:
        raise ConfigError(f"{here}: unknown key; allowed keys here: {', '.join(known)}")
    return known[key]


def lookup(
    cls: type, key: str, kind: Any = "gpt2", path: str = ""
) -> list[tuple[Any, dataclasses.Field[Any]]]:
    """The fields from the section at ``path`` of class ``cls`` down to dotted ``key``: each
    one's type and field. Unknown keys, a section given a value and a value given keys are
    `ConfigError`s naming what is allowed."""
    chain: list[tuple[Any, dataclasses.Field[Any]]] = []
    parts = key.split(".")
    for i, part in enumerate(parts, 1):
        here = f"{path}.{part}" if path else part
        chain.append(_entry(cls, path, part, kind))
        inner = nested_class(chain[-1][0])
        if inner is not None and i == len(parts):
            sub = ", ".join(keys(inner, here, kind))
            raise ConfigError(f"{here}: is a section; set one of its keys: {sub}")
        if inner is None and i < len(parts):
            raise ConfigError(f"{here}: is a value, not a section (in {key!r})")
        cls, path = inner, here  # type: ignore[assignment]
    return chain


def leaves(cls: type, path: str = "", kind: Any = "gpt2") -> Iterator[tuple[str, Any, Any]]:
    """(dotted key, type, field) of every value key below the section at ``path``, in order."""
    for name, (tp, f) in keys(cls, path, kind).items():
        key, inner = f"{path}.{name}" if path else name, nested_class(tp)
        if inner is None:
            yield key, tp, f
        else:
            yield from leaves(inner, key, kind)
