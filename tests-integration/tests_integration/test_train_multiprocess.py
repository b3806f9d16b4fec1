"""The trainer as two processes on loopback (jax.distributed + gloo, 4 simulated CPU devices each)
against one process with 8 devices, on the same shrunken `tiny` config.

* Both processes exit 0, each wait has a deadline, and stragglers are killed.
* Per-step training losses and validation losses of the 2-process run equal the 1-process run's
  to ``rel=1e-5``: the global batch, the parameters and the step are the same, only the order in
  which the sharded gradient and loss sums are added differs (a cross-process gloo all-reduce
  against XLA's in-process one), which moves float32 results by a few ulps per step (~1e-7
  relative seen); 1e-5 leaves room for that noise to grow through 6 Adam steps while any real
  difference — another batch, a lost row, a wrong resume position or optimizer state — moves the
  loss by 1e-3 or more.
* Only process 0 writes the run directory: both processes run under a Python audit hook that
  records every file they open for writing (and every mkdir/rename/remove); process 1 writes
  nothing outside ``checkpoints/`` (where each process saves its own shards).
* The 2-process run is stopped at step 3 (``train.stop_at``: the same save-and-exit path as a
  signal), resumed as 2 processes to step 6, and its losses after the resume still match the
  uninterrupted 1-process run; the step-6 checkpoints of both runs restore in this process to the
  same train state.
* A bad multi-host setup — processes told different process counts or configs, a coordinator
  nobody answers, fewer processes than announced — ends every process with one error line and a
  non-zero exit within the ``--init-timeout``, and writes nothing.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from tests_integration._helpers_apps import SMALL, read_log, val_losses
from tests_integration._helpers_multiprocess import (
    LAUNCH_TIMEOUT_S,
    REL,
    free_port,
    joining,
    launch,
    one_process_run,
    pair,
    restore,
    resume_and_match_one_process,
    tails,
    trainer_args,
)

STEPS, STOP = 6, 3
SETS = [*SMALL, f"train.steps={STEPS}", f"train.eval_every={STOP}"]
INIT_TIMEOUT_S = 8  # --init-timeout of the bad setups
BAD_TIMEOUT_S = 120  # ...which must all be over well within this


def test_two_processes_match_one_resume_and_only_process_0_writes(tmp_path):
    one = one_process_run(tmp_path, SETS)
    assert "devices: 8 ×" in one.stdout

    stop_argvs = pair("two", [*SETS, f"train.stop_at={STOP}"])
    stopped = launch(tmp_path, "stop", stop_argvs, LAUNCH_TIMEOUT_S)
    for i, r in enumerate(stopped):
        assert r["rc"] == 0, tails(stopped)
        assert f"multi-host: process {i} of 2" in r["out"] and "devices: 8 ×" in r["out"]
        assert f"saved step {STOP}" in r["out"]
    run = tmp_path / "two"
    ckpt_dir = run / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.name.isdigit()) == [str(STOP)]
    # One writer: each step logged once (two appending processes would log it twice).
    assert [r["step"] for r in read_log(run) if "loss" in r] == list(range(1, STOP + 1))

    # (b) the same losses as one process with 8 devices, before and after the resume.
    resumed = resume_and_match_one_process(tmp_path, SETS, STOP, STEPS)
    v1, v2 = val_losses(tmp_path / "one"), val_losses(run)
    assert sorted(v1) == sorted(v2) == [STOP, STEPS]
    for step in v1:
        assert v2[step] == pytest.approx(v1[step], rel=REL)

    # (c) only process 0 wrote the run directory; process 1 only its checkpoint shards.
    for runs in (stopped, resumed):
        primary, other = runs[0]["writes"], runs[1]["writes"]
        assert primary is not None and other is not None, "the audit log is missing"
        # tjx.ckpt's writability probe (made and removed at once) is not an output.
        outside = [
            p
            for p in other
            if p.split(os.sep)[0] != "checkpoints" and not p.startswith(".tjx-write-probe-")
        ]
        assert outside == [], f"process 1 wrote {outside}"
    first = set(stopped[0]["writes"])
    for name in ("config.yaml", "model.json", "data.json", "metrics.jsonl", "final.json"):
        assert name in first, sorted(first)
    assert os.path.join("samples", f"step_{STEPS:07d}.txt") in resumed[0]["writes"]
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"step_{STEPS:07d}.txt"]
    summary = json.loads((run / "final.json").read_text())
    assert summary["step"] == STEPS

    # (c) the checkpoints are complete: both processes' parts restore here to the train state
    # of the 1-process run, with the data position. rtol as for the losses; the absolute floor is
    # for values that are rounding noise in both runs: the attention key biases get a zero
    # gradient in exact arithmetic (softmax ignores a per-query constant), so Adam moves them by
    # normalised noise, ~1e-6. A lost shard or another step differs by ~1e-2.
    got, ref = restore(ckpt_dir, STEPS), restore(tmp_path / "one" / "checkpoints", STEPS)
    assert got.step == ref.step == STEPS and got.metadata["process_count"] == 2
    assert got.data_state["step"] == ref.data_state["step"] == STEPS
    assert got.data_state["process_count"] == 2 and ref.data_state["process_count"] == 1
    flat_got = jax.tree_util.tree_leaves_with_path(got.state)
    flat_ref = jax.tree_util.tree_leaves_with_path(ref.state)
    assert [p for p, _ in flat_got] == [p for p, _ in flat_ref]
    for (path, a), (_, b) in zip(flat_got, flat_ref, strict=True):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=jax.tree_util.keystr(path)
        )


def test_bad_multi_host_setups_fail_fast_with_one_line(tmp_path):
    sets = [*SMALL, "train.steps=2"]
    shared = f"127.0.0.1:{free_port()}"
    argvs = [
        # Processes 0 and 1 of one run, told different process counts and different seeds.
        trainer_args("disagree", sets, *joining(shared, 2, 0, INIT_TIMEOUT_S)),
        trainer_args("disagree", [*sets, "train.seed=1"], *joining(shared, 3, 1, INIT_TIMEOUT_S)),
        # Process 1 of 2 at a coordinator nobody runs.
        trainer_args("nocoord", sets, *joining(f"127.0.0.1:{free_port()}", 2, 1, INIT_TIMEOUT_S)),
        # Process 0 of 2, but no process 1 ever comes.
        trainer_args("alone", sets, *joining(f"127.0.0.1:{free_port()}", 2, 0, INIT_TIMEOUT_S)),
    ]
    results = launch(tmp_path, "bad", argvs, BAD_TIMEOUT_S)
    for r in results:
        assert r["rc"] not in (0, None) and r["seconds"] < BAD_TIMEOUT_S, tails(results)
        errors = [line for line in r["err"].splitlines() if line.startswith("trainer: error:")]
        assert len(errors) == 1, tails(results)
        assert "Traceback" not in r["err"], tails(results)
    for r in results[:2]:
        assert r["rc"] == 2, tails(results)
        assert "multi-host processes disagree" in r["err"]
        assert "the run has 2 processes but they were told process 0: 2, process 1: 3" in r["err"]
        assert "config: process(es) [1]" in r["err"]
    for i, r in ((1, results[2]), (0, results[3])):
        assert r["rc"] == 1, tails(results)
        assert "not all 2 processes joined the run" in r["err"]
        assert f"within {INIT_TIMEOUT_S} s (this is process {i})" in r["err"]
    for r in results:  # None: the watchdog's os._exit skips the audit log's atexit
        assert not r["writes"], r["writes"]
    for name in ("disagree", "nocoord", "alone"):
        assert not (tmp_path / name).exists()
