"""Device memory before a run: XLA's peak of a compiled computation, and what a device can use.

A step compiled from abstract shapes (``jax.jit(f).lower(*shape_dtype_structs).compile()``)
materialises nothing, yet XLA's memory analysis of it says how many bytes the step will need.
Comparing that peak with :func:`available_bytes` before the first parameter is created turns an
out-of-memory kill mid-compile or mid-step into a decision taken up front (remat, a smaller batch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["GIB", "available_bytes", "peak_bytes"]

GIB = 2**30
_MEMINFO = Path("/proc/meminfo")


def peak_bytes(compiled: Any) -> dict[str, int]:
    """XLA's memory analysis of a compiled computation, in bytes.

    Parameters
    ----------
    compiled
        A ``jax.stages.Compiled`` (``jax.jit(f).lower(...).compile()``), or anything whose
        ``memory_analysis()`` has ``argument_size_in_bytes``, ``output_size_in_bytes`` and
        ``temp_size_in_bytes`` (``alias_size_in_bytes`` optional).

    Returns
    -------
    dict[str, int]
        ``arguments``, ``outputs``, ``temporaries``, ``aliased`` and ``peak`` = arguments +
        outputs + temporaries − aliased (donated arguments reused as outputs count once).
    """
    m = compiled.memory_analysis()
    args, out, temp = m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes
    alias = getattr(m, "alias_size_in_bytes", 0)
    return {
        "arguments": int(args),
        "outputs": int(out),
        "temporaries": int(temp),
        "aliased": int(alias),
        "peak": int(args + out + temp - alias),
    }


def available_bytes(device: Any = None, *, meminfo: Path = _MEMINFO) -> int | None:
    """Memory a device can use: an accelerator's ``bytes_limit``, or the host's free RAM on CPU.

    Parameters
    ----------
    device
        A ``jax.Device``; defaults to ``jax.devices()[0]``.
    meminfo
        Where the host's ``MemAvailable`` is read on CPU (Linux's ``/proc/meminfo``).

    Returns
    -------
    int or None
        Bytes, or ``None`` when the device reports no limit or the host file is missing (not
        Linux), so the caller can skip its check rather than guess.
    """
    if device is None:
        import jax

        device = jax.devices()[0]
    if device.platform != "cpu":
        stats = device.memory_stats() or {}
        limit = stats.get("bytes_limit")
        return int(limit) if limit else None
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024  # the file counts kB
    return None
