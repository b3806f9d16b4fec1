"""A peer killed mid-run (kill -9 of process 1, or of process 0, the coordinator, of 2; loopback,
4 simulated CPU devices each).

Without the peer watch, process 0 waited for jax's heartbeat timeout and died 78-100 s later by
SIGABRT with a C++ stack dump and no ``trainer: error:`` line. With it:

* process 0 exits non-zero within 30 s of the kill, with exactly one error line naming the dead
  process and the newest committed checkpoint, and no traceback or abort dump;
* the run directory stays resumable: two processes ``--resume`` from that checkpoint and finish.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from tests_integration._helpers_apps import SMALL
from tests_integration._helpers_multiprocess import LAUNCH_TIMEOUT_S, launch, pair, tails
from tjx import ckpt

# The kill follows step 5's commit; 15 steps after it (1.5 s or more: ~0.1 s a step) leave the
# run going when it lands, polled every 10 ms; the resume trains them, as two processes.
STEPS = 20
SETS = [*SMALL, f"train.steps={STEPS}", "train.eval_every=0", "train.checkpoint_every=5"]
DETECTION_LIMIT_S = 30.0


def _kill_after_a_checkpoint(run_dir: Path, killed_at: list[float], victim: int = 1):
    """A ``while_running`` hook: SIGKILL ``victim`` once step 5 is committed and the run goes on.

    Committed means renamed into place by process 0, so the others may still be in orbax's
    commit barrier of step 5 (a background thread) when the kill lands: polled often, it does
    land there in some runs, whose ending must be the same one line.
    """

    def hook(procs: list[subprocess.Popen]) -> None:
        end = time.monotonic() + LAUNCH_TIMEOUT_S
        while time.monotonic() < end:
            if any(p.poll() is not None for p in procs):
                return  # one ended early: the assertions on the results say why
            if (run_dir / "checkpoints" / "5").is_dir():
                procs[victim].send_signal(signal.SIGKILL)
                killed_at.append(time.monotonic())
                return
            time.sleep(0.01)

    return hook


def _names_the_last_committed_step(line: str, run_dir: Path) -> bool:
    """Whether ``line`` names the newest committed step of ``run_dir`` (what --resume takes)."""
    named = re.search(r"the last checkpoint is step (\d+) in ", line)
    return named is not None and int(named[1]) == ckpt.RunFolder(run_dir).latest_step()


def test_a_killed_peer_ends_the_survivor_in_one_line_and_the_run_resumes(tmp_path):
    run = tmp_path / "two"
    killed_at: list[float] = []
    started = time.monotonic()
    results = launch(
        tmp_path,
        "dead",
        pair("two", SETS),
        LAUNCH_TIMEOUT_S,
        _kill_after_a_checkpoint(run, killed_at),
    )
    assert killed_at, tails(results)
    survivor, killed = results
    assert killed["rc"] == -signal.SIGKILL, tails(results)
    assert survivor["rc"] == 1, tails(results)
    # `seconds` is an upper bound on when process 0 ended, counted from (just after) `started`.
    assert survivor["seconds"] - (killed_at[0] - started) < DETECTION_LIMIT_S, tails(results)
    err = survivor["err"]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("trainer: error: process 1 of 2"), err
    assert _names_the_last_committed_step(errors[0], run) and "--resume" in errors[0], err
    for noise in ("Traceback", "SIGABRT", "Check failed", "Terminating process"):
        assert noise not in err, err

    resumed = launch(tmp_path, "resume", pair("two", SETS, "--resume"), LAUNCH_TIMEOUT_S)
    for r in resumed:
        assert r["rc"] == 0, tails(resumed)
        assert "resumed from step" in r["out"] and f"done: {STEPS} steps" in r["out"]


def test_a_killed_coordinator_ends_the_survivor_in_one_line(tmp_path):
    """jax aborts process 1 the moment process 0's connection drops (it used to die by SIGABRT
    with a C++ stack dump): one line naming the lost coordinator and the checkpoint, exit 1."""
    run = tmp_path / "two"
    killed_at: list[float] = []
    started = time.monotonic()
    hook = _kill_after_a_checkpoint(run, killed_at, victim=0)
    results = launch(tmp_path, "dead0", pair("two", SETS), LAUNCH_TIMEOUT_S, hook)
    assert killed_at, tails(results)
    killed, survivor = results
    assert killed["rc"] == -signal.SIGKILL, tails(results)
    assert survivor["rc"] == 1, tails(results)
    assert survivor["seconds"] - (killed_at[0] - started) < DETECTION_LIMIT_S, tails(results)
    err = survivor["err"]
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    assert errors[0].startswith("trainer: error: lost the coordinator (process 0 of 2)"), err
    assert _names_the_last_committed_step(errors[0], run) and "--resume" in errors[0], err
    for noise in ("Traceback", "SIGABRT", "Check failure", "Terminating process"):
        assert noise not in err, err
    assert not re.search(r"^[EFW]\d{4} ", err, re.M), err  # no C++ log line
