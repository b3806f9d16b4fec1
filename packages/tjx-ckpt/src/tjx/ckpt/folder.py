"""A run's folder as storage: files written whole, read back as mappings, its committed steps.

A training run keeps its files and its checkpoints in one folder, a local one or a ``gs://`` /
``s3://`` URL (`tjx.ckpt.storage`). `RunFolder` is that folder as storage, whatever an app puts
there: `write_if_changed` writes a file whole or not at all, `RunFolder.read` reads a mapping
back (`RunFileError` in one line if it cannot), and the ``checkpoints/`` folder's steps are
listed, committed or not. Which files a run holds (``config.yaml``, ``final.json``...) is the
app's layout (the trainer's ``trainer.config.folder.RunDir``); `check_can_create` says whether a
folder can be made before anything is written there.

Every file is written whole or not at all. On a disk: into a temporary file next to it, fsynced,
then renamed over the old one (a kill or a power loss mid-write leaves the old file or the new
one, never half a file). On an object store: as one object with one request, which the store
shows whole or not at all (there is no rename, and no folder to make). A file that already holds
exactly the new text is not rewritten, so a resume with the same settings leaves the run's files
and their times as they were.

The JSON files are standard JSON, which jq and strict parsers read: a NaN or an infinity (the
perplexity of a loss that grew to 8,703) is written as ``null`` and named in a ``"nonfinite"``
entry beside it (:mod:`tjx.core.standard_json`), and read back as the float it was.

Standard library and PyYAML only (orbax-checkpoint requires PyYAML too): ``import tjx.ckpt``
loads this module, not orbax or jax (see the package ``__init__``), so an app can read and check
its run folder before it pays for jax, and still after a Ctrl-C cut that import short.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import yaml  # type: ignore[import-untyped]

from tjx.ckpt import objects, storage
from tjx.ckpt.errors import CheckpointError, NotCreatableError, one_line
from tjx.ckpt.fsync import fsync_dir, fsync_file
from tjx.ckpt.storage import StoragePath
from tjx.core.config.yaml_io import load_yaml
from tjx.core.standard_json import dumps_json, loads_json

#: The commit marker of a step (orbax's ``atomicity.COMMIT_SUCCESS_FILE``, which tjx.ckpt.durable
#: writes), spelled out: this module must load without orbax and jax, so that an app can read its
#: run directory before importing them, or after a Ctrl-C cut their import short.
COMMIT_MARKER = "commit_success.txt"
#: What orbax's temporary step folder adds to the step's name (``atomicity.TMP_DIR_SUFFIX``,
#: spelled out for the same reason): ``12.orbax-checkpoint-tmp`` until the commit renames it.
TMP_DIR_SUFFIX = ".orbax-checkpoint-tmp"


class RunFileError(CheckpointError, ValueError):
    """A file of the run directory cannot be read as what it should hold.

    Attributes
    ----------
    path:
        The file.
    reason:
        Why, in one line: the parser's first line (``while parsing a flow sequence``), ``not
        UTF-8 (...)``, or ``not a mapping: it holds a list``.
    """

    def __init__(self, path: StoragePath, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class RunFileNotFoundError(RunFileError, FileNotFoundError):
    """A file of the run directory is missing (or is not a regular file); ``.path`` names it.

    A `RunFileError` (``.reason`` is ``"missing"``), so one ``except RunFileError`` answers
    every way a run file cannot be read; catch this one first to word a missing file apart.
    """

    def __init__(self, path: StoragePath) -> None:
        super().__init__(path, "missing")

    def __str__(self) -> str:
        return f"{self.path} is missing"  # a sentence, not "PATH: missing"


def write_if_changed(path: StoragePath, text: str) -> bool:
    """Write ``text`` to ``path`` atomically unless it already holds exactly that; whether it wrote.

    On a disk the text goes to ``.NAME.tmp`` in the same folder, is fsynced, and replaces
    ``path`` with one rename (then the folder is fsynced): ``path`` is the old file or the new
    one, whole, after any crash. A ``.NAME.tmp`` left by a crash is overwritten by the next
    write. On an object store (``gs://``, ``s3://``) it is one object written with one request.
    """
    data = text.encode("utf-8")
    if storage.is_remote(path):
        try:
            if objects.read_bytes(path) == data:
                return False
        except FileNotFoundError:
            pass
        objects.write_whole(path, data)
        return True
    path = Path(path)
    try:
        if path.read_bytes() == data:
            return False
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        pass
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    fsync_file(tmp)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return True


def _parse(path: StoragePath) -> Any:
    try:
        if storage.is_remote(path):
            raw = objects.read_bytes(path)
        elif not path.is_file():
            raise RunFileNotFoundError(Path(path))
        else:
            raw = path.read_bytes()
    except FileNotFoundError:
        raise RunFileNotFoundError(path) from None
    except OSError as err:
        raise RunFileError(path, f"cannot be read ({err.strerror or err})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RunFileError(path, f"not UTF-8 ({err.reason} at byte {err.start})") from None
    try:
        return load_yaml(text) if path.suffix in (".yaml", ".yml") else loads_json(text)
    except (yaml.YAMLError, ValueError) as err:  # JSONDecodeError is a ValueError
        raise RunFileError(path, one_line(str(err)) or type(err).__name__) from None


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The folder of one run as storage: its files and its ``checkpoints/`` steps.

    Parameters
    ----------
    path:
        The folder (need not exist yet): a local path, or a ``gs://`` / ``s3://`` URL
        (`tjx.ckpt.storage.as_path`; another scheme raises `UnsupportedURLError`).
    """

    path: StoragePath

    CHECKPOINTS_DIR: ClassVar[str] = "checkpoints"

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", storage.as_path(self.path))  # str, PathLike or URL

    @property
    def checkpoints(self) -> StoragePath:
        """The checkpoint directory (give it to `CheckpointManager`)."""
        return self.path / self.CHECKPOINTS_DIR

    def write_json(self, name: str, data: Mapping[str, Any]) -> bool:
        """File ``name`` (``model.json``, ``final.json``...) as indented, sorted JSON.

        Standard JSON: a NaN or an infinity is written as ``null`` and named in the mapping's
        ``"nonfinite"`` entry (:mod:`tjx.core.standard_json`; `read` puts it back). Values JSON
        does not know are written as their ``str`` (a dtype, a path). Returns whether it wrote
        (unchanged content is not rewritten).
        """
        text = dumps_json(dict(data), indent=2, sort_keys=True, default=str)
        return write_if_changed(self.path / name, text)

    def read(self, name: str) -> dict[str, Any]:
        """The mapping in file ``name``: YAML for ``.yaml``/``.yml``, else JSON (the values a
        ``"nonfinite"`` entry names are floats again; bare ``NaN`` of older files reads too).

        Raises
        ------
        RunFileNotFoundError
            The file is missing.
        RunFileError
            It cannot be read or parsed, or holds something else than a mapping.
        """
        path = self.path / name
        data = _parse(path)
        if not isinstance(data, dict):
            holds = "nothing" if data is None else f"a {type(data).__name__}"
            raise RunFileError(path, f"not a mapping: it holds {holds}")
        return data

    def step_folders(self) -> list[int]:
        """Every step folder in ``checkpoints/``, committed or not, oldest first.

        A folder named by a bare step number: what a save renames its temporary folder to
        (``12.orbax-checkpoint-tmp...`` never counts). Use it to refuse starting a new run over
        an old one; whether a step can be restored is for the `CheckpointManager` to say. On an
        object store a step is written in place, so what a crash cut short is a step without its
        commit marker there (the analogue of the temporary folder): only committed steps count.
        """
        if storage.is_remote(self.checkpoints):
            return objects.committed_steps(self.checkpoints)
        try:
            entries = list(self.checkpoints.iterdir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted(int(p.name) for p in entries if p.name.isdigit() and p.is_dir())

    def has_checkpoints(self) -> bool:
        """Whether ``checkpoints/`` holds any step folder (see `step_folders`)."""
        return bool(self.step_folders())

    def latest_step(self) -> int | None:
        """The newest committed step, or None.

        Committed: a step folder holding the commit marker (``commit_success.txt``), which the
        commit writes last before renaming the folder into place. A folder without it (a copy
        cut short, one made by hand) is what `CheckpointManager.restore` skips as never
        committed, so it is not the step to name in "continue with --resume".
        """
        if storage.is_remote(self.checkpoints):
            committed = objects.committed_steps(self.checkpoints)
        else:
            committed = [
                s
                for s in self.step_folders()
                if (self.checkpoints / str(s) / COMMIT_MARKER).is_file()
            ]
        return committed[-1] if committed else None

    def unfinished_step(self) -> int | None:
        """The newest step a save began and did not commit, when it is newer than
        `latest_step` (a save cut short by a dead process); else None.

        On a disk: a temporary folder (``12.orbax-checkpoint-tmp...``) or a step folder without
        the commit marker; on an object store: a step's objects without the marker. Such a step
        is never restored (`latest_step`, and so ``--resume``, skip it); the next
        `CheckpointManager` removes what it left.
        """
        if storage.is_remote(self.checkpoints):
            begun = objects.step_prefixes(self.checkpoints)
            committed = objects.committed_steps(self.checkpoints)
        else:
            try:
                entries = [p for p in self.checkpoints.iterdir() if p.is_dir()]
            except (FileNotFoundError, NotADirectoryError):
                return None
            names = [p.name.split(TMP_DIR_SUFFIX)[0] for p in entries]
            begun = sorted({int(n) for n in names if n.isdigit()})
            committed = [
                int(p.name) for p in entries if p.name.isdigit() and (p / COMMIT_MARKER).is_file()
            ]
        newest = max(committed, default=-1)
        unfinished = [s for s in begun if s > newest and s not in committed]
        return unfinished[-1] if unfinished else None


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


__all__ = [
    "COMMIT_MARKER",
    "RunFileError",
    "RunFileNotFoundError",
    "RunFolder",
    "check_can_create",
    "write_if_changed",
]
