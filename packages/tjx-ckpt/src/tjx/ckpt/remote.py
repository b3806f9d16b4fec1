"""Checkpoints on object stores (``gs://``, ``s3://``): the commit marker is the commit.

An object store has no rename and no directories: a step cannot be written aside and moved
into place as on a local disk (`tjx.ckpt.durable`). What it does give: an object written with
one request (a PUT, or a finished upload) appears whole or not at all, and since then (GCS
always, S3 since December 2020) a listing or read sees it at once. So on a store:

1. orbax writes every object of step *s* straight under ``s/`` (its ``CommitFileTemporaryPath``
   mode, which tjx-ckpt selects for steps and items alike);
2. :class:`CommitMarkerTemporaryPath`'s commit then lists the step and writes ``tjx_files.json``
   (every object and its size, as on disk), and only then ``commit_success.txt``, last;
3. a step counts (is listed, restored, counted by keep-N) only when its marker is there
   (orbax's check for this mode). A crash before the marker leaves objects that nothing reads:
   the next writer removes them (:func:`remove_uncommitted`), and a save of the same step again
   replaces them;
4. an old step is deleted marker first (:func:`remove_step`): a crash in the middle leaves an
   uncommitted step, never a listed one with objects missing.

There is no fsync to do: a store acknowledges a write once it is durable (both replicate before
they answer). Standard library and fsspec (through `tjx.ckpt.storage`) only, plus orbax's public
``atomicity`` module for the commit class.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from orbax.checkpoint.path import atomicity

from tjx.ckpt.durable import COMMIT_MARKER, FILE_SIZES, FILE_SIZES_FORMAT, FILE_SIZES_VERSION
from tjx.ckpt.durable import STEP_METADATA
from tjx.ckpt.errors import CheckpointCommitError
from tjx.ckpt.storage import bucket_and_key, filesystem


def _url(path: Any) -> str:
    return os.fspath(path).rstrip("/")


def file_sizes(root: Any) -> dict[str, int]:
    """Size in bytes of every object under ``root``, by ``/``-separated relative path.

    One listing (fsspec ``find``), not cached: what the store holds now.
    """
    fs = filesystem(root)
    base = _url(root)
    bucket, key = bucket_and_key(base)
    prefix = f"{bucket}/{key}/" if key else f"{bucket}/"  # fsspec names objects "bucket/key"
    sizes: dict[str, int] = {}
    for name, info in fs.find(base, detail=True).items():
        if info.get("type", "file") == "file" and name.startswith(prefix):
            sizes[name[len(prefix) :]] = int(info.get("size") or 0)
    return dict(sorted(sizes.items()))


def write_whole(path: Any, data: bytes) -> None:
    """One object, written with one request: readers see the old object or all of ``data``."""
    filesystem(path).pipe_file(_url(path), data)


def read_bytes(path: Any) -> bytes:
    """The object's bytes (``FileNotFoundError`` when there is none)."""
    return bytes(filesystem(path).cat_file(_url(path)))


def committed_steps(directory: Any) -> list[int]:
    """Steps under ``directory`` whose commit marker is there, ascending (one listing)."""
    fs = filesystem(directory)
    try:
        markers = fs.glob(f"{_url(directory)}/*/{COMMIT_MARKER}")
    except FileNotFoundError:
        return []
    steps = {m.rstrip("/").split("/")[-2] for m in markers}
    return sorted(int(s) for s in steps if s.isdigit())


def step_prefixes(directory: Any) -> list[int]:
    """Every step number with objects under ``directory``, committed or not."""
    fs = filesystem(directory)
    try:
        entries = fs.ls(_url(directory), detail=False)
    except FileNotFoundError:
        return []
    names = {str(e).rstrip("/").split("/")[-1] for e in entries}
    return sorted(int(n) for n in names if n.isdigit())


def remove_step(step_dir: Any) -> None:
    """Delete a step marker first: from the first request on it is no longer committed."""
    fs = filesystem(step_dir)
    url = _url(step_dir)
    try:
        fs.rm_file(f"{url}/{COMMIT_MARKER}")
    except FileNotFoundError:
        pass
    try:
        fs.rm(url, recursive=True)
    except FileNotFoundError:
        pass


def remove_uncommitted(directory: Any) -> list[int]:
    """Delete the objects of every step without a commit marker (a save a crash cut short, a
    deletion a crash cut short); returns their steps. Only a writer calls it, before saving."""
    committed = set(committed_steps(directory))
    debris = [s for s in step_prefixes(directory) if s not in committed]
    for step in debris:
        remove_step(f"{_url(directory)}/{step}")
    return debris


def record_and_commit(step_dir: Any, marker_text: str) -> None:
    """Write ``tjx_files.json`` (every object of the step and its size), then the marker.

    Raises
    ------
    CheckpointCommitError
        A request failed: the marker was not written, so the step is not committed.
    """
    url = _url(step_dir)
    try:
        sizes = file_sizes(url)
        sizes.pop(FILE_SIZES, None)
        sizes.pop(COMMIT_MARKER, None)
        record = {"format": FILE_SIZES_FORMAT, "format_version": FILE_SIZES_VERSION, "files": sizes}
        write_whole(f"{url}/{FILE_SIZES}", json.dumps(record, indent=1).encode("utf-8"))
        write_whole(f"{url}/{COMMIT_MARKER}", marker_text.encode("utf-8"))
    except Exception as err:  # any request failing: fsspec, botocore, aiohttp types
        raise CheckpointCommitError(
            f"checkpoint step {url.rsplit('/', 1)[-1]} was not committed: {err}. Its objects "
            f"stay in {url} (never listed without {COMMIT_MARKER}; removed when a manager next "
            "opens the directory for writing)"
        ) from err


class CommitMarkerTemporaryPath(atomicity.CommitFileTemporaryPath):
    """orbax's commit-file step commit, plus the file list before the marker (module docstring).

    Given to orbax as the step's ``temporary_path_class`` on object stores; item folders keep
    orbax's plain commit file (the step's marker covers them).
    """

    def __init__(
        self,
        *args: Any,
        checkpoint_metadata_store: Any = None,
        snapshot_type: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            *args,
            checkpoint_metadata_store=checkpoint_metadata_store,
            snapshot_type=snapshot_type,
            **kwargs,
        )
        self._tjx_store = checkpoint_metadata_store

    async def finalize(self) -> None:
        """Records the commit time in the step metadata, then :func:`record_and_commit`."""
        await asyncio.to_thread(self._commit, self.get_final())

    def _commit(self, final: Any) -> None:
        store = self._tjx_store
        if store is not None:  # as orbax's finalize: the commit time, written before the marker
            store.wait_until_finished()
            store.update(file_path=final / STEP_METADATA, commit_timestamp_nsecs=time.time_ns())
            store.wait_until_finished()
        record_and_commit(final, f"Checkpoint commit was successful to {final}")


__all__ = [
    "CommitMarkerTemporaryPath",
    "committed_steps",
    "file_sizes",
    "read_bytes",
    "record_and_commit",
    "remove_step",
    "remove_uncommitted",
    "step_prefixes",
    "write_whole",
]
