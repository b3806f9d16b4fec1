"""JAX's persistent compilation cache for GPU runs: a process that compiles a step (and autotunes
its kernels) once leaves the executable on disk, and the next process with the same program skips
both. ``TJX_COMPILATION_CACHE_DIR`` names the folder (default ``~/.cache/tjx/jax-compilation``;
``off`` turns it off)."""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "TJX_COMPILATION_CACHE_DIR"
DEFAULT_DIR = Path("~/.cache/tjx/jax-compilation")
OFF = ("", "0", "off", "none", "false")


def compilation_cache_dir() -> Path | None:
    """The folder the setting names (None when it is turned off)."""
    value = os.environ.get(ENV_VAR)
    if value is not None and value.strip().lower() in OFF:
        return None
    return Path(value or DEFAULT_DIR).expanduser()


def enable_compilation_cache(*, only_on_gpu: bool = True) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`compilation_cache_dir`.

    Parameters
    ----------
    only_on_gpu : bool
        Leave CPU runs alone (their compiles are quick, and tests must not share a cache).

    Returns
    -------
    Path or None
        The cache folder, or None when nothing was enabled.
    """
    path = compilation_cache_dir()
    if path is None or (only_on_gpu and jax.default_backend() != "gpu"):
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
