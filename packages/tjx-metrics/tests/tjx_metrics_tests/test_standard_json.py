"""The JSONL log is standard JSON, NaN and infinities included, and reads back as it was logged."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tjx.metrics import (
    NONFINITE_KEY,
    JsonlLogger,
    dumps_json,
    from_standard_json,
    loads_json,
    read_jsonl,
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


def test_a_diverged_loss_is_logged_as_standard_json_and_read_back_as_logged(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with JsonlLogger(path) as logger:
        logger.log_scalars(1, {"loss": 2.5, "grad_norm": 1.0})
        logger.log_scalars(2, {"loss": math.nan, "grad_norm": math.inf, "scale": -math.inf})
        logger.log_scalars(3, {"val_perplexity": np.float32("inf"), "val_loss": 9.0})
    lines = [strict_loads(line) for line in path.read_text().splitlines()]
    assert lines[1]["loss"] is None and lines[1]["grad_norm"] is None
    assert lines[1][NONFINITE_KEY] == {"loss": "NaN", "grad_norm": "Infinity", "scale": "-Infinity"}
    assert lines[2][NONFINITE_KEY] == {"val_perplexity": "Infinity"} and lines[2]["val_loss"] == 9.0
    assert NONFINITE_KEY not in lines[0]
    records = read_jsonl(path)
    assert math.isnan(records[1]["loss"]) and records[1]["grad_norm"] == math.inf
    assert records[1]["scale"] == -math.inf and records[2]["val_perplexity"] == math.inf
    assert all(NONFINITE_KEY not in r for r in records)


def test_a_log_written_with_bare_nan_and_infinity_still_reads(tmp_path):
    path = tmp_path / "old.jsonl"
    path.write_text(
        '{"step": 1, "time": 1.0, "loss": NaN}\n{"step": 2, "time": 2.0, "loss": Infinity}\n'
    )
    first, second = read_jsonl(path)
    assert math.isnan(first["loss"]) and second["loss"] == math.inf
    assert math.isnan(loads_json('{"x": NaN}')["x"])


def test_nonfinite_is_not_a_metric_name(tmp_path):
    with JsonlLogger(tmp_path / "m.jsonl") as logger, pytest.raises(ValueError, match="reserved"):
        logger.log_scalars(1, {NONFINITE_KEY: 1.0})


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
