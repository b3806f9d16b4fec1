"""Before anything is written: may a run directory start fresh or resume (`RunDir.check_start`:
the folder first, tjx.ckpt's `check_can_create`, then its checkpoints)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx.ckpt import CheckpointError, NotCreatableError
from trainer.config.folder import RunDir, RunStartError


def _step(run: RunDir, step: int) -> None:
    (run.checkpoints / str(step)).mkdir(parents=True)  # committed or not: a step folder


def test_start_fresh_or_resume(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.check_start(resume=False)  # not there yet: a fresh run may start
    with pytest.raises(RunStartError) as err:
        run.check_start(resume=True)
    assert str(err.value) == f"no checkpoint in {str(run.path)!r}" and err.value.resume
    _step(run, 10)
    run.check_start(resume=True)
    with pytest.raises(RunStartError) as err:
        run.check_start(resume=False)  # never train over an old run
    assert str(err.value) == f"{str(run.path)!r} already holds checkpoints"
    assert not err.value.resume and err.value.path == run.path
    assert isinstance(err.value, ValueError) and isinstance(err.value, CheckpointError)


def test_start_checks_the_folder_first(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    for resume in (False, True):
        with pytest.raises(NotCreatableError, match="exists and is not a directory"):
            RunDir(tmp_path / "f").check_start(resume=resume)
