"""Whether a folder can be made, and whether a run directory may start fresh or resume.

An app checks both before it writes anything (`RunDir.check_start`, `check_can_create` for any
other folder it will make), so a bad path ends in one line naming it rather than a traceback
later, after minutes of set-up. The messages name the path and the problem; the app adds its
own flag and fix. Standard library only, like `tjx.ckpt.run_dir`.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from tjx.ckpt import storage
from tjx.ckpt.errors import CheckpointError, NotCreatableError

__all__ = ["NotCreatableError", "RunStartError", "check_can_create"]


class RunStartError(CheckpointError, ValueError):
    """A run directory cannot start as asked (`RunDir.check_start`).

    Attributes
    ----------
    path : Path
        The run directory.
    resume : bool
        What was asked: ``True``, to resume a run that holds no checkpoint; ``False``, to start
        fresh over one that does.
    """

    def __init__(self, path: Path, *, resume: bool) -> None:
        message = (
            f"no checkpoint in {str(path)!r}"
            if resume
            else f"{str(path)!r} already holds checkpoints"
        )
        super().__init__(message)
        self.path = path
        self.resume = resume


def _write_problem(folder: Path) -> str | None:
    """Why nothing can be made in ``folder``, found by doing it: a probe folder is made and
    removed. ``os.access`` cannot tell (root in a container passes it on a read-only mount or
    an immutable folder); the write itself can."""
    try:
        probe = tempfile.mkdtemp(prefix=".tjx-write-probe-", dir=folder)
    except OSError as err:
        return err.strerror or type(err).__name__
    os.rmdir(probe)
    return None


def check_can_create(folder: Path | str) -> None:
    """Raise unless ``folder`` is a directory or can be made (``mkdir(parents=True)``), and
    files can be written into it.

    Checked by doing: a probe folder is made and removed in ``folder`` when it exists, else in
    its nearest existing ancestor (which must be a directory). Nothing else is written.

    Parameters
    ----------
    folder : Path or str
        The folder (``~`` is not expanded: pass what you will create), or a ``gs://`` /
        ``s3://`` URL: then `tjx.ckpt.storage.check_remote` (credentials, the bucket, a probe
        object written and deleted) raises its `StorageError`, a `NotCreatableError` too.

    Raises
    ------
    NotCreatableError
        ``folder`` exists and is not a directory or cannot be written into, its nearest
        existing ancestor is a file, or nothing can be made in that ancestor; the message names
        the paths and the system's reason (``Read-only file system``, ...).
    """
    if storage.scheme_of(folder) is not None:
        path = storage.as_path(folder)  # UnsupportedURLError for a scheme tjx cannot serve
        if storage.is_remote(path):
            storage.check_remote(path, write=True)
            return
        folder = path
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise NotCreatableError(folder, f"{str(folder)!r} exists and is not a directory")
    if folder.is_dir():
        problem = _write_problem(folder)
        if problem:
            raise NotCreatableError(
                folder, f"cannot write into {str(folder)!r} ({problem}); choose another place"
            )
        return
    ancestor = folder
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise NotCreatableError(
            folder, f"cannot create {str(folder)!r}: {str(ancestor)!r} is a file, not a folder"
        )
    problem = _write_problem(ancestor)
    if problem:
        raise NotCreatableError(
            folder,
            f"cannot create {str(folder)!r}: {str(ancestor)!r} is not writable ({problem}); "
            "choose another place",
        )
