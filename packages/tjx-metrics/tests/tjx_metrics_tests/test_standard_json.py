"""The JSONL log is standard JSON, NaN and infinities included, and reads back as it was logged
(the rule itself is tjx.core.standard_json's, tested in tjx-core)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from tjx.metrics import NONFINITE_KEY, JsonlLogger, loads_json, read_jsonl


def strict_loads(text: str):
    """json.loads as jq or a browser parse: the bare NaN / Infinity tokens are errors."""

    def refuse(token: str):
        raise ValueError(f"not standard JSON: {token}")

    return json.loads(text, parse_constant=refuse)


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


def test_the_old_loggers_module_is_gone_and_the_names_stay_in_tjx_metrics() -> None:
    """`tjx.metrics.loggers.standard_json` warned from 0.17 until 0.19 and went in 0.20; the
    names stay `tjx.metrics`' (and `tjx.metrics.loggers`'), tjx-core's objects."""
    from tjx.core import standard_json
    from tjx.metrics import loggers

    with pytest.raises(ModuleNotFoundError, match="tjx.metrics.loggers.standard_json"):
        import tjx.metrics.loggers.standard_json  # noqa: F401
    assert loads_json is loggers.loads_json is standard_json.loads_json
