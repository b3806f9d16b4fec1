"""Checks of a step's files made before orbax opens the step, and a step listing orbax can read.

Why before orbax: orbax 0.12.8 reads a step's arrays as one tensorstore read per leaf, gathered
on an asyncio loop that it closes as soon as one read fails. The reads still in flight then
finish against the closed loop, and Python prints a ``RuntimeError: Event loop is closed``
traceback for each of them (hundreds for a real model), plus "Future exception was never
retrieved" and "coroutine ... was never awaited". Damage that shows in the step's files is
therefore refused here, before orbax starts, as one :class:`CorruptCheckpointError` naming the
file; the manager turns it into its one-line skip warning. A truncated, grown or deleted file
shows in its size: the commit records every file's size (``tjx_files.json``, see
:func:`tjx.ckpt.durable.record_file_sizes`) and :func:`recorded_files_problem` compares. Damage
that keeps the sizes (altered bytes), or any damage to a step saved before that list existed, is
still found by orbax's read and the fingerprints, and that read may still print orbax's noise.

What a committed step must have (all written and fsynced before the commit rename, see
:mod:`tjx.ckpt.durable`, so their absence means the folder is not what a commit produced):

- ``commit_success.txt``, the commit marker. orbax 0.12.8 writes it on local disks too
  (``AtomicRenameTemporaryPath.finalize`` writes it into the temporary folder, then renames), and
  so does tjx-ckpt's durable commit; orbax's own listing does not look for it on local disks (the
  rename is the commit there; the marker *is* the commit on GCS). A step folder without it was
  not made by a commit (a copy cut short, a hand-made folder) and is skipped like corruption.
- ``_CHECKPOINT_METADATA``, orbax's step metadata, as a JSON object orbax accepts. Missing,
  empty or not JSON, orbax logs a warning or an error and goes on; JSON of another shape (a
  list, a string timestamp) makes orbax's ``CheckpointManager`` constructor raise, so one bad
  step would block every restore. Such a step is corrupt, and :class:`CheckedNameFormat` keeps
  orbax from reading the file at all.
- ``tjx_files.json`` (optional: a step saved by an older tjx-ckpt, or by plain orbax, has none
  and is not size-checked). When present, it must be the JSON tjx-ckpt writes, and every file
  it lists must be there, a regular file, of the size listed. Files it does not list are
  allowed (none is expected: orbax writes nothing into a committed step).
- ``state/manifest.ocdbt``, the root of the OCDBT store holding the arrays (tjx-ckpt always saves
  with orbax's default ``use_ocdbt=True``). Without it tensorstore sees an empty store and every
  leaf's read fails: the case that printed the tracebacks above.
"""

from __future__ import annotations

import dataclasses
import json
import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import orbax.checkpoint as ocp

from tjx.ckpt import objects, storage
from tjx.ckpt.durable import (
    COMMIT_MARKER,
    FILE_SIZES,
    FILE_SIZES_FORMAT,
    FILE_SIZES_VERSION,
    STEP_METADATA,
)

OCDBT_ROOT = "manifest.ocdbt"


def step_metadata_problem(step_dir: Any) -> str | None:
    """Why orbax cannot use ``step_dir``'s ``_CHECKPOINT_METADATA``, or None when it can."""
    path = step_dir / STEP_METADATA
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return f"{STEP_METADATA} is missing"
    except OSError as err:
        return f"{STEP_METADATA} cannot be read ({err})"
    if not raw.strip():
        return f"{STEP_METADATA} is empty"
    try:
        json.loads(raw)  # orbax's reader would log an error and go on
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        return f"{STEP_METADATA} is not JSON ({err})"
    try:
        # orbax's own reader and parser: whatever it would raise on in its constructor.
        ocp.metadata.get_step_metadata(step_dir)
    except Exception as err:  # its validators raise several types
        return f"{STEP_METADATA} is not orbax step metadata ({err})"
    return None


def commit_problem(step_dir: Any) -> str | None:
    """Why ``step_dir`` is not a complete commit (marker, step metadata), or None."""
    if not (step_dir / COMMIT_MARKER).is_file():
        return (
            f"it was never committed: {COMMIT_MARKER} is missing (a commit writes it before "
            "renaming the step into place)"
        )
    return step_metadata_problem(step_dir)


def _newer_list(data: Any) -> bool:
    """Whether a parsed :data:`FILE_SIZES` is of a later version than this tjx-ckpt reads."""
    if not isinstance(data, Mapping) or data.get("format") != FILE_SIZES_FORMAT:
        return False
    version = data.get("format_version")
    return isinstance(version, int) and version > FILE_SIZES_VERSION


def _recorded_sizes(data: Any) -> dict[str, int] | None:
    """The ``files`` of a parsed :data:`FILE_SIZES`, or None when it is not that format."""
    if not isinstance(data, Mapping) or data.get("format") != FILE_SIZES_FORMAT:
        return None
    if data.get("format_version") != FILE_SIZES_VERSION or not isinstance(data.get("files"), dict):
        return None
    files = data["files"]
    for rel, size in files.items():
        # Read from disk, so checked before it names paths to stat: relative, inside the step.
        parts = rel.split("/")
        if not rel or rel.startswith("/") or ".." in parts or "" in parts:
            return None
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return None
    return dict(sorted(files.items()))


def _size_problem(path: Path, expected: int) -> str | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return " is missing"
    except OSError as err:
        return f" cannot be read ({err.strerror})"
    if not stat.S_ISREG(info.st_mode):
        return " is not a regular file"
    return _compare(info.st_size, expected)


def _compare(size: int | None, expected: int) -> str | None:
    if size is None:
        return " is missing"
    if size < expected:
        return f": {size} bytes, expected {expected} (truncated)"
    if size > expected:
        return f": {size} bytes, expected {expected} (longer than written)"
    return None


def recorded_files_problem(step_dir: Any) -> str | None:
    """Why ``step_dir``'s files differ from those its commit recorded in ``tjx_files.json``.

    None when they match, when the step has no such list (saved before it existed) and when
    the list is of a later version than this reader knows. Only sizes are compared (one
    ``lstat`` per file), which is what a truncated copy, a disk that lost a file's tail or a
    deleted data file changes, and orbax would otherwise find out with one failed read per leaf.

    Returns
    -------
    str or None
        The first differing file (in path order) and the count, e.g. ``state/d/ff15...: 954
        bytes, expected 1908 (truncated), 8 of 21 files in tjx_files.json differ``.
    """
    try:
        raw = (step_dir / FILE_SIZES).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"{FILE_SIZES} cannot be read ({err.strerror})"
    try:
        data = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        data = None
    if _newer_list(data):
        # Written by a later tjx-ckpt: not this reader's to judge. Its tjx manifest's version
        # then says "upgrade tjx-ckpt" (CheckpointMismatchError) instead of a skip as corrupt.
        return None
    sizes = _recorded_sizes(data)
    if sizes is None:
        # Written and fsynced before the commit marker like the rest: damaged, not old.
        return f"{FILE_SIZES} is not the file list tjx-ckpt writes"
    if storage.is_remote(step_dir):  # one listing instead of a request per object
        actual = objects.file_sizes(step_dir)
        bad = [
            rel + problem
            for rel, size in sizes.items()
            if (problem := _compare(actual.get(rel), size)) is not None
        ]
    else:
        bad = [
            rel + problem
            for rel, size in sizes.items()
            if (problem := _size_problem(step_dir / rel, size)) is not None
        ]
    if not bad:
        return None
    # ", " not "; ": the manager joins the reasons of several steps with "; ".
    return f"{bad[0]}, {len(bad)} of {len(sizes)} files in {FILE_SIZES} differ"


def array_store_problem(item_dir: Any) -> str | None:
    """Why the OCDBT store of the arrays in ``item_dir`` cannot be opened, or None.

    Only what the file system shows is checked (the root manifest is there and not empty): it is
    what orbax would otherwise find out one failed read per leaf.
    """
    root = item_dir / OCDBT_ROOT
    name = f"{item_dir.name}/{OCDBT_ROOT}"
    try:
        if storage.is_remote(root):
            size = int(storage.filesystem(root).info(os.fspath(root)).get("size") or 0)
        else:
            size = root.stat().st_size
    except FileNotFoundError:
        return f"{name} is missing (the root of its array store)"
    except OSError as err:
        return f"{name} cannot be read ({err})"
    if size == 0:
        return f"{name} is empty (the root of its array store)"
    return None


@dataclasses.dataclass(frozen=True)
class _NoStepMetadata(ocp.path.step.Metadata):
    """A step whose ``_CHECKPOINT_METADATA`` orbax must not read (see the module docstring).

    Its public timestamps say "none", as for a step without that file: its time is the folder's
    modification time and keep-N / best-K count it as usual. Restoring it is refused by
    :func:`commit_problem`.
    """

    @property
    def init_timestamp_nsecs(self) -> int | None:
        return None

    @property
    def commit_timestamp_nsecs(self) -> int | None:
        return None


def _checked(metadata: Any) -> Any:
    if step_metadata_problem(storage.as_path(str(metadata.path))) is None:
        return metadata
    return _NoStepMetadata(step=metadata.step, path=metadata.path)


@dataclasses.dataclass(frozen=True)
class CheckedNameFormat:
    """orbax's step naming (``inner``), minus the step metadata orbax would fail on.

    Given to orbax's ``CheckpointManagerOptions.step_name_format``: orbax reads every listed
    step's ``_CHECKPOINT_METADATA`` when a manager is opened or reloaded, and one malformed file
    would otherwise make that raise or log an error. Listing itself is unchanged.
    """

    inner: Any

    def build_name(self, step: int) -> str:
        """The folder name of ``step``."""
        return str(self.inner.build_name(step))

    def find_all(self, base_path: Any) -> Iterator[Any]:
        """Every committed step under ``base_path``."""
        return (_checked(m) for m in self.inner.find_all(base_path))

    def find_step(self, base_path: Any, step: int) -> Any:
        """The committed ``step`` under ``base_path``; ValueError when there is none."""
        return _checked(self.inner.find_step(base_path, step))


__all__ = [
    "OCDBT_ROOT",
    "STEP_METADATA",
    "CheckedNameFormat",
    "array_store_problem",
    "commit_problem",
    "recorded_files_problem",
    "step_metadata_problem",
]
