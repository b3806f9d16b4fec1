"""Logs in object storage: a ``gs://`` / ``s3://`` path is read and written whole, through
`etils.epath` (fsspec's gcsfs / s3fs underneath, the endpoint and credential settings they read:
``STORAGE_EMULATOR_HOST``, ``AWS_ENDPOINT_URL``, the standard credential places).

An object cannot be appended to: a log there is kept in memory and written as one object, which
the store shows whole or not at all (see :class:`~tjx.metrics.loggers.jsonl.JsonlLogger`).
Standard library at import; etils for the first URL.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["is_url", "read_bytes", "write_bytes"]

_URL = re.compile(r"^(gs|s3)://", re.IGNORECASE)


def is_url(path: Any) -> bool:
    """Whether ``path`` is a ``gs://`` or ``s3://`` URL."""
    return isinstance(path, str | os.PathLike) and bool(_URL.match(os.fspath(path)))


def _epath(url: Any) -> Any:
    from etils import epath  # pants: no-infer-dep  (orbax-checkpoint's dependency)

    return epath.Path(os.fspath(url))


def read_bytes(url: Any) -> bytes:
    """The object's bytes; ``FileNotFoundError`` when there is none."""
    return bytes(_epath(url).read_bytes())


def write_bytes(url: Any, data: bytes) -> None:
    """Write ``data`` as the whole object (one upload)."""
    _epath(url).write_bytes(data)
