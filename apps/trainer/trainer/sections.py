"""Every key of a config, walked one way for all its sections: the trainer's own dataclasses and
the packages' classes (``model`` is tjx.nn's class of ``model.kind``, ``optimizer`` tjx.optim's
`OptimizerConfig`, ``mesh`` tjx.parallel's `MeshConfig`).

A section's keys are its class's fields, with the types and metadata (``help``, ``choices``,
``resumable``, bounds) its owner gave them, so a field a package adds is read (`values`, `build`),
written (`write`), found by ``--set`` (`lookup`) and listed (`leaves`) with no change here. The
packages load JAX: their classes are imported when a section is first walked, never when the
command line is parsed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import types
import typing
from collections.abc import Iterator
from importlib import import_module
from typing import Any

from trainer.schema import ConfigError, check_field, convert, setting

#: Each package section: the class it is (``module:NAME``; the model's is chosen by ``kind``).
PACKAGE_SECTIONS = {
    "model": "tjx.nn:MODEL_KINDS",
    "optimizer": "tjx.optim:OptimizerConfig",
    "mesh": "tjx.parallel:MeshConfig",
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
}
#: Keys a section's class has that the trainer fills itself (set them elsewhere).
FILLED = {"optimizer.schedule.total_steps": "train.steps"}
#: How a package's messages name its fields (``GPT2Config.d_model``), as the config's keys.
_WORDS = {
    "optimizer": {
        "OptimizerConfig.": "optimizer.",
        "ScheduleConfig.total_steps": "train.steps",
        "ScheduleConfig.": "optimizer.schedule.",
        "param_dtype=": "model.precision.param_dtype=",
        "compute_dtype=": "model.precision.compute_dtype=",
    },
    "mesh": {"MeshConfig.": "mesh.", "MeshConfig: ": "mesh: "},
}


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


def build(cls: type, checked: dict[str, Any], path: str) -> Any:
    """``cls`` from `values`' output (nested sections built first; the trainer's own keys taken
    out by the caller); a package's ``ValueError`` is a `ConfigError` in the config's keys."""
    known = keys(cls, path)
    kwargs = dict(checked)
    for key, value in checked.items():
        inner = nested_class(known[key][0]) if key in known else None
        if inner is not None and isinstance(value, dict):
            kwargs[key] = build(inner, value, f"{path}.{key}")
    with reworded(path.split(".")[0]):
        return cls(**kwargs)


def _words(section: str) -> dict[str, str]:
    if section != "model":
        return _WORDS.get(section, {})
    from tjx import nn

    words = {f"{c.__name__}.": "model." for c in (*nn.MODEL_KINDS.values(), nn.TransformerConfig)}
    return {**words, "Precision.": "model.precision."}


@contextlib.contextmanager
def reworded(section: str) -> Iterator[None]:
    """A package's ``ValueError`` inside, as a `ConfigError` in the config's words: its class
    names become the section's keys (``GPT2Config.d_model`` → ``model.d_model``), its ``None``
    the config's ``null``; a message naming no key names the section."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        words = _words(section)
        if not words:
            raise
        pattern = "|".join(re.escape(theirs) for theirs in words)
        text = re.sub(pattern, lambda m: words[m.group()], str(err)).replace("to None", "to null")
        named = tuple(dict.fromkeys(v.split(".")[0].split("=")[0] for v in words.values()))
        raise ConfigError(text if text.startswith(named) else f"{named[0]}: {text}") from None


def write(obj: Any, path: str, own: dict[str, Any] | None = None) -> dict[str, Any]:
    """``obj`` as plain data (YAML-safe), every key (``own``: the values of the trainer's keys).

    A field whose null stands for a value its class derives from the others (``num_kv_heads``:
    ``num_heads``; ``schedule.peak_lr``: the optimizer's rate) is written null while it holds
    that value, so the data read back derives it again after another setting changes.
    """
    return _write(obj, path, own or {}, obj, ())


def _write(obj: Any, path: str, own: dict[str, Any], root: Any, at: tuple[str, ...]) -> Any:
    out: dict[str, Any] = {}
    for name, (_, f) in keys(type(obj), path).items():
        value = own[name] if name in OWN_KEYS.get(path, {}) else getattr(obj, name)
        if dataclasses.is_dataclass(value):
            out[name] = _write(value, f"{path}.{name}", own, root, (*at, name))
        elif value is not None and f.default is None and _derived(root, (*at, name), value):
            out[name] = None
        elif isinstance(value, tuple):
            out[name] = list(value)
        elif value is None or isinstance(value, bool | int | float | str | list | dict):
            out[name] = value
        else:
            import numpy as np  # a dtype (jnp.float32), by its name: "float32"

            out[name] = np.dtype(value).name
    return out


def _derived(root: Any, at: tuple[str, ...], value: Any) -> bool:
    """Whether ``root`` with the field at ``at`` set to None derives ``value`` there again."""

    def replaced(obj: Any, at: tuple[str, ...]) -> Any:
        inner = None if len(at) == 1 else replaced(getattr(obj, at[0]), at[1:])
        return dataclasses.replace(obj, **{at[0]: inner})

    try:
        again = replaced(root, at)
    except (ValueError, TypeError):
        return False
    return bool(functools.reduce(getattr, at, again) == value)


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
