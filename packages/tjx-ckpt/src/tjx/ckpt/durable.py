"""Durable commits: a step survives power loss once it is listed, not just process death.

orbax 0.12.8 commits a step by writing ``commit_success.txt`` into ``<step>.orbax-checkpoint-tmp``
and renaming that directory to ``<step>`` (``AtomicRenameTemporaryPath``), with no ``fsync`` at
all. A process kill cannot lose that (the page cache belongs to the kernel), but after a power
loss or OS crash the rename may be on disk while file contents or directory entries written
before it are not: a listed step with empty JSON files or missing entries.

What is already synced, seen with ``strace -f -e fsync`` on a save (tensorstore 0.1.86): the
array data is written by tensorstore, whose ``file_io_sync`` context option defaults to true and
which orbax never turns off. It fsyncs each file it writes (OCDBT ``d/*`` data files,
``manifest.ocdbt``, ``_sharding``) and the directory it wrote into. Everything orbax writes from
Python is not synced: ``_CHECKPOINT_METADATA``, each item's ``commit_success.txt``, the JSON items
(``data_state/metadata``, ``config/metadata``, ``manifest/metadata``, ``metrics/metrics``), the
PyTree handler's ``_METADATA`` and ``array_metadatas/process_*``, the item directories renamed
inside the step, the step directory itself and the parent entry created by the final rename.

:class:`DurableAtomicRenameTemporaryPath` replaces orbax's class for the step directory and, in
this order: fsyncs every file orbax wrote and every directory inside the step (tensorstore's are
skipped: no per-leaf fsync storm, whatever the number of leaves), writes and fsyncs the commit
marker, fsyncs the step directory, renames it, and fsyncs the parent directory. Only then does
orbax go on (and delete old steps), so an old step can never be deleted on disk before its
successor is durable. A failure before the rename leaves only the temporary directory (never
listed, removed by the next manager); a failure of the final parent fsync renames the step back.

Cost, measured on a tiny checkpoint (ext4 on a virtual disk, 2 busy cores): 18 fsyncs per step
(17 + the parent; the count grows with the number of items and processes, not of leaves), a
synchronous save took 76 ms instead of 71 ms (medians of 18). Done one after another the 16 tree
fsyncs took ~40 ms; issued concurrently (:func:`fsync_all`) ~4 ms. Async saves pay it in
orbax's background thread. Not configurable: there is nothing worth trading for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from orbax.checkpoint._src.metadata import checkpoint as checkpoint_metadata
from orbax.checkpoint._src.path import atomicity

from tjx.ckpt.errors import CheckpointCommitError

TMP_DIR_SUFFIX = atomicity.TMP_DIR_SUFFIX
COMMIT_MARKER = atomicity.COMMIT_SUCCESS_FILE
# Files and directories tensorstore writes (and fsyncs itself) inside a PyTree item directory.
_TENSORSTORE_DIRS = ("d",)
_TENSORSTORE_DIR_PREFIX = "ocdbt.process_"
_TENSORSTORE_FILES = ("manifest.ocdbt", "_sharding")
# Directory fsync is not supported everywhere (some FUSE / network filesystems say EINVAL);
# there it cannot be had at all, so it is skipped rather than failing every save.
_DIR_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)
_MAX_FSYNC_THREADS = 16


def _tensorstore_owned(rel: Path) -> bool:
    """Whether ``rel`` (relative to the step directory) is synced by tensorstore itself."""
    inner = rel.parts[1:]  # inside an item directory (``state/...``)
    if not inner:
        return False
    if any(p in _TENSORSTORE_DIRS or p.startswith(_TENSORSTORE_DIR_PREFIX) for p in inner[:-1]):
        return True
    return len(inner) == 1 and inner[0] in _TENSORSTORE_FILES


def fsync_file(path: Path) -> None:
    """``fsync`` one regular file (opened read-only: fsync flushes the inode, not the fd)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as err:
        raise OSError(err.errno, f"fsync failed: {err.strerror}", str(path)) from err
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """``fsync`` a directory, making its entries (creations, renames) durable."""
    if not hasattr(os, "O_DIRECTORY"):  # Windows: a directory cannot be opened to fsync it
        return
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _DIR_FSYNC_UNSUPPORTED:
            raise OSError(err.errno, f"fsync failed: {err.strerror}", str(path)) from err
    finally:
        os.close(fd)


def _fsync(path: Path) -> None:
    (fsync_dir if path.is_dir() else fsync_file)(path)


def fsync_all(paths: list[Path]) -> None:
    """fsyncs ``paths`` (files or directories) concurrently; the first failure is raised.

    Concurrent fsyncs share journal commits on ext4/XFS (group commit) instead of paying one
    each in turn (16 on a tiny step: ~40 ms serial, ~4 ms concurrent). Their order does not
    matter: all finish before the commit marker is written.
    """
    if len(paths) <= 1:
        for path in paths:
            _fsync(path)
        return
    with ThreadPoolExecutor(max_workers=min(len(paths), _MAX_FSYNC_THREADS)) as pool:
        for future in [pool.submit(_fsync, path) for path in paths]:
            future.result()


def tree_to_sync(root: Path) -> list[Path]:
    """Files and directories under ``root`` (not ``root``) that tensorstore did not sync."""
    out: list[Path] = []
    for current, subdirs, names in os.walk(root):
        here = Path(current)
        rel = here.relative_to(root)
        # Prune tensorstore's own directories: it fsynced their files and entries.
        subdirs[:] = [d for d in subdirs if not _tensorstore_owned(rel / d / "x")]
        out.extend(here / d for d in subdirs)
        out.extend(here / n for n in names if not _tensorstore_owned(rel / n))
    return sorted(out)


def durable_commit(tmp: Path, final: Path, marker_text: str) -> None:
    """Makes ``tmp`` durable, writes the commit marker, renames ``tmp`` to ``final``, syncs.

    Raises
    ------
    CheckpointCommitError
        An fsync, the marker write or the rename failed. ``final`` does not exist afterwards.
    """
    try:
        fsync_all(tree_to_sync(tmp))
        marker = tmp / COMMIT_MARKER
        marker.write_text(marker_text, encoding="utf-8")
        # After every data file and directory: the marker, then the step directory's entries
        # (the marker and the renamed item directories).
        fsync_file(marker)
        fsync_dir(tmp)
        os.rename(tmp, final)
    except OSError as err:
        raise CheckpointCommitError(
            f"checkpoint step {final.name} was not committed: {err}. The partial save stays in "
            f"{tmp} (never listed; removed when a manager next opens {final.parent})"
        ) from err
    try:
        fsync_dir(final.parent)  # the rename itself
    except OSError as err:
        # Without a durable parent entry the step is not committed; undo the rename so that it
        # is not listed in this run either (a later restore would otherwise take it).
        with contextlib.suppress(OSError):  # if the undo fails too, the first error counts
            os.rename(final, tmp)
        raise CheckpointCommitError(
            f"checkpoint step {final.name} was not committed: fsync of {final.parent} after "
            f"the rename failed: {err}. The step was moved back to {tmp}"
        ) from err


class DurableAtomicRenameTemporaryPath(atomicity.AtomicRenameTemporaryPath):
    """orbax's atomic-rename commit with fsyncs (see the module docstring).

    Item directories inside a step's temporary directory keep orbax's plain finalize: they are
    not commits on their own, and the step's commit syncs them.
    """

    async def finalize(self) -> None:
        """Updates the step metadata's commit time, then :func:`durable_commit`."""
        final = Path(self.get_final())
        if TMP_DIR_SUFFIX in final.parent.name or self._snapshot is not None:
            await super().finalize()
            return
        await asyncio.to_thread(self._commit, Path(self.get()), final)

    def _commit(self, tmp: Path, final: Path) -> None:
        # As orbax 0.12.8's AtomicRenameTemporaryPath.finalize: record the commit timestamp in
        # _CHECKPOINT_METADATA and wait for that write, so that the sync below includes it.
        store = self._checkpoint_metadata_store
        if store is not None:
            store.wait_until_finished()
            store.update(
                file_path=checkpoint_metadata.step_metadata_file_path(self.get()),
                commit_timestamp_nsecs=time.time_ns(),
            )
            store.wait_until_finished()
        durable_commit(tmp, final, f"Checkpoint commit was successful to {final}")


__all__ = [
    "DurableAtomicRenameTemporaryPath",
    "durable_commit",
    "fsync_all",
    "fsync_dir",
    "fsync_file",
    "tree_to_sync",
]
