"""Device memory before a run: XLA's peak of a compiled computation, and what a device can use.

A step compiled from abstract shapes (``jax.jit(f).lower(*shape_dtype_structs).compile()``)
materialises nothing, yet XLA's memory analysis of it says how many bytes the step will need.
Comparing that peak with :func:`available_bytes` before the first parameter is created turns an
out-of-memory kill mid-compile or mid-step into a decision taken up front (remat, a smaller batch).
:func:`first_fit` is that decision: it compiles candidates (the step as configured, then with
remat, ...) in order and keeps the first whose peak fits, reporting each one as it goes.
"""

from __future__ import annotations

import numbers
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "GIB",
    "MemoryCheck",
    "MemoryFit",
    "available_bytes",
    "budget_bytes",
    "first_fit",
    "peak_bytes",
    "refused_bytes",
    "refused_text",
]

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


@dataclass(frozen=True)
class MemoryCheck:
    """One candidate of :func:`first_fit`: its compiled peak against the memory available.

    Attributes
    ----------
    name : str
        The candidate's name, as given.
    peak, budget : int
        Bytes the compiled computation needs, and bytes available.
    """

    name: str
    peak: int
    budget: int
    #: The compiler refused the program for its memory (a TPU's): ``peak`` is a lower bound.
    refused: bool = False

    @property
    def fits(self) -> bool:
        """Whether the peak is within the budget."""
        return not self.refused and self.peak <= self.budget

    def __str__(self) -> str:
        # The name is the sentence's subject: "the train step needs 5.72 GiB; ...".
        need = (
            f"more than {self.peak / GIB:.2f} GiB" if self.refused else f"{self.peak / GIB:.2f} GiB"
        )
        return f"{self.name} needs {need}; {self.budget / GIB:.2f} GiB available"


@dataclass(frozen=True)
class MemoryFit:
    """What :func:`first_fit` found.

    Attributes
    ----------
    budget : int or None
        Bytes available; ``None`` when unknown, and then nothing was compiled.
    checks : tuple of MemoryCheck
        Each candidate compiled, in order; the search stops at the first that fits.
    """

    budget: int | None
    checks: tuple[MemoryCheck, ...] = ()

    @property
    def chosen(self) -> str | None:
        """The name of the first candidate that fits; ``None`` when none does (or no budget)."""
        return self.checks[-1].name if self.checks and self.checks[-1].fits else None

    def report(self) -> str:
        """One line per candidate compiled: ``<name> needs 5.00 GiB; 3.00 GiB available``."""
        return "\n".join(str(check) for check in self.checks)


_REFUSED = re.compile(r"\(([\d.]+)([KMGT])\) exceeds available")


def refused_bytes(err: BaseException) -> int | None:
    """What a compiler that refused a program for its memory says it needed (bytes; 0 when it
    gives no figure), or None when ``err`` is not such a refusal. A TPU's compiler refuses with
    ``RESOURCE_EXHAUSTED: ... memory required for HLO temporaries (27.98G) exceeds available HBM
    (15.75G)`` (binary units)."""
    text = str(err).lstrip()
    if not text.startswith("RESOURCE_EXHAUSTED"):
        return None
    found = _REFUSED.search(text)
    if found is None:
        return 0
    return int(float(found.group(1)) * 1024 ** "KMGT".index(found.group(2)) * 1024)


def first_fit(
    candidates: Iterable[tuple[str, Callable[[], Any]]],
    *,
    budget: int | None = None,
    device: Any = None,
    on_check: Callable[[MemoryCheck], None] | None = None,
) -> MemoryFit:
    """The first candidate whose compiled peak fits in the memory available, and each one's peak.

    Parameters
    ----------
    candidates : iterable of (name, compile)
        Tried in order. ``compile()`` returns a compiled computation (its :func:`peak_bytes`
        ``peak`` counts) or the peak itself in bytes; it is called only when every earlier
        candidate was too big, so an expensive fallback costs nothing when the first fits.
    budget : int, optional
        Bytes available; defaults to :func:`available_bytes` of ``device``.
    device
        The ``jax.Device`` whose memory counts (default ``jax.devices()[0]``).
    on_check : callable, optional
        Called with each :class:`MemoryCheck` as soon as it is known (a compile can take
        minutes: a caller may say what it found before the next one starts).

    A ``compile()`` that raises because the compiler refused the program for its memory (a TPU's
    ``RESOURCE_EXHAUSTED``, :func:`refused_bytes`) is a candidate that does not fit
    (``refused=True``), not an error; any other exception propagates.

    Returns
    -------
    MemoryFit
        ``.chosen`` names the candidate that fits (``None``: none does, or the budget is
        unknown), ``.checks`` has every peak measured, ``.budget`` the bytes compared against.

    Examples
    --------
    >>> fit = first_fit([("plain", lambda: 5 * GIB), ("remat", lambda: 2 * GIB)], budget=3 * GIB)
    >>> fit.chosen, [c.fits for c in fit.checks]
    ('remat', [False, True])
    >>> print(fit.report())
    plain needs 5.00 GiB; 3.00 GiB available
    remat needs 2.00 GiB; 3.00 GiB available
    """
    budget = available_bytes(device) if budget is None else budget
    if budget is None:
        return MemoryFit(None)
    checks: list[MemoryCheck] = []
    for name, compile_ in candidates:
        try:
            compiled = compile_()
        except Exception as err:  # a compiler that refuses a program too big for the device
            needed = refused_bytes(err)
            if needed is None:
                raise
            check = MemoryCheck(name, max(needed, int(budget) + 1), int(budget), refused=True)
        else:
            peak = (
                compiled if isinstance(compiled, numbers.Integral) else peak_bytes(compiled)["peak"]
            )
            check = MemoryCheck(name, int(peak), int(budget))
        checks.append(check)
        if on_check is not None:
            on_check(check)
        if check.fits:
            break
    return MemoryFit(int(budget), tuple(checks))


def budget_bytes(device: Any) -> tuple[int, str]:
    """Bytes a step may use on a device of the table that may not be here, and why.

    On a GPU, JAX's allocator takes ``XLA_PYTHON_CLIENT_MEM_FRACTION`` (default 0.75) of the
    memory; a TPU's compiler itself refuses a program larger than the chip's HBM.

    Parameters
    ----------
    device : Accelerator
        The device table's entry (``memory_bytes``, ``platform``, ``name``).

    Returns
    -------
    (int, str)
        The bytes, and the words a plan's ``memory:`` line says them with.
    """
    total = int(device.memory_bytes)
    if device.platform != "gpu":
        return total, f"of the {device.name}'s {total / GIB:.1f} GiB"
    fraction = float(os.environ.get("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.75"))
    why = (
        f"of the {total * fraction / GIB:.1f} GiB JAX takes of the {device.name}'s "
        f"{total / GIB:.1f} GiB (XLA_PYTHON_CLIENT_MEM_FRACTION={fraction:g})"
    )
    return int(total * fraction), why


def devices_for_bytes(nbytes: int, device: Any) -> int:
    """The fewest devices of ``device``'s kind whose :func:`budget_bytes` hold ``nbytes`` split
    evenly over them: a floor for a run's train state (nothing beside it, no activation).

    Parameters
    ----------
    nbytes : int
        The bytes to hold (a train state's parameters and optimizer state).
    device : Accelerator
        The device table's entry.

    Returns
    -------
    int
        At least 1.
    """
    budget, _ = budget_bytes(device)
    return max(1, -(-int(nbytes) // budget))


_REFUSED_FIGURES = re.compile(r"\(([\d.]+[KMGT]?)\) exceeds available HBM \(([\d.]+[KMGT]?)\)")


def refused_text(error: str) -> str:
    """A TPU compiler's out-of-memory message in a few words (its figures when it gives them).

    Examples
    --------
    >>> refused_text("RESOURCE_EXHAUSTED: temporaries (27.98G) exceeds available HBM (15.75G)")
    '27.98G of temporaries alone (the compiler refuses it; 15.75G free)'
    """
    found = _REFUSED_FIGURES.search(error)
    if found is None:
        return "more than the chip has (the compiler refuses it)"
    return f"{found.group(1)} of temporaries alone (the compiler refuses it; {found.group(2)} free)"
