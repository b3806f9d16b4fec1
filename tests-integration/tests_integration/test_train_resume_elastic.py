"""Elastic resume: a checkpoint saved by N processes (or on D data-parallel devices) continues on
M processes (or another D) at the same global batch.

One uninterrupted run (1 process, 8 simulated devices) is the reference. Two runs stop at step
``STOP`` and resume on another layout: 2 processes (4 devices each) → 1 process with 4 devices
(the process count and the data-parallel size 8 → 4 at once), and 1 process → 2 (8 devices
both times). Each resumed run's training losses equal the reference's at every step to ``REL`` —
the data iterator continues at the same global position and the optimizer state is resharded
onto the new mesh; only the summation order of the sharded sums differs (see
test_train_multiprocess.py for the tolerance). Another global batch size is refused in one line
(the trainer's ``main`` called in this process).
"""

from __future__ import annotations

import shutil

import pytest

from tests_integration._helpers_apps import SMALL, call_train, check_ok, train, train_losses
from tests_integration._helpers_multiprocess import (
    LAUNCH_TIMEOUT_S,
    REL,
    launch,
    mp_env,
    one_process_here,
    pair,
    tails,
)

STEPS, STOP = 4, 2
SETS = [*SMALL, f"train.steps={STEPS}", f"train.eval_every={STEPS}", "mesh.data=-1"]


def _matches_reference(tmp_path, name: str) -> None:
    want, got = train_losses(tmp_path / "ref"), train_losses(tmp_path / name)
    assert sorted(got) == sorted(want) == list(range(1, STEPS + 1)), name
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=REL), (name, step, got, want)


def test_a_resume_on_another_process_count_or_mesh_continues_the_run(tmp_path):
    # The reference and the run stopped on one process: 8 devices, in this process.
    one_process_here(tmp_path, "ref", SETS)
    stop = [*SETS, f"train.stop_at={STOP}"]
    one_process_here(tmp_path, "one", stop)
    shutil.copytree(tmp_path / "one", tmp_path / "other_batch")
    stopped = launch(tmp_path, "stop", pair("two_to_one", stop), LAUNCH_TIMEOUT_S)
    assert [r["rc"] for r in stopped] == [0, 0], tails(stopped)

    # 2 processes (8 devices in all) -> 1 process with 4 devices: data-parallel size 8 -> 4 too.
    # (Each change alone was a run of its own: the restore reshards onto whatever mesh it is
    # given, and the data iterator continues at its global position, in both at once.)
    resumed = train(tmp_path, "two_to_one", SETS, "--resume", devices=4, env=mp_env(4))
    check_ok(resumed)
    assert "devices: 4 ×" in resumed.stdout and f"resumed from step {STOP}" in resumed.stdout
    _matches_reference(tmp_path, "two_to_one")

    # 1 process -> 2 (the stopped run itself: nothing else resumes it).
    grown = launch(tmp_path, "grow", pair("one", SETS, "--resume"), LAUNCH_TIMEOUT_S)
    for r in grown:
        assert r["rc"] == 0 and f"resumed from step {STOP}" in r["out"], tails(grown)
    _matches_reference(tmp_path, "one")

    # Another global batch: refused in one line, the run directory as it was (in this process:
    # a refusal needs no interpreter of its own).
    before = sorted(p.name for p in (tmp_path / "other_batch").rglob("*"))
    other = call_train(tmp_path, "other_batch", [*SETS, "data.batch_size=4"], "--resume")
    assert other.returncode == 2, other.stderr
    errors = [line for line in other.stderr.splitlines() if line.startswith("trainer: error:")]
    assert len(errors) == 1 and "data.batch_size 8 → 4" in errors[0], other.stderr
    assert sorted(p.name for p in (tmp_path / "other_batch").rglob("*")) == before
