"""Standard JSON: NaN and infinities become nulls named in a "nonfinite" entry, and come back."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tjx.core.standard_json import (
    NONFINITE_KEY,
    dumps_json,
    from_standard_json,
    loads_json,
    to_standard_json,
)


def strict_loads(text: str):
    """json.loads as jq or a browser parse: the bare NaN / Infinity tokens are errors."""

    def refuse(token: str):
        raise ValueError(f"not standard JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def same(a, b) -> bool:
    """Equality where NaN equals NaN (and nothing else)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return type(a) is type(b) and a == b


def _random_record(rng: np.random.Generator, depth: int = 0) -> dict:
    pool = [math.nan, math.inf, -math.inf, 0.0, -1.5e300, 1e-300]
    out: dict = {}
    for i in range(int(rng.integers(1, 7))):
        kind = int(rng.integers(0, 6 if depth < 2 else 5))
        key = f"k{i}"
        if kind == 0:
            out[key] = float(rng.normal()) if rng.random() < 0.5 else pool[rng.integers(len(pool))]
        elif kind == 1:
            out[key] = int(rng.integers(-(10**6), 10**6))
        elif kind == 2:
            out[key] = str(rng.integers(100))
        elif kind == 3:
            out[key] = None
        elif kind == 4:
            out[key] = [float(x) for x in rng.normal(size=int(rng.integers(0, 4)))]
        else:
            out[key] = _random_record(rng, depth + 1)
    return out


def test_random_records_round_trip_through_standard_json():
    rng = np.random.default_rng(46)
    for _ in range(300):
        record = _random_record(rng)
        text = dumps_json(record, sort_keys=True)
        strict_loads(text)  # standard JSON, whatever the floats
        assert same(loads_json(text), record), (record, text)


def test_nested_mappings_name_their_own_values_and_counts_are_left_alone():
    record = {"histograms": {"w": {"nonfinite": 3, "mean": 0.5, "counts": [1, 2]}}}
    assert to_standard_json(record) == record  # a histogram's count is not a sidecar
    assert from_standard_json(record) == record
    nested = {"a": {"b": math.inf}}
    assert to_standard_json(nested) == {"a": {"b": None, NONFINITE_KEY: {"b": "Infinity"}}}
    # An entry that merely looks like one is left alone unless its values are nulls.
    looks = {"x": 1.0, NONFINITE_KEY: {"x": "NaN"}}
    assert from_standard_json(looks) == looks


def test_what_standard_json_cannot_name_is_refused_not_written():
    with pytest.raises(ValueError, match=r"record\.losses\[1\]: nan inside a list"):
        dumps_json({"losses": [1.0, math.nan]})
    with pytest.raises(ValueError, match="and a key 'nonfinite' of its own"):
        dumps_json({"loss": math.nan, NONFINITE_KEY: 2})
    with pytest.raises(ValueError, match=r"record\.a\.b\[0\]: inf inside a list"):
        to_standard_json({"a": {"b": [math.inf]}})


def test_a_numpy_float_is_named_like_a_python_float_and_plain_values_pass_unchanged():
    rng = np.random.default_rng(53)
    finite = float(rng.normal())
    record = {"x": np.float32("nan"), "y": np.float64(-np.inf), "z": finite, "n": 3, "ok": True}
    text = dumps_json(record)
    assert json.loads(text)[NONFINITE_KEY] == {"x": "NaN", "y": "-Infinity"}
    back = loads_json(text)
    assert math.isnan(back["x"]) and back["y"] == -math.inf
    assert (back["z"], back["n"], back["ok"]) == (finite, 3, True)
    assert from_standard_json([{"a": None, NONFINITE_KEY: {"a": "NaN"}}, 4])[1] == 4
