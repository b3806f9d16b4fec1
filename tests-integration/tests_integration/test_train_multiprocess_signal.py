"""A preemption signal that reaches only one of two trainer processes (loopback, 4 simulated CPU
devices each) stops both at the same step.

SLURM/k8s signal every task of a job, but not at the same moment, and a task may miss it; the
worst case of "not at the same moment" is "only one". Here SIGTERM goes to process 1 alone once
process 0 has logged a step. Without an agreement process 1 would enter the checkpoint save (a
collective) while process 0 enters the next train step (another collective) and both would hang
until jax's timeouts; with it:

* both processes exit 0 within the deadline (stragglers are killed), and both name the step;
* exactly one checkpoint exists, at that step, and it restores (both processes' shards, the data
  position at that step);
* ``--resume`` as 2 processes reaches the last step with per-step losses equal to an
  uninterrupted 1-process 8-device run to ``rel=1e-5`` (why that tolerance:
  test_train_multiprocess.py).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests_integration._helpers_apps import SMALL, check_ok, read_log, train
from tests_integration._helpers_multiprocess import (
    LAUNCH_TIMEOUT_S,
    launch,
    mp_env,
    pair,
    restore,
    resume_and_match_one_process,
    tails,
)

# Enough steps that the run is still going when the signal lands (one step of this model takes
# ~0.1 s here; the signal follows the first logged step within ~0.1 s).
STEPS = 16
SETS = [*SMALL, f"train.steps={STEPS}", "train.eval_every=0"]


def _signal_process_1_after_first_step(run_dir: Path, deadline_s: float):
    """A ``while_running`` hook: wait for process 0's first step line, then SIGTERM process 1."""

    def hook(procs: list[subprocess.Popen]) -> None:
        log = run_dir / "metrics.jsonl"
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            if any(p.poll() is not None for p in procs):
                return  # one ended early: the assertions on the results say why
            if log.exists() and any("loss" in r for r in read_log(run_dir)):
                procs[1].send_signal(signal.SIGTERM)
                return
            time.sleep(0.05)

    return hook


def test_sigterm_to_one_process_stops_both_at_one_step_then_resume_matches(tmp_path):
    one = train(tmp_path, "one", [*SETS, "mesh.data=-1"], devices=8, env=mp_env(8))
    check_ok(one)

    run = tmp_path / "two"
    hook = _signal_process_1_after_first_step(run, LAUNCH_TIMEOUT_S)
    stopped = launch(tmp_path, "signal", pair("two", SETS), LAUNCH_TIMEOUT_S, hook)
    for r in stopped:
        assert r["rc"] == 0, tails(stopped)
    summary = json.loads((run / "final.json").read_text())
    stop = summary["step"]
    assert 1 <= stop < STEPS, tails(stopped)  # the signal landed mid-run
    assert summary["interrupted_by"] == "SIGTERM on process 1"
    assert f"SIGTERM: saved step {stop}" in stopped[1]["out"], tails(stopped)
    assert f"SIGTERM on process 1: saved step {stop}" in stopped[0]["out"], tails(stopped)

    # One checkpoint, at the agreed step, complete: both processes' shards restore here.
    ckpt_dir = run / "checkpoints"
    assert sorted(p.name for p in ckpt_dir.iterdir() if p.name.isdigit()) == [str(stop)]
    got = restore(ckpt_dir, stop)
    assert got.step == stop and got.metadata["process_count"] == 2
    assert got.data_state["step"] == stop and got.data_state["process_count"] == 2
    assert [r["step"] for r in read_log(run) if "loss" in r] == list(range(1, stop + 1))

    resume_and_match_one_process(tmp_path, SETS, stop, STEPS)
