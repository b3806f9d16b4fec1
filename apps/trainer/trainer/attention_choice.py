"""The run's attention kernel, proven to compile before anything is written.

tjx.nn's `choose_attention_kernel` says the choice once (tjx.kernels ranks what ``auto`` may take
by what was measured on this device kind), then the train step is compiled abstractly with each
kernel in turn until one compiles: a kernel that fails costs one line, never the run; a kernel
named in the config that fails is one error line (exit 2, nothing written). XLA, the last resort,
is not compiled here (every platform compiles it; the memory fit compiles it next). After a
fallback the config carries the kernel that compiled. Under a context split (``mesh.context`` >
1) the line names the block kernel and nothing is compiled (the abstract step is one device's).
"""

from __future__ import annotations

from collections.abc import Callable

from trainer.memory_fit import step_peak
from trainer.config import Config
from trainer.schema import ConfigError


def choose_attention(
    cfg: Config,
    *,
    build: Callable[[Config], object] = step_peak,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> Config:
    """``cfg`` with the attention kernel that compiles, saying the choice; ``build`` lowers and
    compiles a config's step (by default its abstract step: nothing runs), raising on failure.

    Raises
    ------
    ConfigError
        A kernel named in the config cannot serve the model or fails to lower or compile.
    """
    import jax

    from tjx import kernels

    def build_kernel(kernel: str) -> object:
        # The abstract step is a decoder's: other tasks' kernels are traced (and proven) late.
        return build(cfg.with_model(attention_impl=kernel)) if cfg.task == "lm" else None

    try:
        chosen, fell_back = choose_kernel(cfg, jax.device_count(), build_kernel, say)
    except kernels.KernelCompileError as err:
        raise ConfigError(
            f"{err}; set model.attention_impl=auto to let tjx choose (or xla)"
        ) from None
    # With no fallback, "auto" stays: it resolves to the same kernel while tracing.
    return cfg.with_model(attention_impl=chosen) if fell_back else cfg


def choose_kernel(
    cfg: Config,
    devices: int,
    build: Callable[[str], object],
    say: Callable[[str], None],
    *,
    say_xla: bool = False,
) -> tuple[str, bool]:
    """tjx.nn's `choose_attention_kernel` of ``cfg`` over ``devices`` devices (``build(kernel)``:
    the run's compile, or ``--plan``'s for its target), a context split's rules checked first."""
    from tjx import nn, parallel
    from trainer.state import check_context

    try:
        ways = dict(zip(parallel.MESH_AXES, cfg.mesh.resolve(devices), strict=True))
    except ValueError:  # a mesh that does not fit the devices: the mesh's own line says so
        ways = {}
    context = ways.get(parallel.CONTEXT_AXIS, 1)
    check_context(cfg, context)  # cudnn, or pallas with a window: one line naming the key
    strategy = cfg.mesh.context_strategy
    return nn.choose_attention_kernel(
        cfg.model, build, say, context_ways=context, context_strategy=strategy, say_xla=say_xla
    )
