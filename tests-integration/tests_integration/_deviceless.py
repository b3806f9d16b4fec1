"""jax's CUDA plugin or libtpu in a scratch folder, for deviceless compiles (never in the resolve).

`scratch_env` installs a platform's packages once with ``uv pip install --target`` into
``~/.cache/tjx/deviceless/<name>`` (``$TJX_DEVICELESS_CACHE`` overrides the parent folder) and
keeps them: no second jax (``--no-deps``; the plugin matches the jax under test exactly), only
what a compile without a device needs. The CUDA plugin's other nvidia wheels (cuBLAS, cuFFT,
NCCL, ... several GB) are for running kernels, not compiling them, and are left out: cuDNN
(jax checks its version while tracing cuDNN attention) and ``ptxas`` (PTX to GPU code) are all
it needs. Installs are atomic and serialised by a lock (tests-support's `target_install`), so
tests in parallel batches share one copy; the cold install's seconds are kept beside it.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
from tjx_scratch import target_install

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
    folder = cache_root() / f"jax{jax.__version__}-{platform}"
    return target_install(folder, PACKAGES[platform], MARKER)
