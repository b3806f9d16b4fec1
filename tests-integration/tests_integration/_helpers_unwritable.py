"""Folders that cannot be written into although ``os.access`` says they can (for root).

As root (a container's usual user) a ``chmod`` binds nobody, so the tests make a folder
immutable (``chattr +i``): making anything in it fails with EPERM, as on a read-only mount.
As another user, a plain ``chmod 555`` does the same. `writable_again` undoes every one.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

_MADE: list[Path] = []


def make_unwritable(path: Path) -> None:
    """``path`` (an existing folder) can no longer be written into, by root either."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i", str(path)], check=True, capture_output=True)
    else:
        path.chmod(0o555)
    _MADE.append(path)
    probe = path / ".probe"
    try:
        probe.mkdir()
    except OSError:
        return
    probe.rmdir()
    raise AssertionError(f"{path} is still writable: the test's premise does not hold")


def writable_again() -> None:
    """Undo every `make_unwritable` (so the test's folder can be removed)."""
    while _MADE:
        path = _MADE.pop()
        if os.geteuid() == 0:
            subprocess.run(["chattr", "-i", str(path)], check=False, capture_output=True)
        path.chmod(0o755)
