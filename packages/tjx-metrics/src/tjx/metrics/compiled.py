"""A step compiled for a device that may not be here: the program, its memory, or why it failed.

A failed compile is kept as a finding (:class:`Compiled` ``.error``, the error's first line),
never raised: a plan reports it in one line. XLA's GPU compiler without autotuning (a deviceless
compile cannot autotune) gives each Triton GEMM a minimal tile config that a few shapes cannot
take; such a program is compiled again with cuBLAS GEMMs (:data:`CUBLAS_NOTE` says so), as a GPU
would autotune past it. :func:`fit_compiled` is a plan's memory fit: the step as configured, else
each lighter step in turn (full remat, more micro-batches...), until one fits the device's
:func:`budget_bytes`. Given a :class:`~tjx.metrics.compile_findings.CompileFindings`, a program
compiled before for the same target is read from it instead of compiled again.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from tjx.metrics.compile_findings import CompileFindings, Found
from tjx.metrics.memory import GIB, budget_bytes, peak_bytes, refused_text

__all__ = [
    "CUBLAS_NOTE",
    "UNTUNED_GEMM",
    "Compiled",
    "compile_lowered",
    "first_line",
    "fit_compiled",
]

T = TypeVar("T")

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
    kept : bool
        Read from a :class:`~tjx.metrics.compile_findings.CompileFindings` (compiled before):
        ``compiled`` is then its :class:`~tjx.metrics.compile_findings.CompiledText`.
    """

    label: str
    seconds: float
    compiled: Any = None
    error: str | None = None
    peak: int | None = None
    note: str | None = None
    kept: bool = False

    @property
    def took(self) -> str:
        """``"12.3 s"``, or ``"0.4 s, compiled before"`` when :attr:`kept`."""
        return f"{self.seconds:.1f} s" + (", compiled before" if self.kept else "")

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


def compile_lowered(
    lower: Callable[[], Any],
    label: str,
    started: float | None = None,
    findings: CompileFindings | None = None,
) -> Compiled:
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
    findings : CompileFindings, optional
        A deviceless target's kept findings: a program compiled before is read from it (the
        result's ``kept``), a new one is compiled and kept (and so is a refusal for memory).

    Returns
    -------
    Compiled
        The program and its peak, or the first line of why it did not lower or compile.
    """
    started = time.perf_counter() if started is None else started
    try:
        lowered = lower()
    except Exception as err:  # a failure is a finding: one line in the plan
        return Compiled(label, time.perf_counter() - started, error=first_line(err))
    key = findings.key(lowered) if findings is not None else None
    kept = findings.load(key) if findings is not None and key is not None else None
    if kept is not None:
        found, was_kept = kept, True
    else:
        found, was_kept = _compile(lowered), False
        # A refusal for memory is the compiler's answer for this program; another failure (a
        # missing tool, a crash) may not be: it is compiled again next time.
        answer = found.compiled is not None or (found.error or "").startswith("RESOURCE_EXHAUSTED")
        if findings is not None and key is not None and answer:
            findings.store(key, found)
    took = time.perf_counter() - started
    if found.compiled is None:
        return Compiled(label, took, error=found.error, note=found.note, kept=was_kept)
    peak = peak_bytes(found.compiled)["peak"]
    return Compiled(label, took, found.compiled, peak=peak, note=found.note, kept=was_kept)


def _compile(lowered: Any) -> Found:
    """``lowered`` compiled (once more without Triton GEMMs when XLA's untuned tiles refuse a
    shape), or the first line of why not."""
    try:
        try:
            return Found(lowered.compile())
        except Exception as err:  # retried once without Triton GEMMs, else reported
            if UNTUNED_GEMM not in str(err):
                raise
            options = {"xla_gpu_enable_triton_gemm": False}
            return Found(lowered.compile(compiler_options=options), note=CUBLAS_NOTE)
    except Exception as err:  # a failure is a finding: one line in the plan
        return Found(None, error=first_line(err))


def fit_compiled(
    first: Compiled,
    lighter: Iterable[tuple[T, Callable[[], Compiled]]],
    device: Any,
    say: Callable[[str], None],
) -> tuple[T | None, Compiled, dict[str, Any]]:
    """The first step that fits ``device``'s :func:`budget_bytes`: ``first``, else each of
    ``lighter`` in turn, one ``memory:`` line said per step sized.

    Parameters
    ----------
    first : Compiled
        The step as configured.
    lighter : iterable of (key, compile)
        Lighter steps in the order to try them; ``compile()`` is called only while the step
        before compiled (or was refused for its memory) and does not fit.
    device : Accelerator
        The device table's entry.
    say : callable
        Where the lines go.

    Returns
    -------
    (key, Compiled, dict)
        The key of the lighter step taken (None: ``first``, or none fits), the step the plan
        goes on with (``first`` when none fits), and the record: ``budget_bytes``, ``budget``,
        ``fits`` and every step ``tried`` (its ``change``, ``peak_bytes`` and ``error``).
    """
    budget, why = budget_bytes(device)

    def fits(c: Compiled) -> bool:
        return c.error is None and c.peak is not None and c.peak <= budget

    def sized(c: Compiled) -> bool:  # compiled, or refused only for its memory
        return c.error is None or c.out_of_memory

    key, step, tried = None, first, [first]
    for candidate, compile_ in lighter:
        if fits(step) or not sized(step):
            break
        key, step = candidate, compile_()
        tried.append(step)
    record: dict[str, Any] = {"budget_bytes": budget, "budget": why, "fits": fits(step)}
    record["tried"] = [{"change": c.label, "peak_bytes": c.peak, "error": c.error} for c in tried]
    for c in tried:
        if not sized(c):
            continue
        need = f"{c.peak / GIB:.2f} GiB" if c.peak is not None else refused_text(c.error or "")
        what = "as configured" if c is first else f"with {c.label}"
        say(f"memory: {what}: {need} per device {why}: {'fits' if fits(c) else 'does not fit'}")
    return (key, step, record) if fits(step) else (None, first, record)
