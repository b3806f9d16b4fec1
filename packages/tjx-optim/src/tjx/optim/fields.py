"""The checks the tjx-optim configs' ``__post_init__`` run, each a ValueError naming
``Class.field``. Fields are declared with `tjx.core.fields.setting`."""

from __future__ import annotations

import dataclasses
import math
import numbers
import re
from collections.abc import Mapping
from typing import Any

from numpy import bool_ as np_bool


def choice(field: str, value: object, allowed: tuple[Any, ...]) -> None:
    """``value`` is one of ``allowed``, else a ValueError naming ``field`` and them."""
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed; allowed values: {list(allowed)}")


def number(
    field: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
) -> None:
    """Check that ``value`` is a finite number inside the stated interval."""
    kind = "an integer" if integer else "a number"
    # numbers.Integral / numbers.Real also admit numpy scalars (e.g. from np.arange sweeps).
    ok_type = isinstance(value, numbers.Integral if integer else numbers.Real)
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    interval = f"{left}{lo}, {hi}{right}"
    if isinstance(value, bool | np_bool) or not ok_type or not isinstance(value, numbers.Real):
        raise ValueError(f"{field}={value!r} must be {kind} in {interval}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{field}={value!r} must be {kind} in {interval}")
    bad_low = low is not None and (v <= low if low_open else v < low)
    bad_high = high is not None and (v >= high if high_open else v > high)
    if bad_low or bad_high:
        raise ValueError(f"{field}={value!r} is out of range; allowed values: {interval}")


def regex(field: str, value: str | None) -> None:
    """``value`` is None or a valid regular expression, else a ValueError naming ``field``."""
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"{field}={value!r} must be a regular expression string or None")
    try:
        re.compile(value)
    except re.error as err:
        raise ValueError(f"{field}={value!r} is not a valid regular expression: {err}") from err


def known_keys(cls: type, d: Mapping[str, Any]) -> dict[str, Any]:
    """``d`` as keyword arguments of dataclass ``cls``; a ValueError naming any key it lacks."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(d) - set(names))
    if unknown:
        raise ValueError(f"{cls.__name__} got unknown fields {unknown}; allowed fields: {names}")
    return dict(d)
