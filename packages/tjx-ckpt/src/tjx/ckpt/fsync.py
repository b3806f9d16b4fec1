"""``fsync`` of one file or one directory (standard library only).

In a module of its own so that `tjx.ckpt.folder`, which an app may import before jax (or after a
Ctrl-C cut jax's import short), syncs its files without importing orbax; `tjx.ckpt.durable`
uses the same two functions for a step's commit.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

# Directory fsync is not supported everywhere (some FUSE / network filesystems say EINVAL);
# there it cannot be had at all, so it is skipped rather than failing every save.
DIR_FSYNC_UNSUPPORTED = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP)


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
        if err.errno not in DIR_FSYNC_UNSUPPORTED:
            raise OSError(err.errno, f"fsync failed: {err.strerror}", str(path)) from err
    finally:
        os.close(fd)


__all__ = ["DIR_FSYNC_UNSUPPORTED", "fsync_dir", "fsync_file"]
