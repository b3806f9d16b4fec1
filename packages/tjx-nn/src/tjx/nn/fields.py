"""The checks a tjx-nn config class's ``__post_init__`` runs, each a ValueError naming
``Class.field``. Fields are declared with `tjx.core.fields.setting` (``tjx.nn.fields.setting`` is
its old path: it still works, with a DeprecationWarning, until tjx-nn 0.21)."""

from __future__ import annotations

from typing import Any

from tjx.core.deprecation import moved

__getattr__ = moved(__name__, {"setting": "tjx.core.fields"})


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
