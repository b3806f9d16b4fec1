"""Packages installed once into a scratch folder for tests, never into the project's resolve.

`target_install` runs ``uv pip install --no-deps --target`` into a temporary folder beside
``folder`` and renames it into place (atomic), under a lock (tests in parallel batches share one
copy), and keeps a marker naming what it holds: a later call with the same packages returns at
once. ``--no-deps``: the packages use the resolve's own versions of everything else (no second
jax). Used for jax's CUDA plugin and libtpu (deviceless compiles, tests_integration/_deviceless.py)
and for tokamax (tjx_tokamax_env).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def target_install(folder: Path, packages: list[str], marker: str) -> tuple[Path, float | None]:
    """Install ``packages`` into ``folder`` once (module docstring).

    Parameters
    ----------
    folder : Path
        The scratch folder (its parent is created).
    packages : list of str
        Pinned requirements (``name==version``).
    marker : str
        The file in ``folder`` that records ``packages`` and the install's seconds.

    Returns
    -------
    tuple of (Path, float or None)
        ``folder`` and the seconds its cold install took (None when it was there).
    """
    from uv import find_uv_bin

    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        done = folder / marker
        if done.is_file() and json.loads(done.read_text())["packages"] == packages:
            return folder, None
        tmp = folder.with_name(f"{folder.name}.tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        started = time.perf_counter()
        result = subprocess.run(
            [find_uv_bin(), "pip", "install", "--quiet", "--no-deps", "--python", sys.executable,
             "--target", str(tmp), *packages],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"installing {packages} failed:\n{result.stderr[-3000:]}"
        seconds = time.perf_counter() - started
        (tmp / marker).write_text(json.dumps({"packages": packages, "install_s": seconds}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder, seconds
