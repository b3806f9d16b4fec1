"""How a tjx-nn config field is declared (`setting`: its default and the metadata apps read) and
the checks its class's ``__post_init__`` runs, each a ValueError naming ``Class.field``."""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, *, factory: bool = False, **meta: Any) -> Any:
    """A config field: its default (with ``factory``, a callable that makes it: a list, a nested
    config) and the metadata apps read to list, document and check it: ``help`` (one line),
    ``choices`` (the allowed values), ``resumable`` (a resumed run may change it) and bounds
    (``min``, ``max``, ``gt``, ``lt``). The same helper in every package (a test keeps them so)."""
    if factory:
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


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
