"""jax's CUDA plugin or libtpu in a scratch folder, for deviceless compiles (never in the resolve).

`scratch_env` installs a platform's packages once with ``uv pip install --target`` into
``~/.cache/tjx/deviceless/<name>`` (``$TJX_DEVICELESS_CACHE`` overrides the parent folder) and
keeps them: no second jax (``--no-deps``; the plugin matches the jax under test exactly), only
what a compile without a device needs. The CUDA plugin's other nvidia wheels (cuBLAS, cuFFT,
NCCL, ... several GB) are for running kernels, not compiling them, and are left out: cuDNN
(jax checks its version while tracing cuDNN attention) and ``ptxas`` (PTX to GPU code) are all
it needs. Installs are atomic (a temporary folder renamed into place) and serialised by a lock,
so tests in parallel batches share one copy; the cold install's seconds are kept beside it.
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

import jax

#: What each platform needs for a deviceless compile, pinned (the versions tried together).
PACKAGES = {
    "cuda12": [
        f"jax-cuda12-plugin=={jax.__version__}",
        f"jax-cuda12-pjrt=={jax.__version__}",
        "nvidia-cudnn-cu12==9.28.0.42",
        "nvidia-cuda-nvcc-cu12==12.9.86",
    ],
    "libtpu": ["libtpu==0.0.42.*"],
}
MARKER = "tjx-deviceless.json"


def cache_root() -> Path:
    """Where the scratch folders live."""
    default = Path.home() / ".cache" / "tjx" / "deviceless"
    return Path(os.environ.get("TJX_DEVICELESS_CACHE") or default)


def scratch_env(platform: str) -> tuple[Path, float | None]:
    """(folder to put on ``PYTHONPATH``, seconds its cold install took, None when cached)."""
    from uv import find_uv_bin

    packages = PACKAGES[platform]
    folder = cache_root() / f"jax{jax.__version__}-{platform}"
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = folder / MARKER
        if marker.is_file() and json.loads(marker.read_text())["packages"] == packages:
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
        (tmp / MARKER).write_text(json.dumps({"packages": packages, "install_s": seconds}))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        return folder, seconds
