"""A resumed run's logs hold each step once: what a run logged after its checkpoint, before it
stopped, is moved aside (JSONL) or dropped by TensorBoard (its purge step), never lost."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from tjx.metrics import JsonlLogger, make_logger, read_jsonl, rewind_jsonl, rewound_path

from ._readers import read_tb_events


def _run(log, steps: range, rng: np.random.Generator) -> list[dict]:
    """Log a scalar record, every other step a text and a histogram, as a run does; return
    the records as read back."""
    with JsonlLogger(log) as logger:
        for step in steps:
            logger.log_scalars(step, {"loss": float(rng.uniform(1.0, 5.0))})
            if step % 2 == 0:
                logger.log_text(step, "sample", f"text of step {step}")
                logger.log_histograms(step, {"w": rng.normal(size=16)})
    return read_jsonl(log)


def test_a_resumed_log_moves_the_steps_after_its_checkpoint_aside_and_holds_each_once(tmp_path):
    rng = np.random.default_rng()
    log = tmp_path / "metrics.jsonl"
    first = _run(log, range(1, 8), rng)  # the run saved step 4, then was killed after step 7
    whole = log.read_bytes()
    log.write_bytes(whole + b'{"step": 8, "ti')  # and tore its last line
    with JsonlLogger(log, rewind_after=4) as resumed:
        assert resumed.rewound == len([r for r in first if r["step"] > 4])  # 3 steps, 5 records
        second = {step: float(rng.uniform(1.0, 5.0)) for step in range(5, 8)}
        for step, loss in second.items():
            resumed.log_scalars(step, {"loss": loss})
    records = read_jsonl(log)
    assert records[: len(records) - 3] == [r for r in first if r["step"] <= 4]
    assert {r["step"]: r["loss"] for r in records[-3:]} == second  # each step once: the resume's
    side = tmp_path / "metrics.rewound.jsonl"
    assert rewound_path(log) == side
    assert read_jsonl(side) == [r for r in first if r["step"] > 4]  # as logged, nothing lost
    # A second resume from a later checkpoint moves nothing and leaves the log as it is.
    before = log.read_bytes()
    assert rewind_jsonl(log, 7) == 0 and log.read_bytes() == before
    # One from an earlier one appends to the rewound log.
    assert rewind_jsonl(log, 2) == len([r for r in records if r["step"] > 2])
    assert [r["step"] for r in read_jsonl(side)][-3:] == [5, 6, 7]
    assert max(r["step"] for r in read_jsonl(log)) == 2


def test_a_line_that_is_no_record_stays_where_it_is(tmp_path):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 1, "loss": 2.0}\nnot json\n{"step": 5, "loss": 1.0}\n[5]\n')
    assert rewind_jsonl(log, 4) == 1
    assert log.read_text() == '{"step": 1, "loss": 2.0}\nnot json\n[5]\n'
    assert rewind_jsonl(tmp_path / "none.jsonl", 4) == 0  # no log: nothing to move
    assert not (tmp_path / "none.rewound.jsonl").exists()


def test_a_crash_while_rewinding_leaves_the_records_in_the_log_or_both(tmp_path, monkeypatch):
    """The rewound records are on disk beside the log before the log is replaced: a crash at
    the replace leaves the log whole, and the next resume moves them again (kept twice, never
    dropped)."""
    rng = np.random.default_rng()
    log = tmp_path / "metrics.jsonl"
    first = _run(log, range(1, 5), rng)
    before = log.read_bytes()

    def crash(*args):
        raise OSError("killed")

    with monkeypatch.context() as patched:
        patched.setattr(os, "replace", crash)
        with pytest.raises(OSError, match="killed"):
            rewind_jsonl(log, 2)
    assert log.read_bytes() == before
    later = [r for r in first if r["step"] > 2]
    assert read_jsonl(rewound_path(log)) == later
    assert rewind_jsonl(log, 2) == len(later)
    assert read_jsonl(log) == [r for r in first if r["step"] <= 2]
    assert read_jsonl(rewound_path(log)) == later + later


def test_make_logger_rewinds_the_jsonl_log_and_purges_tensorboard_after_a_resume(tmp_path):
    with make_logger(["jsonl", "tensorboard"], tmp_path) as logger:
        for step in range(1, 6):
            logger.log_scalars(step, {"loss": 1.0 / step})
    time.sleep(1.1)  # tensorboardX names its event file by the second: a resume's is another
    with make_logger(["jsonl", "tensorboard"], tmp_path, resumed_at=3) as logger:
        (jsonl,) = (one for one in logger.loggers if isinstance(one, JsonlLogger))
        assert jsonl.rewound == 2
        logger.log_scalars(4, {"loss": 0.5})
    assert [r["step"] for r in read_jsonl(tmp_path / "metrics.jsonl")] == [1, 2, 3, 4]
    # TensorBoard drops the earlier files' events from the step a SessionLog START names: the
    # resume's file starts with one at step 4, before its own step 4.
    events = [read_tb_events(f) for f in (tmp_path / "tensorboard").glob("events.out.tfevents.*")]
    (resumed,) = (file for file in events if any(e.HasField("session_log") for e in file))
    starts = [e.step for e in resumed if e.session_log.status == e.session_log.START]
    logged = [(e.step, v.simple_value) for e in resumed for v in e.summary.value if v.tag == "loss"]
    assert starts == [4] and logged == [(4, 0.5)] and len(events) == 2
