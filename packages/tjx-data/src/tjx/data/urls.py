"""A run directory in object storage (``gs://``, ``s3://``) holds the run's trained tokenizer:
read and written whole through `etils.epath` (fsspec's gcsfs / s3fs underneath, which read
``STORAGE_EMULATOR_HOST`` / ``AWS_ENDPOINT_URL`` and the standard credentials). Standard library
at import; etils for the first URL. (The shard cache itself is local: `cache.local_cache_folder`.)
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["is_url", "read_text", "write_text"]

_URL = re.compile(r"^(gs|s3)://", re.IGNORECASE)


def is_url(path: Any) -> bool:
    """Whether ``path`` is a ``gs://`` or ``s3://`` URL."""
    return isinstance(path, str | os.PathLike) and bool(_URL.match(os.fspath(path)))


def read_text(url: Any) -> str:
    """The object's UTF-8 text; ``FileNotFoundError`` when there is none."""
    from etils import epath  # pants: no-infer-dep  (orbax-checkpoint's dependency)

    return str(epath.Path(os.fspath(url)).read_text(encoding="utf-8"))


def write_text(url: Any, text: str) -> None:
    """``text`` as the whole object (one upload)."""
    from etils import epath  # pants: no-infer-dep  (orbax-checkpoint's dependency)

    epath.Path(os.fspath(url)).write_text(text, encoding="utf-8")
