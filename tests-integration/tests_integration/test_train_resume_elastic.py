"""Elastic resume: a checkpoint saved by N processes (or on D data-parallel devices) continues on
M processes (or another D) at the same global batch.

One uninterrupted run (1 process, 8 simulated devices) is the reference. Three runs stop at step
``STOP`` and resume on another layout: 2 processes → 1, 1 process → 2, and 8 devices → 4 (one
process, data-parallel size 8 → 4). Each resumed run's training losses equal the reference's at
every step to ``REL`` — the data iterator continues at the same global position and the optimizer
state is resharded onto the new mesh; only the summation order of the sharded sums differs (see
test_train_multiprocess.py for the tolerance). Another global batch size is refused in one line.
"""

from __future__ import annotations

import shutil

import pytest

from tests_integration._helpers_apps import SMALL, check_ok, train, train_losses
from tests_integration._helpers_multiprocess import (
    LAUNCH_TIMEOUT_S,
    REL,
    launch,
    mp_env,
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
    check_ok(train(tmp_path, "ref", SETS, devices=8, env=mp_env(8)))
    stop = [*SETS, f"train.stop_at={STOP}"]
    check_ok(train(tmp_path, "one", stop, devices=8, env=mp_env(8)))
    for name in ("one_to_two", "eight_to_four", "other_batch"):
        shutil.copytree(tmp_path / "one", tmp_path / name)
    stopped = launch(tmp_path, "stop", pair("two_to_one", stop), LAUNCH_TIMEOUT_S)
    assert [r["rc"] for r in stopped] == [0, 0], tails(stopped)

    # 2 processes -> 1 (8 devices both times).
    resumed = train(tmp_path, "two_to_one", SETS, "--resume", devices=8, env=mp_env(8))
    check_ok(resumed)
    assert f"resumed from step {STOP}" in resumed.stdout
    _matches_reference(tmp_path, "two_to_one")

    # 1 process -> 2.
    grown = launch(tmp_path, "grow", pair("one_to_two", SETS, "--resume"), LAUNCH_TIMEOUT_S)
    for r in grown:
        assert r["rc"] == 0 and f"resumed from step {STOP}" in r["out"], tails(grown)
    _matches_reference(tmp_path, "one_to_two")

    # 8 data-parallel devices -> 4, one process.
    shrunk = train(tmp_path, "eight_to_four", SETS, "--resume", devices=4, env=mp_env(4))
    check_ok(shrunk)
    assert "devices: 4 ×" in shrunk.stdout and f"resumed from step {STOP}" in shrunk.stdout
    _matches_reference(tmp_path, "eight_to_four")

    # Another global batch: refused in one line, the run directory as it was.
    before = sorted(p.name for p in (tmp_path / "other_batch").rglob("*"))
    other = train(tmp_path, "other_batch", [*SETS, "data.batch_size=4"], "--resume")
    assert other.returncode == 2, other.stderr
    errors = [line for line in other.stderr.splitlines() if line.startswith("trainer: error:")]
    assert len(errors) == 1 and "data.batch_size 8 → 4" in errors[0], other.stderr
    assert sorted(p.name for p in (tmp_path / "other_batch").rglob("*")) == before
