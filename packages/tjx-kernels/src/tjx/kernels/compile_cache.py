"""JAX's persistent compilation cache for GPU runs: a process that compiles a step (and autotunes
its kernels) once leaves the executable on disk, and the next process with the same program skips
both. The caller names the folder (an app's config key); without one, ``TJX_COMPILATION_CACHE_DIR``
does (default ``~/.cache/tjx/jax-compilation``); ``off`` turns it off either way."""

from __future__ import annotations

import os
from pathlib import Path

import jax

ENV_VAR = "TJX_COMPILATION_CACHE_DIR"
DEFAULT_DIR = Path("~/.cache/tjx/jax-compilation")
OFF = ("", "0", "off", "none", "false")


def compilation_cache_dir(directory: str | Path | None = None) -> Path | None:
    """The folder ``directory`` names, or without it ``TJX_COMPILATION_CACHE_DIR`` (its default
    ``~/.cache/tjx/jax-compilation``); None when the setting is one of the words that turn it off
    (``off``, ``none``, ``false``, ``0``, an empty text)."""
    value = os.environ.get(ENV_VAR) if directory is None else str(directory)
    if value is not None and value.strip().lower() in OFF:
        return None
    return Path(value or DEFAULT_DIR).expanduser()


def enable_compilation_cache(
    directory: str | Path | None = None, *, only_on_gpu: bool = True
) -> Path | None:
    """Point JAX's persistent compilation cache at :func:`compilation_cache_dir` ``(directory)``.

    Parameters
    ----------
    directory : str or Path, optional
        The folder (an app's setting; ``"off"`` turns the cache off). None: the environment's.
    only_on_gpu : bool
        Leave CPU runs alone (their compiles are quick, and tests must not share a cache).

    Returns
    -------
    Path or None
        The cache folder, or None when nothing was enabled.
    """
    path = compilation_cache_dir(directory)
    if path is None or (only_on_gpu and jax.default_backend() != "gpu"):
        return None
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    return path
