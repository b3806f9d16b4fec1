"""The attention kernel a model takes on the current kernel target, read from its config.

tjx.kernels ranks the kernels ``attention_impl: auto`` may take by what was measured on the device
kind and tries them with the caller's compile (`tjx.kernels.choose_kernel`); what it needs of the
model (compute dtype, head size, a logit soft-cap cuDNN cannot take) is the config's. Under a
context split attention runs over blocks of one kernel's separate forward and backward halves:
cuDNN has none, so the choice is the block kernel (`tjx.kernels.block_kernel`), said in one line
with nothing compiled. A trainer and an evaluator say their choice this one way.
"""

from __future__ import annotations

from collections.abc import Callable

from tjx import kernels
from tjx.nn.configs import TransformerConfig

__all__ = ["choose_attention_kernel", "split_kernel_line"]


def split_kernel_line(
    config: TransformerConfig,
    ways: int,
    strategy: str,
    named_by: str = "model.attention_impl",
) -> str | None:
    """The ``attention:`` line of a model whose sequences are split over ``ways`` context devices
    (None when ``ways`` is 1): the block kernel and how the blocks cross devices (``strategy``).

    Raises
    ------
    ValueError
        ``config.attention_impl`` has no split forward and backward (cuDNN).
    """
    if ways == 1:
        return None
    impl = config.attention_impl
    windowed = any(w is not None for w in config.layer_windows())
    # A window masks by each token's original place: the XLA blocks take it (token_index).
    block = "xla" if impl == "auto" and windowed else kernels.block_kernel(impl)
    how = "windowed, " if windowed else ""
    return (
        f"attention: {block} blocks, {strategy} across mesh.context={ways} "
        f"({how}{named_by}={impl}; cuDNN has no split forward and backward)"
    )


def choose_attention_kernel(
    config: TransformerConfig,
    build: Callable[[str], object],
    say: Callable[[str], None],
    *,
    context_ways: int = 1,
    context_strategy: str = "ring",
    say_xla: bool = False,
    named_by: str = "model.attention_impl",
) -> tuple[str, bool]:
    """The attention kernel ``config`` takes and whether it is a fallback.

    Parameters
    ----------
    config : TransformerConfig
        The model (``attention_impl`` auto or a kernel's name).
    build : callable
        ``build(kernel)`` lowers and compiles the caller's step with ``kernel``; raises on failure.
    say : callable
        Where the lines go.
    context_ways, context_strategy
        The devices each sequence is split over and how its blocks cross them: over 1, the
        config's own kernel, its block kernel said (`split_kernel_line`), nothing built.
    say_xla : bool
        Say an ``attention_impl`` of ``"xla"`` too (it needs no choice: by default it is silent).
    named_by : str
        The setting that names the kernel, for the lines.

    Returns
    -------
    (str, bool)
        The kernel, and whether it is not the first of its order (`tjx.kernels.choose_kernel`).

    Raises
    ------
    tjx.kernels.KernelCompileError
        The kernel named, or every kernel tried, failed to lower or compile.
    ValueError
        A named kernel that cannot serve the model (cuDNN with a soft-cap, or across a split).
    """
    impl = config.attention_impl
    line = split_kernel_line(config, context_ways, context_strategy, named_by)
    if line is not None:  # the blocks of a context split: no cuDNN, nothing to choose
        say(line)
        return impl, False
    if impl == "xla" and not say_xla:
        return impl, False
    capped = config.attn_logit_softcap is not None  # cuDNN cannot soft-cap (Gemma 2)
    dtype, head_dim = config.precision.compute_dtype, config.head_dim
    assert head_dim is not None  # a built config's checks fill it (d_model // num_heads)
    return kernels.choose_kernel(
        impl, dtype, head_dim, build, named_by=named_by, say=say, softcap=capped
    )
