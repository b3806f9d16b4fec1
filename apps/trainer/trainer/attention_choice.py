"""The run's attention kernel, proven to compile before anything is written.

tjx.kernels decides which kernels ``model.attention_impl: auto`` may take and in what order (by
what was measured on this device kind; :func:`tjx.kernels.auto_order`). The trainer says the
choice once, then compiles the train step abstractly (no parameter is created) with each kernel in
turn until one compiles: a kernel that fails to lower or compile costs one printed line, never the
run. A kernel named in the config that fails is one error line (exit 2, nothing written). XLA, the
last resort, is not compiled here: every platform compiles it, and the memory fit compiles it next.
After a fallback the config carries the kernel that compiled (``model.attention_impl`` may differ
on a resume).
"""

from __future__ import annotations

from collections.abc import Callable

from trainer.resolved import Resolved
from trainer.schema import ConfigError


def with_kernel(run: Resolved, kernel: str) -> Resolved:
    """``run`` with ``model.attention_impl`` set to ``kernel`` (a replace, not a re-read)."""
    return run.with_model(attention_impl=kernel)


def compile_step(run: Resolved) -> None:
    """Lower and compile ``run``'s train step for the default device (abstract: nothing runs)."""
    from trainer.memory_fit import abstract_step

    step, state, batch = abstract_step(run)
    step.lower(state, batch).compile()


def choose_attention(
    run: Resolved,
    *,
    build: Callable[[Resolved], None] = compile_step,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> Resolved:
    """``run`` with the attention kernel that compiles, saying the choice (see module doc).

    Parameters
    ----------
    run : Resolved
        The run (``model.attention_impl`` auto or a kernel's name), its vocabulary known.
    build : callable
        Lowers and compiles the step of a run; raises on failure (tests inject failures).
    say : callable
        Where the lines go.

    Raises
    ------
    ConfigError
        A kernel named in the config cannot serve the model or fails to lower or compile.
    """
    from tjx import kernels

    impl = run.model.attention_impl
    if impl == "xla":
        return run
    dtype, head_dim = run.model.precision.compute_dtype, run.model.head_dim
    order = kernels.kernel_order(impl, dtype, head_dim, named_by="model.attention_impl", say=say)
    if run.cfg.task != "lm":  # the abstract step is a decoder's; other tasks trace it late
        return run
    try:
        chosen = kernels.first_that_compiles(
            order,
            lambda kernel: build(with_kernel(run, kernel)),
            explicit=impl != "auto",
            say=say,
        )
    except kernels.KernelCompileError as err:
        raise ConfigError(
            f"{err}; set model.attention_impl=auto to let tjx choose (or xla)"
        ) from None
    # With no fallback, "auto" stays: it resolves to the same kernel while tracing.
    return run if chosen == order[0] else with_kernel(run, chosen)
