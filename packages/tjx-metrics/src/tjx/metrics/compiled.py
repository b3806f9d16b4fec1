"""A step compiled for a device that may not be here: the program, its memory, or why it failed.

A failed compile is kept as a finding (:class:`Compiled` ``.error``, the error's first line),
never raised: a plan reports it in one line. XLA's GPU compiler without autotuning (a deviceless
compile cannot autotune) gives each Triton GEMM a minimal tile config that a few shapes cannot
take; such a program is compiled again with cuBLAS GEMMs (:data:`CUBLAS_NOTE` says so), as a GPU
would autotune past it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tjx.metrics.memory import peak_bytes

__all__ = ["CUBLAS_NOTE", "UNTUNED_GEMM", "Compiled", "compile_lowered", "first_line"]

#: What XLA says when an untuned Triton GEMM has no tiles for a shape.
UNTUNED_GEMM = "Couldn't find output tile sizes"
CUBLAS_NOTE = (
    "XLA's untuned Triton GEMM has no tiles for a shape here (a deviceless compile cannot "
    "autotune); compiled with xla_gpu_enable_triton_gemm=false (cuBLAS GEMMs)"
)


@dataclass
class Compiled:
    """One step compiled for a target.

    Attributes
    ----------
    label : str
        What was compiled (a kernel's name, a changed setting).
    seconds : float
        Wall time of lowering and compiling.
    compiled : object
        The compiled program (None when it failed).
    error : str or None
        The failure's first line.
    peak : int or None
        Bytes per device (XLA's memory analysis; None when refused).
    note : str or None
        How it was compiled when not as usual (:data:`CUBLAS_NOTE`).
    """

    label: str
    seconds: float
    compiled: Any = None
    error: str | None = None
    peak: int | None = None
    note: str | None = None

    @property
    def out_of_memory(self) -> bool:
        """The compiler refused it for its memory (a TPU's ``RESOURCE_EXHAUSTED``)."""
        return self.error is not None and self.error.startswith("RESOURCE_EXHAUSTED")


def first_line(err: BaseException) -> str:
    """The first non-empty line of ``err`` (its type's name when it has none).

    Examples
    --------
    >>> first_line(ValueError("\\n  bad shape\\nmore"))
    'bad shape'
    """
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return lines[0] if lines else type(err).__name__


def compile_lowered(lower: Callable[[], Any], label: str, started: float | None = None) -> Compiled:
    """Lower (``lower()``) and compile a step; a failure is the result's ``error``, not raised.

    Parameters
    ----------
    lower : callable
        Returns the lowered step (``jax.jit(f).lower(...)``).
    label : str
        The result's label.
    started : float, optional
        ``time.perf_counter()`` when the work began (a caller that built the step first counts
        that too); now by default.

    Returns
    -------
    Compiled
        The program and its peak, or the first line of why it did not lower or compile.
    """
    started = time.perf_counter() if started is None else started
    note = None
    try:
        lowered = lower()
        try:
            compiled = lowered.compile()
        except Exception as err:  # retried once without Triton GEMMs, else reported
            if UNTUNED_GEMM not in str(err):
                raise
            compiled = lowered.compile(compiler_options={"xla_gpu_enable_triton_gemm": False})
            note = CUBLAS_NOTE
    except Exception as err:  # a failure is a finding: one line in the plan
        return Compiled(label, time.perf_counter() - started, error=first_line(err))
    took = time.perf_counter() - started
    return Compiled(label, took, compiled, peak=peak_bytes(compiled)["peak"], note=note)
