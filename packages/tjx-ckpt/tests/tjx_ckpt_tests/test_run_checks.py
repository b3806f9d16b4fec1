"""Before anything is written: can a folder be made, may a run directory start fresh or resume."""

from __future__ import annotations

from pathlib import Path

import pytest

from tjx.ckpt import (
    CheckpointError,
    NotCreatableError,
    RunDir,
    RunStartError,
    check_can_create,
)


def test_existing_or_makeable_folders_pass(tmp_path: Path) -> None:
    check_can_create(tmp_path)  # exists
    check_can_create(tmp_path / "a" / "b" / "c")  # its ancestor is a writable folder
    check_can_create(str(tmp_path / "new"))  # a str is a path too
    assert list(tmp_path.iterdir()) == []  # nothing made


def test_a_file_in_the_way(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotCreatableError) as err:
        check_can_create(tmp_path / "f")
    assert str(err.value) == f"{str(tmp_path / 'f')!r} exists and is not a directory"
    assert err.value.path == tmp_path / "f"
    with pytest.raises(NotCreatableError) as err:
        check_can_create(tmp_path / "f" / "sub" / "run")
    assert str(err.value) == (
        f"cannot create {str(tmp_path / 'f' / 'sub' / 'run')!r}: {str(tmp_path / 'f')!r} is a "
        "file, not a folder"
    )
    assert isinstance(err.value, ValueError) and isinstance(err.value, CheckpointError)


def test_a_read_only_ancestor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[str, int]] = []

    def denied(path: str, mode: int) -> bool:  # simulated: the tests may run as root
        asked.append((str(path), mode))
        return False

    monkeypatch.setattr("tjx.ckpt.run_checks.os.access", denied)
    check_can_create(tmp_path)  # an existing folder needs no write check of its parent
    assert asked == []
    with pytest.raises(NotCreatableError, match=r"is not writable; choose another place$") as err:
        check_can_create(tmp_path / "a" / "b")
    assert str(err.value).startswith(f"cannot create {str(tmp_path / 'a' / 'b')!r}: ")
    assert [path for path, _ in asked] == [str(tmp_path)]


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
