"""A run killed while its JSONL log was being written (#71): the torn last line never breaks a
reader, and a resumed run's records never continue it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tjx.metrics import JsonlLogger, read_jsonl
from tjx.metrics.plots import plot_run


def _losses(rng: np.random.Generator, steps: range) -> dict[int, float]:
    return {step: float(rng.uniform(1.0, 5.0)) for step in steps}


@pytest.mark.parametrize("cut", [1, 9, -1])  # into the first key, mid-value, only the newline
def test_a_resumed_run_after_a_torn_line_logs_whole_records_and_plots(tmp_path, cut):
    rng = np.random.default_rng()
    log = tmp_path / "metrics.jsonl"
    before, after = _losses(rng, range(1, 4)), _losses(rng, range(4, 7))
    with JsonlLogger(log) as logger:
        for step, loss in before.items():
            logger.log_scalars(step, {"loss": loss})
    whole = log.read_bytes()
    last = whole[:-1].rfind(b"\n") + 1
    log.write_bytes(whole[: len(whole) - 1 if cut == -1 else last + cut])  # what a kill left
    kept = before if cut == -1 else {s: v for s, v in before.items() if s < 3}
    assert [r["step"] for r in read_jsonl(log)] == list(kept)  # readers skip the torn line
    with JsonlLogger(log) as resumed:  # a resumed run opens the log again
        for step, loss in after.items():
            resumed.log_scalars(step, {"loss": loss})
    records = read_jsonl(log)
    assert {r["step"]: r["loss"] for r in records} == {**kept, **after}
    assert log.read_bytes().endswith(b"\n") and log.read_bytes().count(b"\n") == len(records)
    assert plot_run(tmp_path, tmp_path / "loss.png", ("loss",)) == tmp_path / "loss.png"


def test_a_line_an_older_tjx_appended_to_a_torn_one_gives_its_whole_record(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text(
        '{"step": 1, "time": 1.0, "loss": 3.5}\n'
        '{"step": 2, "time": 2.0, "lo{"step": 2, "time": 3.0, "loss": NaN}\n'
        '{"step": 3, "time": 4.0, "loss": 2.5}\n'
    )
    records = read_jsonl(log)
    assert [r["step"] for r in records] == [1, 2, 3] and math.isnan(records[1]["loss"])


@pytest.mark.parametrize(
    ("middle", "why"),
    [
        (b'{"step": 2, "lo', "not valid JSON"),
        (b'{"step": 2, "text": "\xe9t\xe9"}', "not UTF-8"),
        (b'"a string"', "expected a JSON object, got str"),
    ],
)
def test_a_damaged_line_inside_the_log_is_named(tmp_path, middle, why):
    log = tmp_path / "metrics.jsonl"
    log.write_bytes(b'{"step": 1, "loss": 1.0}\n' + middle + b'\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(ValueError, match=f"metrics.jsonl:2: {why}"):
        read_jsonl(log)
