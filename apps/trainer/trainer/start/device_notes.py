"""What a run says about its devices when it starts: which, the compilation cache, a CPU's pace."""

from __future__ import annotations

from pathlib import Path

import jax

from tjx.metrics.devices import device_summary

#: The line a run on CPU adds: it works, a GPU is the way to speed.
CPU_NOTE = "note: running on CPU — this works but is slow; a GPU runs the same command much faster."


def device_notes(cache: Path | None, cache_setting: str) -> list[str]:
    """A run's first lines about where it runs.

    Parameters
    ----------
    cache : Path or None
        The compilation cache folder in use (tjx-kernels' ``enable_compilation_cache``), or None.
    cache_setting : str
        The app's name for the setting that chooses it (``train.compilation_cache``).

    Returns
    -------
    list of str
        ``devices: ...`` (`device_summary`), ``compilation cache: FOLDER (SETTING; off to
        disable)`` with a cache, and `CPU_NOTE` when JAX runs on the CPU.
    """
    lines = [f"devices: {device_summary()}"]
    if cache is not None:
        lines.append(f"compilation cache: {cache} ({cache_setting}; off to disable)")
    if jax.default_backend() == "cpu":
        lines.append(CPU_NOTE)
    return lines


__all__ = ["CPU_NOTE", "device_notes"]
