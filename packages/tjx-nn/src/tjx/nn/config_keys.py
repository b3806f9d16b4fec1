"""A model config's settings named by key: a setting's value and class default by a dotted key
(`setting_value`, `setting_default`: ``"moe.router"`` is that field of the ``moe`` section) and
the family's value of each section setting left None (`fill_part_defaults`, from the config
class's ``part_defaults``).

It imports no tjx.nn module, so that the config classes (:mod:`tjx.nn.configs`), their checks
(:mod:`tjx.nn.cross_checks`) and the modules below them may all read a setting by its key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


def fill_part_defaults(defaults: Mapping[str, Any], parts: Mapping[str, Any]) -> dict[str, Any]:
    """The sections of ``parts`` (name → section) that have a setting left None which the
    family's ``defaults`` (its config class's ``part_defaults``: ``"section.name"`` → value)
    set, each with those settings filled; the config sets them on itself."""
    filled: dict[str, Any] = {}
    for key, value in defaults.items():
        section, name = key.split(".")
        part = filled.get(section, parts[section])
        if getattr(part, name) is None:
            filled[section] = dataclasses.replace(part, **{name: value})
    return filled


def setting_default(config: Any, key: str) -> Any:
    """The class default of setting ``key`` of ``config`` (a dotted one: its section's)."""
    section, _, name = key.rpartition(".")
    owner = setting_value(config, section) if section else config
    return field_defaults(owner)[name]


def field_defaults(config: Any) -> dict[str, Any]:
    """Each field of ``config``'s class (or of the class ``config``) → its default (a
    section's: its shared default instance)."""
    return {
        f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
        for f in dataclasses.fields(config)
    }


def setting_value(config: Any, key: str) -> Any:
    """The value of setting ``key`` of ``config``: a field, or a dotted one of a component
    section (``"moe.router"``)."""
    value = config
    for part in key.split("."):
        value = getattr(value, part)
    return value
