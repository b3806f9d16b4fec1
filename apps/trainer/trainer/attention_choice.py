"""The run's attention kernel, proven to compile before anything is written.

tjx.kernels decides which kernels ``model.attention_impl: auto`` may take and in what order (by
what was measured on this device kind; :func:`tjx.kernels.auto_order`). The trainer says the
choice once, then compiles the train step abstractly (no parameter is created) with each kernel in
turn until one compiles: a kernel that fails to lower or compile costs one printed line, never the
run. A kernel named in the config that fails is one error line (exit 2, nothing written). XLA, the
last resort, is not compiled here: every platform compiles it, and the memory fit compiles it next.
After a fallback the config carries the kernel that compiled (``model.attention_impl`` may differ
on a resume).

Under context parallelism (``mesh.context`` > 1) attention is tjx.parallel's ring (or all-gather)
over blocks of one kernel's separate forward and backward halves: cuDNN has none, so the line
names the block kernel (`tjx.kernels.block_kernel`: auto is Pallas on a CUDA GPU, else XLA) and
nothing is compiled here (the abstract step below is one device's).
"""

from __future__ import annotations

from collections.abc import Callable

from trainer.config import Config
from trainer.memory_fit import step_peak
from trainer.schema import ConfigError


def choose_attention(
    cfg: Config,
    *,
    build: Callable[[Config], object] = step_peak,
    say: Callable[[str], None] = lambda line: print(line, flush=True),
) -> Config:
    """``cfg`` with the attention kernel that compiles, saying the choice (see module doc).

    Parameters
    ----------
    cfg : Config
        The run's config (``model.attention_impl`` auto or a kernel's name), its vocabulary known.
    build : callable
        Lowers and compiles the step of a config (by default its abstract step for the default
        device: nothing runs); raises on failure (tests inject failures).
    say : callable
        Where the lines go.

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
    """The attention kernel ``cfg`` takes over ``devices`` devices and whether it is a fallback
    (`tjx.kernels.choose_kernel` with ``build(kernel)``: the run's compile, or ``--plan``'s for
    its target); the config's own under a context split (its line said) or with xla (said only
    when ``say_xla``). Raises `tjx.kernels.KernelCompileError` as that does."""
    from tjx import kernels

    impl, m = cfg.model.attention_impl, cfg.model
    line = split_kernel_line(cfg, devices)
    if line is not None:  # the blocks of a context split: no cuDNN, nothing to choose
        say(line)
        return impl, False
    if impl == "xla" and not say_xla:
        return impl, False
    capped = m.attn_logit_softcap is not None  # cuDNN cannot soft-cap (Gemma 2)
    dtype, named = m.precision.compute_dtype, "model.attention_impl"
    return kernels.choose_kernel(
        impl, dtype, m.head_dim, build, named_by=named, say=say, softcap=capped
    )


def split_kernel_line(cfg: Config, devices: int) -> str | None:
    """The ``attention:`` line of a run whose sequences are split over the context devices of
    ``devices`` (None when they are not): the block kernel and how the blocks cross devices."""
    from tjx import kernels, parallel
    from trainer.state import check_context

    try:
        sizes = dict(zip(parallel.MESH_AXES, cfg.mesh.resolve(devices), strict=True))
    except ValueError:  # a mesh that does not fit the devices: the mesh's own line says so
        return None
    ways, impl = sizes[parallel.CONTEXT_AXIS], cfg.model.attention_impl
    if ways == 1:
        return None
    check_context(cfg, ways)  # cudnn, or pallas with a window: one line naming the key
    windowed = any(w is not None for w in cfg.model.layer_windows())
    # a window masks by each token's original place: the XLA blocks take it (token_index)
    block = "xla" if impl == "auto" and windowed else kernels.block_kernel(impl)
    how = "windowed, " if windowed else ""
    return (
        f"attention: {block} blocks, {cfg.mesh.context_strategy} across mesh.context={ways} "
        f"({how}model.attention_impl={impl}; cuDNN has no split forward and backward)"
    )
