"""The evaluation's attention kernel, proven to compile before the held-out pass.

Chosen as the trainer chooses (tjx.nn's `resolve_attention` with the evaluator's compile:
tjx.kernels ranks the kernels ``auto`` may take, the choice is said once and the evaluator's step
compiled with each kernel in turn until one compiles, one line per kernel that fails); a kernel
named in the run's model that fails is one error line (exit 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
from flax import nnx

from eval.runs import LoadedRun, RunError, rebuilt
from tjx import kernels, nn


def with_kernel(
    run: LoadedRun, kernel: str, attention: nn.ModelAttention | None = None
) -> LoadedRun:
    """``run`` whose model takes ``kernel`` (the attention kernel is part of the module graph),
    its layers running ``attention`` (the kernels resolved for it; None: its own resolution)."""
    if run.nn_config.attention_impl == kernel:
        return run
    config = dataclasses.replace(run.nn_config, attention_impl=kernel)
    return dataclasses.replace(run, nn_config=config, model=rebuilt(run, config, attention))


def compile_step(run: LoadedRun, batch: Mapping[str, Any], make_step: Callable[[Any], Any]) -> None:
    """Lower and compile the held-out step of ``run``'s model on ``batch``'s shapes."""
    params = nnx.to_pure_dict(nnx.state(run.model, nnx.Param))
    shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
    make_step(run.model).lower(params, shapes).compile()


def choose_attention(
    run: LoadedRun,
    first: Mapping[str, Any] | None,
    *,
    make_step: Callable[[Any], Any],
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> LoadedRun:
    """``run`` with the attention kernel that compiles for its held-out step on the shapes of
    ``first`` (the first held-out batch; ``None``: there is none, and the evaluation says so
    itself), saying the choice.

    Raises
    ------
    RunError
        The run's model names a kernel that fails to lower or compile here.
    """
    if first is None:
        return run
    try:
        resolved = nn.resolve_attention(
            run.nn_config,
            build=lambda k: compile_step(with_kernel(run, k), first, make_step),
            say=say,
            named_by="the run's model.attention_impl",
        )
    except kernels.KernelCompileError as err:
        raise RunError(f"{err}; evaluate on another device, or retrain with auto") from None
    # With no fallback the run's model, built as it was loaded, resolved to the same kernels;
    # after one it is rebuilt with the choice's (resolved once, here).
    return with_kernel(run, resolved.name, resolved) if resolved.fell_back else run
