"""Before anything is written: can a folder be made (`check_can_create`, found by writing)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

from tjx.ckpt import (
    CheckpointError,
    NotCreatableError,
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


def _deny_mkdir_under(monkeypatch: pytest.MonkeyPatch, top: Path) -> list[str]:
    """``os.mkdir`` fails with EPERM under ``top`` while ``os.access`` says yes, as root sees an
    immutable folder (``chattr +i``) in a container; the tried paths are returned."""
    real, tried = os.mkdir, []

    def mkdir(path: Any, *args: Any, **kwargs: Any) -> None:
        if str(path).startswith(str(top)):
            tried.append(str(path))
            raise PermissionError(errno.EPERM, os.strerror(errno.EPERM), str(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(os, "access", lambda *args, **kwargs: True)  # the lie
    return tried


def test_an_unwritable_ancestor_is_found_by_writing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tried = _deny_mkdir_under(monkeypatch, tmp_path)
    with pytest.raises(NotCreatableError) as err:
        check_can_create(tmp_path / "a" / "b")
    assert str(err.value) == (
        f"cannot create {str(tmp_path / 'a' / 'b')!r}: {str(tmp_path)!r} is not writable "
        "(Operation not permitted); choose another place"
    )
    assert tried and all(Path(p).parent == tmp_path for p in tried)  # the probe, in the ancestor


def test_an_existing_unwritable_folder_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "run").mkdir()
    _deny_mkdir_under(monkeypatch, tmp_path / "run")
    with pytest.raises(NotCreatableError) as err:
        check_can_create(tmp_path / "run")
    assert str(err.value) == (
        f"cannot write into {str(tmp_path / 'run')!r} (Operation not permitted); choose another "
        "place"
    )
    check_can_create(tmp_path / "other")  # elsewhere: fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # every probe removed
