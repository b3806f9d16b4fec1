"""A run's config as a tree of dataclass sections: every key walked one way (`Schema.keys`,
`Schema.lookup`, `Schema.leaves`), read from plain data (`Schema.values`, then `Schema.build`) and
written back to plain data (`Schema.write`: what ``config.yaml`` saves).

A section's keys are its class's fields, declared with `setting` and the metadata their owner
gave them (``help``, ``choices``, ``each_choices``, bounds, ``resumable``). So a field a package
adds is read, written, set and listed with no change to the app. An app says what is its own
(`Schema`): keys it adds to a section (``model.kind``), keys it fills itself, and which class a
field naming a package ``section`` holds (the model's is chosen by its kind). Every problem is
one `ConfigError` naming the key path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from tjx.core.config.values import (
    ConfigError,
    check_field,
    convert,
    meta,
    nested_class,
    optional,
)

#: A key of a section: its type and its field (with the owner's metadata).
Entry = tuple[Any, dataclasses.Field[Any]]


# A section's type hints and merged fields depend on its class alone, but `Schema.keys` runs for
# every key read (`Schema._entry`): uncached, `typing.get_type_hints` (which compiles each
# annotation string anew) was three quarters of a `read_config`, 0.13 s each on the 2-core CI
# machine, paid by every app start and every config a test reads.
@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _meta(cls: type, name: str) -> dataclasses.Field[Any]:
    return meta(cls, name)


@dataclass(frozen=True)
class Schema:
    """How an app's config tree is walked.

    Attributes
    ----------
    root : type
        The top section's dataclass.
    section_class : callable
        ``(section, kind) -> class`` of a field whose metadata names a package ``section``.
    package_sections : frozenset[str]
        The top-level sections that are packages' classes: there a ``null`` on a field that takes
        none is the class's own default, and is left out.
    own_keys : mapping
        Keys the app adds before a section's fields, by section path: name → (type, field).
    filled : mapping
        Keys the app fills itself → the key to set instead.
    kind_of : callable
        The kind of plain config data (the trainer's ``model.kind``), for `section_class`.
    """

    root: type
    section_class: Callable[[str, Any], type]
    package_sections: frozenset[str] = frozenset()
    own_keys: Mapping[str, Mapping[str, Entry]] = field(default_factory=dict)
    filled: Mapping[str, str] = field(default_factory=dict)
    kind_of: Callable[[Any], Any] = lambda data: None

    def keys(self, cls: type, path: str, kind: Any) -> dict[str, Entry]:
        """Every key of the section at ``path`` (``""``: the top) of class ``cls``: (type, field).

        A field whose metadata names a package ``section`` is that package's class; one marked
        ``key=False`` is no key (bookkeeping); a dtype field (``Any``) is written by name.
        """
        own = self.own_keys.get(path, {})
        hints = _type_hints(cls)
        out = dict(own)
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            key = f"{path}.{f.name}" if path else f.name
            if f.name in own or key in self.filled or f.metadata.get("key") is False:
                continue
            section = f.metadata.get("section")
            tp = self.section_class(section, kind) if section else hints[f.name]
            out[f.name] = (str if tp is Any else tp, _meta(cls, f.name))
        return out

    def _entry(
        self, cls: type, path: str, key: str, kind: Any, known: dict[str, Entry] | None = None
    ) -> Entry:
        """(type, field) of ``key`` in the section at ``path``; a key the app fills itself or an
        unknown one is a `ConfigError` saying what to set instead. ``known``: a caller's dict
        that keeps the section's `keys` between calls (filled at the first)."""
        here = f"{path}.{key}" if path else str(key)
        if here in self.filled:
            raise ConfigError(f"{here}: the trainer sets it from {self.filled[here]}; set that")
        if known is None:
            known = self.keys(cls, path, kind)
        elif not known:
            known.update(self.keys(cls, path, kind))
        if key not in known:
            raise ConfigError(f"{here}: unknown key; allowed keys here: {', '.join(known)}")
        return known[key]

    def values(self, cls: type, data: Any, path: str, kind: Any) -> dict[str, Any]:
        """The keys ``data`` sets in the section of class ``cls`` at ``path`` (``""``: the top),
        each read as its type and checked, in ``data``'s order (nested sections as mappings); a
        package section's ``null`` on a field that takes none (``model.position.kind: null``) is the
        class's own default, left out."""
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of keys, got {data!r}")
        package = path.split(".")[0] in self.package_sections
        out: dict[str, Any] = {}
        known: dict[str, Entry] = {}  # the section's keys, listed once (not once per key)
        for key in data:
            tp, f = self._entry(cls, path, key, kind, known)
            inner, key_path = nested_class(tp), f"{path}.{key}" if path else str(key)
            if data[key] is None and package and (inner is not None or not optional(tp)):
                continue
            if inner is not None:
                out[key] = self.values(inner, data[key], key_path, kind)
                continue
            out[key] = convert(tp, data[key], key_path)
            check_field(f, out[key], key_path)
        return out

    def lookup(self, key: str, kind: Any, cls: type | None = None, path: str = "") -> list[Entry]:
        """The fields from the section at ``path`` of class ``cls`` (the root) down to dotted
        ``key``. Unknown keys, a section given a value and a value given keys are `ConfigError`s
        naming what is allowed."""
        here_cls: Any = self.root if cls is None else cls
        chain: list[Entry] = []
        parts = key.split(".")
        for i, part in enumerate(parts, 1):
            here = f"{path}.{part}" if path else part
            chain.append(self._entry(here_cls, path, part, kind))
            inner = nested_class(chain[-1][0])
            if inner is not None and i == len(parts):
                sub = ", ".join(self.keys(inner, here, kind))
                raise ConfigError(f"{here}: is a section; set one of its keys: {sub}")
            if inner is None and i < len(parts):
                raise ConfigError(f"{here}: is a value, not a section (in {key!r})")
            here_cls, path = inner, here
        return chain

    def leaves(self, kind: Any, cls: type | None = None, path: str = "") -> Iterator[Any]:
        """(dotted key, type, field) of every value key below the section at ``path``, in order."""
        for name, (tp, f) in self.keys(self.root if cls is None else cls, path, kind).items():
            key, inner = f"{path}.{name}" if path else name, nested_class(tp)
            if inner is None:
                yield key, tp, f
            else:
                yield from self.leaves(kind, inner, key)

    def build(self, cls: type, checked: dict[str, Any], path: str, words: Mapping[str, str]) -> Any:
        """``cls`` from `values`' output (nested sections built first; the app's own keys taken
        out by the caller); a ``ValueError`` of the class is a `ConfigError` in ``words``."""
        known = self.keys(cls, path, None)
        kwargs = dict(checked)
        for key, value in checked.items():
            inner = nested_class(known[key][0]) if key in known else None
            if inner is not None and isinstance(value, dict):
                kwargs[key] = self.build(inner, value, f"{path}.{key}", words)
        with reworded(words):
            return cls(**kwargs)

    def words(self, cls: type, path: str) -> dict[str, str]:
        """How the messages of section class ``cls`` at ``path`` name its fields, as the
        config's keys (`reworded`'s ``words``): ``GPT2Config.d_model`` (or a base class's) →
        ``model.d_model``, ``MeshConfig: `` → ``mesh: ``, a nested section's class → its path
        (``ScheduleConfig.`` → ``optimizer.schedule.``), a key the app fills → the key setting
        it (``ScheduleConfig.total_steps`` → ``train.steps``)."""
        out = {f"{c.__name__}.": f"{path}." for c in cls.__mro__ if dataclasses.is_dataclass(c)}
        out[f"{cls.__name__}: "] = f"{path}: "
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f"{path}.{f.name}" in self.filled:
                out[f"{cls.__name__}.{f.name}"] = self.filled[f"{path}.{f.name}"]
        for name, (tp, _) in self.keys(cls, path, None).items():
            inner = nested_class(tp)
            if inner is not None:
                for theirs, ours in self.words(inner, f"{path}.{name}").items():
                    out.setdefault(theirs, ours)  # the outer class's own names come first
        return out

    def write(self, obj: Any, path: str, own: Mapping[str, Any]) -> dict[str, Any]:
        """``obj`` as plain data (YAML-safe), every key (``own``: the values of the app's keys).

        A field whose null stands for a value its class derives from the others (``num_kv_heads``:
        ``num_heads``) is written null while it holds that value, so the data read back derives
        it again after another setting changes.
        """
        return self._write(obj, path, own, obj, ())

    def _write(
        self, obj: Any, path: str, own: Mapping[str, Any], root: Any, at: tuple[str, ...]
    ) -> Any:
        out: dict[str, Any] = {}
        for name, (tp, f) in self.keys(type(obj), path, None).items():
            value = own[name] if name in self.own_keys.get(path, {}) else getattr(obj, name)
            unset = _unset_section(tp) if value is None else None
            if dataclasses.is_dataclass(value) or unset is not None:
                section = value if unset is None else unset
                out[name] = self._write(section, f"{path}.{name}", own, root, (*at, name))
            elif value is not None and f.default is None and _derived(root, (*at, name), value):
                out[name] = None
            elif isinstance(value, tuple):
                out[name] = list(value)
            elif value is None or isinstance(value, bool | int | float | str | list | dict):
                out[name] = value
            else:
                out[name] = _dtype_name(value)
        return out

    def field_at(self, key: str, kind: Any) -> tuple[dataclasses.Field[Any], Any]:
        """The field at dotted ``key`` and the type ``--set`` reads; in a package's section
        ``null`` is the class's own default, as in a file, so every key there takes it."""
        tp, f = self.lookup(key, kind)[-1]
        package = key.split(".")[0] in self.package_sections
        return f, (tp | None if package and not optional(tp) else tp)

    def default(self, key: str, kind: Any) -> Any:
        """The value a key left out holds, as plain data (a tuple as a list, a dtype by name)."""
        f = self.lookup(key, kind)[-1][1]
        value = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc,operator]
        if isinstance(value, tuple):
            return list(value)
        if not isinstance(value, str | int | float | list | dict | None):
            return _dtype_name(value)
        return value


def kind_at(section: str, default: Any) -> Callable[[Any], Any]:
    """A `Schema` ``kind_of``: the ``kind`` key of plain data's ``section`` (``default`` where the
    data, or the section, names none).

    Examples
    --------
    >>> kind_at("model", "gpt2")({"model": {"kind": "llama"}})
    'llama'
    """

    def kind_of(data: Any) -> Any:
        part = data.get(section) if isinstance(data, dict) else None
        return part.get("kind", default) if isinstance(part, dict) else default

    return kind_of


def _dtype_name(value: Any) -> str:
    import numpy as np  # a dtype (jnp.float32), by its name: "float32"; numpy only when asked

    return str(np.dtype(value).name)


def _unset_section(tp: Any) -> Any:
    """The all-null instance of the section class of a field of type ``tp`` (null keys: "none"),
    or None where the class has a key that is not null by default: a null section is written as
    its keys, so listings and ``config.yaml`` hold every key."""
    inner = nested_class(tp)
    if inner is None or any(f.default is not None for f in dataclasses.fields(inner)):
        return None
    return inner()


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


@contextlib.contextmanager
def reworded(words: Mapping[str, str]) -> Iterator[None]:
    """A class's ``ValueError`` inside, as a `ConfigError` in the config's words: each key of
    ``words`` (``"GPT2Config."``) becomes its value (``"model."``), ``None`` the config's
    ``null``; a message naming no key is prefixed with the first section named."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        if not words:
            raise
        # The longest first: ``ScheduleConfig.total_steps`` before ``ScheduleConfig.``.
        pattern = "|".join(re.escape(theirs) for theirs in sorted(words, key=len, reverse=True))
        text = re.sub(pattern, lambda m: words[m.group()], str(err)).replace("to None", "to null")
        named = tuple(dict.fromkeys(v.split(".")[0].split("=")[0] for v in words.values()))
        raise ConfigError(text if text.startswith(named) else f"{named[0]}: {text}") from None
