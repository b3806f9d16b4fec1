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

from trainer.config import Config
from trainer.schema import ConfigError


def compile_step(cfg: Config) -> None:
    """Lower and compile ``cfg``'s train step for the default device (abstract: nothing runs)."""
    from trainer.memory_fit import abstract_step

    step, state, batch = abstract_step(cfg)
    step.lower(state, batch).compile()


def choose_attention(
    cfg: Config,
    *,
    build: Callable[[Config], None] = compile_step,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> Config:
    """``cfg`` with the attention kernel that compiles, saying the choice (see module doc).

    Parameters
    ----------
    cfg : Config
        The run's config (``model.attention_impl`` auto or a kernel's name), its vocabulary known.
    build : callable
        Lowers and compiles the step of a config; raises on failure (tests inject failures).
    say : callable
        Where the lines go.

    Raises
    ------
    ConfigError
        A kernel named in the config cannot serve the model or fails to lower or compile.
    """
    from tjx import kernels

    impl = cfg.model.attention_impl
    if impl == "xla":
        return cfg
    dtype, head_dim = cfg.model.precision.compute_dtype, cfg.model.head_dim
    order = kernels.kernel_order(impl, dtype, head_dim, named_by="model.attention_impl", say=say)
    if cfg.task != "lm":  # the abstract step is a decoder's; other tasks trace it late
        return cfg
    try:
        chosen = kernels.first_that_compiles(
            order,
            lambda kernel: build(cfg.with_model(attention_impl=kernel)),
            explicit=impl != "auto",
            say=say,
        )
    except kernels.KernelCompileError as err:
        raise ConfigError(
            f"{err}; set model.attention_impl=auto to let tjx choose (or xla)"
        ) from None
    # With no fallback, "auto" stays: it resolves to the same kernel while tracing.
    return cfg if chosen == order[0] else cfg.with_model(attention_impl=chosen)
