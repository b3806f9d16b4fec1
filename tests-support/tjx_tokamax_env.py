"""tokamax (tjx-kernels' optional ``gpu`` extra) in a scratch folder for tests, not the resolve.

`tokamax_env` installs tokamax at the version tjx-kernels pins (`TOKAMAX_VERSION`) with the
dependencies the project's resolve lacks, once, with ``uv pip install --no-deps --target`` into
``~/.cache/tjx/tokamax/tokamax<version>`` (``$TJX_TOKAMAX_CACHE`` overrides the parent folder),
atomically and under a lock (tjx_scratch's `target_install`, which also installs jax's CUDA
plugin for ``tests_integration/_deviceless.py``). ``--no-deps``: the resolve's jax,
pydantic, absl-py, tqdm, typing_extensions, tensorboardX, flax and opt_einsum serve tokamax and
qwix as they are (no second jax). The pins below are what ``uv pip install --dry-run -c
<the resolve's versions> tokamax==0.0.12`` resolved (2026-11-28): nothing in the resolve moves.
A test puts the folder on ``sys.path`` (`on_path`) or on a subprocess's ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tjx_scratch import target_install

from tjx.kernels.tokamax_ops import TOKAMAX_VERSION

#: tokamax and the dependencies the resolve does not hold, pinned (module docstring).
PACKAGES = [
    f"tokamax=={TOKAMAX_VERSION}",
    "einshape==1.0",
    "immutabledict==4.3.1",
    "jaxtyping==0.3.11",
    "qwix==0.1.8",
    "typeguard==2.13.3",
    "wadler-lindig==0.1.8",
]
MARKER = "tjx-tokamax.json"


def cache_root() -> Path:
    """Where the scratch folder lives."""
    default = Path.home() / ".cache" / "tjx" / "tokamax"
    return Path(os.environ.get("TJX_TOKAMAX_CACHE") or default)


def tokamax_env() -> tuple[Path, float | None]:
    """(folder to put on ``sys.path``/``PYTHONPATH``, seconds its cold install took, None when
    it was there)."""
    return target_install(cache_root() / f"tokamax{TOKAMAX_VERSION}", PACKAGES, MARKER)


def on_path() -> Path:
    """Install (once) and put the folder at the end of ``sys.path`` (the resolve's packages keep
    precedence); return it."""
    folder, seconds = tokamax_env()
    if seconds is not None:  # a cold install: how long it took, for CI's budget
        print(f"tokamax {TOKAMAX_VERSION}: installed in {seconds:.1f} s", file=sys.stderr)
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    return folder
