"""Objects of a ``gs://`` / ``s3://`` directory: whole-object reads and writes, listings, and
deleting a step marker first. Standard library at import; fsspec (gcsfs, s3fs) through
`tjx.ckpt.storage` on first use, so that `tjx.ckpt.folder` can use it without orbax or jax.

A step counts only when its commit marker is there (see `tjx.ckpt.remote`).
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Any

from tjx.ckpt.storage import bucket_and_key, filesystem

#: The commit marker of a step (orbax's ``COMMIT_SUCCESS_FILE``), spelled out: no orbax here.
COMMIT_MARKER = "commit_success.txt"


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


def create_whole(path: Any, data: bytes) -> None:
    """One object written with one request only if none is there: ``FileExistsError`` when one
    is (the store's own precondition, checked and written as one step: GCS
    ``ifGenerationMatch=0``, S3 ``If-None-Match: *``; fsspec's ``mode="create"``). Of two
    processes creating the same object at once, exactly one succeeds."""
    filesystem(path).pipe_file(_url(path), data, mode="create")


def age_s(path: Any) -> float:
    """Seconds since the object was last written, by the store's clock against this machine's
    (``FileNotFoundError`` when there is none)."""
    return time.time() - filesystem(path).modified(_url(path)).timestamp()


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
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(f"{url}/{COMMIT_MARKER}")
    with contextlib.suppress(FileNotFoundError):
        fs.rm(url, recursive=True)


def remove_uncommitted(directory: Any) -> list[int]:
    """Delete the objects of every step without a commit marker (a save a crash cut short, a
    deletion a crash cut short); returns their steps. Only a writer calls it, before saving."""
    committed = set(committed_steps(directory))
    debris = [s for s in step_prefixes(directory) if s not in committed]
    for step in debris:
        remove_step(f"{_url(directory)}/{step}")
    return debris


__all__ = [
    "COMMIT_MARKER",
    "age_s",
    "committed_steps",
    "create_whole",
    "file_sizes",
    "read_bytes",
    "remove_step",
    "remove_uncommitted",
    "step_prefixes",
    "write_whole",
]
