"""The attention kernel a model takes on the current kernel target, read from its config.

**Resolved once, before the model is built.** `attention_call` is what one kind of attention
layer (`ATTENTION_KINDS`: a decoder's causal self-attention, an encoder's bidirectional one, an
encoder-decoder's cross-attention) asks of ``tjx.kernels.resolve_attention``: the config's name,
compute dtype, the width its kernels see (DeepSeek's MLA: the wider of keys and values), a soft cap,
a window without a causal mask, attention sinks (XLA only). `resolve_model_attention` resolves each
kind a config's model builds (``attention_layers``, a class attribute of the config) into a
`ModelAttention`; a `Stack` is built from it, and its blocks' layers run those kernels without
resolving again. A resolution is kept
(`resolve_layer_kernel`) for its exact arguments, target and launch tables, so an app that resolves
before building (the trainer's and the evaluator's kernel choice) builds its models from that very
resolution; a model built directly resolves itself, the same way. An `Attention` built alone
resolves its own kind.

tjx.kernels ranks the kernels ``attention_impl: auto`` may take by what was measured on the device
kind and tries them with the caller's compile (`tjx.kernels.choose_kernel`); what it needs of the
model (compute dtype, head size, a logit soft-cap cuDNN cannot take) is the config's. Under a
context split attention runs over blocks of one kernel's separate forward and backward halves:
cuDNN has none, so the choice is the block kernel (`tjx.kernels.block_kernel`), said in one line
with nothing compiled. A trainer and an evaluator say their choice this one way.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from tjx import kernels
from tjx.kernels.launch import load_launch_tables
from tjx.nn import mla
from tjx.nn.configs import TransformerConfig

__all__ = [
    "ATTENTION_KINDS",
    "AttentionCall",
    "ModelAttention",
    "attention_call",
    "choose_attention_kernel",
    "delta_kernel_line",
    "layer_kind",
    "resolve_layer_kernel",
    "resolve_model_attention",
    "split_kernel_line",
]

#: The kinds of attention layer: a decoder's causal self-attention, an encoder's bidirectional
#: self-attention, an encoder-decoder's cross-attention (its keys from the encoder's output).
ATTENTION_KINDS = ("causal", "bidirectional", "cross")


def layer_kind(*, causal: bool, cross: bool) -> str:
    """The `ATTENTION_KINDS` entry of an attention layer built with ``causal`` and ``cross``."""
    return "cross" if cross else "causal" if causal else "bidirectional"


@dataclasses.dataclass(frozen=True)
class AttentionCall:
    """What one kind of attention layer asks of ``tjx.kernels.resolve_attention``: its arguments."""

    implementation: str
    dtype: Any
    width: int
    softcap: bool
    bidirectional_window: bool
    #: The layers add attention sinks (gpt-oss; served by XLA only).
    sinks: bool = False

    def resolve(self, target: kernels.Target | None = None) -> kernels.AttentionKernel:
        """``tjx.kernels.resolve_attention`` of these arguments on ``target`` (default: the
        current one); raises its one-line ``ValueError`` for a kernel that cannot serve them."""
        return kernels.resolve_attention(
            self.implementation,
            self.dtype,
            self.width,
            target=target,
            softcap=self.softcap,
            bidirectional_window=self.bidirectional_window,
            sinks=self.sinks,
        )


def attention_call(config: TransformerConfig, kind: str) -> AttentionCall:
    """The kernel arguments of ``config``'s attention layers of ``kind`` (`ATTENTION_KINDS`).

    The width is ``head_dim``, or for DeepSeek's MLA self-attention the wider of ``head_dim`` and
    the value heads (its kernels see both at that width); a window applies to self-attention only,
    and is bidirectional in an encoder (cuDNN cannot serve that); a soft cap applies to every kind.
    """
    if kind not in ATTENTION_KINDS:
        raise ValueError(f"attention kind must be one of {ATTENTION_KINDS}; got {kind!r}")
    c = config
    assert c.head_dim is not None  # a built config's checks fill it (d_model // num_heads)
    cross = kind == "cross"
    deepseek = c.attention_type == "mla" and not cross and mla.is_deepseek(c)
    width = max(c.head_dim, mla.value_dim(c)) if deepseek else c.head_dim
    window = None if cross else c.sliding_window
    return AttentionCall(
        c.attention_impl,
        c.precision.compute_dtype,
        width,
        softcap=c.attn_logit_softcap is not None,
        bidirectional_window=window is not None and kind == "bidirectional",
        sinks=c.attention_sinks and not cross,
    )


# (AttentionCall, Target) -> (the launch tables it was resolved with, the kernel). The tables
# are held (not their id) so that tables read again (`tjx.kernels.launch.clear_launch_cache`, a
# changed table path) resolve again; the entries are few (one per kind of layer and target).
_RESOLVED: dict[tuple[AttentionCall, kernels.Target], tuple[object, kernels.AttentionKernel]] = {}


def resolve_layer_kernel(
    config: TransformerConfig, kind: str, *, target: kernels.Target | None = None
) -> kernels.AttentionKernel:
    """The kernel ``config``'s attention layers of ``kind`` run on ``target`` (default: current).

    Resolved once for its `attention_call`, target and launch tables: a later call with the same
    ones (a model built after its app resolved the kernel) returns that resolution.

    Raises
    ------
    ValueError
        A named kernel that cannot serve these layers there (``tjx.kernels``' one line).
    """
    call = attention_call(config, kind)
    t = kernels.current_target() if target is None else target
    # Only `auto` on a CUDA GPU reads the launch tables' measurements (elsewhere none are read:
    # a bad tables file there stays unread, as in tjx.kernels).
    tables = load_launch_tables() if t.cuda and call.implementation == "auto" else None
    held = _RESOLVED.get((call, t))
    if held is not None and held[0] is tables:
        return held[1]
    kernel = call.resolve(t)
    if len(_RESOLVED) >= 64:  # a long test session: forget the oldest
        del _RESOLVED[next(iter(_RESOLVED))]
    _RESOLVED[(call, t)] = (tables, kernel)
    return kernel


@dataclasses.dataclass(frozen=True)
class ModelAttention:
    """The kernel each kind of attention layer of a model runs (`resolve_model_attention`):
    ``by_kind`` pairs each kind (`ATTENTION_KINDS`) with its kernel."""

    by_kind: tuple[tuple[str, kernels.AttentionKernel], ...]

    def kernel(self, kind: str) -> kernels.AttentionKernel:
        """The kernel of the layers of ``kind``; a ``ValueError`` for a kind not resolved."""
        for name, kernel in self.by_kind:
            if name == kind:
                return kernel
        resolved = ", ".join(name for name, _ in self.by_kind)
        raise ValueError(
            f"ModelAttention: no {kind!r} attention was resolved (only {resolved}); resolve "
            "the model's config with resolve_model_attention"
        )


def resolve_model_attention(
    config: TransformerConfig,
    *,
    kinds: Sequence[str] | None = None,
    target: kernels.Target | None = None,
) -> ModelAttention:
    """The kernels of ``config``'s model, one per kind of attention layer it builds.

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    kinds : sequence of str, optional
        The kinds to resolve (`ATTENTION_KINDS`); default the config's ``attention_layers``.
    target : tjx.kernels.Target, optional
        The device; default ``tjx.kernels.current_target()``.

    Returns
    -------
    ModelAttention
        What a `Stack` built from it runs (`resolve_layer_kernel`: resolved once).

    Raises
    ------
    ValueError
        A named kernel that cannot serve one of the kinds there.
    """
    names = type(config).attention_layers if kinds is None else tuple(kinds)
    return ModelAttention(
        tuple((kind, resolve_layer_kernel(config, kind, target=target)) for kind in names)
    )


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


def delta_kernel_line(config: TransformerConfig) -> str | None:
    """The line that says who runs the delta layers' gated delta rule across chunks on the current
    kernel target (None for a model without delta layers), e.g. ``delta rule: xla (auto: no tjx
    measurement of the gated delta kernels ...)`` or ``delta rule: pallas (model.delta.impl)``."""
    if "delta" not in config.layer_mixers():
        return None
    impl = config.delta.impl
    if impl != "auto":
        return f"delta rule: {impl} (model.delta.impl)"
    choice = kernels.gated_delta_auto(dtype=config.precision.compute_dtype)
    return f"delta rule: {choice.kernel} (auto: {choice.reason})"


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
        A model with delta layers also has their rule's implementation said first
        (`delta_kernel_line`).

    Raises
    ------
    tjx.kernels.KernelCompileError
        The kernel named, or every kernel tried, failed to lower or compile.
    ValueError
        A named kernel that cannot serve the model (cuDNN with a soft-cap, or across a split).
    """
    impl = config.attention_impl
    delta = delta_kernel_line(config)
    if delta is not None:  # the delta layers' choice, said beside attention's (#68)
        say(delta)
    # The kernels every model built from `config` here runs, resolved now, before any is built
    # (`resolve_layer_kernel` keeps them for the builds). A named kernel that cannot serve the
    # model here is refused by the build below, whose failure is said in one line.
    with contextlib.suppress(ValueError):
        resolve_model_attention(config)
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
