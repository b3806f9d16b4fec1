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
from typing import Any

from orbax.checkpoint.path import atomicity

from tjx.ckpt.durable import (
    COMMIT_MARKER,
    FILE_SIZES,
    FILE_SIZES_FORMAT,
    FILE_SIZES_VERSION,
    MetadataStoreMixin,
)
from tjx.ckpt.errors import CheckpointCommitError
from tjx.ckpt.objects import file_sizes, write_whole


def record_and_commit(step_dir: Any, marker_text: str) -> None:
    """Write ``tjx_files.json`` (every object of the step and its size), then the marker.

    Raises
    ------
    CheckpointCommitError
        A request failed: the marker was not written, so the step is not committed.
    """
    url = str(step_dir).rstrip("/")
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


class CommitMarkerTemporaryPath(MetadataStoreMixin, atomicity.CommitFileTemporaryPath):
    """orbax's commit-file step commit, plus the file list before the marker (module docstring).

    Given to orbax as the step's ``temporary_path_class`` on object stores; item folders keep
    orbax's plain commit file (the step's marker covers them).
    """

    async def finalize(self) -> None:
        """Records the commit time in the step metadata, then :func:`record_and_commit`."""
        await asyncio.to_thread(self._commit, self.get_final())

    def _commit(self, final: Any) -> None:
        self._record_commit_time(final)  # before the marker
        record_and_commit(final, f"Checkpoint commit was successful to {final}")


__all__ = [
    "CommitMarkerTemporaryPath",
    "record_and_commit",
]
