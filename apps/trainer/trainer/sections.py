"""The packages' configs as the trainer's sections: ``model`` is the tjx.nn config class of
``model.kind``, ``optimizer`` tjx.optim's `OptimizerConfig` (its ``schedule`` a `ScheduleConfig`),
``mesh`` tjx.parallel's `MeshConfig`.

A section is read as plain data checked against its class's own fields: their types, and the
``choices``/``help``/``resumable`` metadata the package gives each field. The trainer keeps no
copy of any field, so a field a package adds is settable (``--set``), listed
(``--show-config``) and documented at once. The classes themselves are built from the data once
per run (`trainer.resolved.resolve`), by their own rules. The packages load JAX, so they are
imported here only when a section is read, never when the command line is parsed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from importlib import import_module
from typing import Any

from trainer.schema import ConfigError, check_field, convert, hints, spec

#: Each section: the class it is (``module:NAME``; the model's is chosen by ``kind``).
PACKAGE_SECTIONS = {
    "model": "tjx.nn:MODEL_KINDS",
    "optimizer": "tjx.optim:OptimizerConfig",
    "mesh": "tjx.parallel:MeshConfig",
}
#: The model kinds the trainer trains (``--help`` lists them without loading JAX); each one's
#: class is tjx.nn.MODEL_KINDS', its objective tjx.nn.objective_of's.
KINDS = ("gpt2", "llama", "bert", "vit", "encdec")
#: The trainer's own keys of a section, beside the class's fields.
OWN_KEYS: dict[str, dict[str, tuple[Any, dataclasses.Field[Any]]]] = {
    "model": {
        "kind": (str, spec("gpt2", choices=KINDS, help="model family (tjx.nn.MODEL_KINDS)")),
        # The one trainer rule on a model field: its vocabulary is the tokenizer's by default.
        "vocab_size": (
            int | None,
            spec(None, min=2, help="tokens in the vocabulary; null: the tokenizer's"),
        ),
    },
}
#: Keys a section's class has that the trainer fills itself (set them elsewhere).
FILLED = {"optimizer.schedule.total_steps": "train.steps"}


def section_class(section: str, data: Any = None) -> type:
    """The class of ``section`` (``"model"``: the one of ``data``'s ``kind``)."""
    module, name = PACKAGE_SECTIONS[section].split(":")
    found = getattr(import_module(module), name)
    if section != "model":
        return found  # type: ignore[no-any-return]
    kind = data.get("kind", "gpt2") if isinstance(data, dict) else "gpt2"
    if kind not in found:
        allowed = ", ".join(repr(k) for k in found)
        raise ConfigError(f"model.kind: {kind!r} is not allowed; choose one of {allowed}")
    return found[kind]  # type: ignore[no-any-return]


def meta(cls: type, name: str) -> dataclasses.Field[Any]:
    """Field ``name`` of ``cls`` (its default) with the metadata its package gave it: a subclass
    that only changes a default (``LlamaConfig.norm``) keeps the base class's ``help`` and
    ``choices``."""
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


def _optional(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin in (typing.Union, types.UnionType) and type(None) in typing.get_args(tp)


def fields_of(cls: type, path: str) -> dict[str, tuple[Any, dataclasses.Field[Any]]]:
    """Every key of the section at ``path`` of class ``cls``: (its type, its field)."""
    own = OWN_KEYS.get(path, {})
    types_ = hints(cls)
    out = dict(own)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{path}.{f.name}"
        if f.name not in own and key not in FILLED:
            tp = types_[f.name]  # a dtype field (Any) is written as its name
            out[f.name] = (str if tp is Any else tp, meta(cls, f.name))
    return out


def _entry(cls: type, path: str, key: str) -> tuple[Any, dataclasses.Field[Any]]:
    """(type, field) of ``key`` in the section at ``path`` of class ``cls``; a key the trainer
    fills itself or an unknown one is a `ConfigError` saying what to set instead."""
    key_path = f"{path}.{key}"
    if key_path in FILLED:
        raise ConfigError(f"{key_path}: the trainer sets it from {FILLED[key_path]}; set that")
    known = fields_of(cls, path)
    if key not in known:
        raise ConfigError(f"{key_path}: unknown key; allowed keys here: {', '.join(known)}")
    return known[key]


def read(cls: type, data: Any, path: str) -> dict[str, Any]:
    """The keys ``data`` sets in the section of class ``cls`` at ``path``, checked against the
    fields' types and metadata (plain values; nested sections as mappings).

    A ``null`` on a field that takes none (``model.position: null``) means the class's own
    default, and is left out: the kind's default then applies (LLaMA's rope, GPT-2's learned).
    """
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys, got {data!r}")
    out: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}"
        tp, f = _entry(cls, path, key)
        inner = nested_class(tp)
        if value is None and (inner is not None or not _optional(tp)):
            continue  # the class's own default
        if inner is not None:
            out[key] = read(inner, value, key_path)
            continue
        out[key] = convert(tp, value, key_path)
        check_field(f, out[key], key_path)
    return out


def field_at(cls: type, parts: list[str], path: str) -> tuple[dataclasses.Field[Any], Any]:
    """The field and type of dotted ``parts`` below the section of class ``cls`` at ``path``
    (for ``--set``); errors name the allowed keys."""
    head, rest = parts[0], parts[1:]
    key = f"{path}.{head}"
    tp, f = _entry(cls, path, head)
    inner = nested_class(tp)
    if inner is not None:
        if not rest:
            raise ConfigError(
                f"{key}: is a section; set one of its keys: {', '.join(fields_of(inner, key))}"
            )
        return field_at(inner, rest, key)
    if rest:
        raise ConfigError(f"{key}: is a value, not a section")
    # ``--set model.position=null``: the class's own default, as in a file (`read`)
    return f, (tp if _optional(tp) else tp | None)


def _plain(value: Any) -> Any:
    """A class default as YAML writes it (a dtype by its name, a tuple as a list)."""
    if isinstance(value, tuple):
        return list(value)
    if value is not None and not isinstance(value, bool | int | float | str | list | dict):
        import numpy as np  # a dtype default (jnp.float32), by its name: "float32"

        return np.dtype(value).name
    return value


def expand(cls: type, data: dict[str, Any], path: str) -> dict[str, Any]:
    """Every key of the section: ``data``'s value, else the class's default (what ``config.yaml``
    saves and ``--show-config`` lists, so a run records the values it ran with)."""
    out: dict[str, Any] = {}
    for key, (tp, f) in fields_of(cls, path).items():
        inner = nested_class(tp)
        if inner is not None:
            out[key] = expand(inner, data.get(key) or {}, f"{path}.{key}")
        elif key in data:
            out[key] = data[key]
        elif f.default is not dataclasses.MISSING:
            out[key] = _plain(f.default)
        else:
            out[key] = _plain(f.default_factory())  # type: ignore[misc]
    return out


def resumable(key: str, data: dict[str, Any]) -> bool:
    """Whether a ``--resume`` may change the section key ``key`` (``model.remat``): its field's
    ``resumable`` metadata, or a section's that holds it (``optimizer.schedule``)."""
    section, *parts = key.split(".")
    cls = section_class(section, data.get(section))
    path = section
    for part in parts:
        known = fields_of(cls, path)
        if part not in known:
            return False
        tp, f = known[part]
        if f.metadata.get("resumable"):
            return True
        inner = nested_class(tp)
        if inner is None:
            return False
        cls, path = inner, f"{path}.{part}"
    return False


def package(section: str, help_text: str) -> Any:
    """The `Config` field of package section ``section``: read by `read`, ``{}`` by default."""

    def reader(value: Any, path: str) -> dict[str, Any]:
        return read(section_class(section, value), value, path)

    return dataclasses.field(
        default_factory=dict, metadata={"read": reader, "package": section, "help": help_text}
    )


def expanded(section: str, data: dict[str, Any]) -> dict[str, Any]:
    """`expand` of the section ``section`` holding ``data``."""
    return expand(section_class(section, data), data, section)
