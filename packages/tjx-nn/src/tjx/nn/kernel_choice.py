"""The attention kernels a model runs on the current kernel target, read from its config:
`resolve_attention`, the one resolution, where the model's parts are built.

Each kind of attention layer (`ATTENTION_KINDS`: a decoder's causal self-attention, an encoder's
bidirectional one, an encoder-decoder's cross-attention) asks ``tjx.kernels.resolve_attention``
for its kernel with the config's name, compute dtype, the width its kernels see
(`attention_width`; DeepSeek's MLA: the wider of keys and values), a soft cap, a window without a
causal mask, attention sinks and a per-query key selection (``mla.key_selection``: DeepSeek
Sparse Attention's top-k keys; XLA only: a fused kernel named for them is refused in one line,
`SPARSE_REFUSAL`). `resolve_attention` resolves
each kind a config's model builds (``attention_layers``, a class attribute of the config) into a
`ModelAttention`: a `Stack` is built from it, and its blocks' layers run those kernels without
resolving again (an `Attention` built alone resolves its own kind). A resolution is kept for its
exact arguments, target and launch tables, so the builds of one run (the memory fit's abstract
model, then the run's own) share it.

Given a ``build`` (an app's compile of its step with a kernel: the trainer's train step, a plan's
step for another device, the evaluator's), `resolve_attention` first chooses the kernel that
compiles: tjx.kernels ranks the kernels ``attention_impl: auto`` may take by what was measured on
the device kind (`tjx.kernels.kernel_order`), each is compiled in turn until one does
(`tjx.kernels.first_that_compiles`, one line per kernel that fails), and the choice is said once.
Under a context split attention runs over blocks of one kernel's separate forward and backward
halves: cuDNN has none, so the choice is the block kernel (`tjx.kernels.block_kernel`), said in
one line with nothing compiled. A trainer and an evaluator say their choice this one way.
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
    "ModelAttention",
    "attention_width",
    "delta_kernel_line",
    "layer_kind",
    "resolve_attention",
    "split_kernel_line",
]

#: The kinds of attention layer: a decoder's causal self-attention, an encoder's bidirectional
#: self-attention, an encoder-decoder's cross-attention (its keys from the encoder's output).
ATTENTION_KINDS = ("causal", "bidirectional", "cross")


#: Why a fused kernel cannot run a per-query key selection (its name and the selection's
#: formatted in, ``mla.key_selection``).
SPARSE_REFUSAL = (
    "attention_impl {!r} cannot run {}: the cudnn, "
    "pallas and tokamax kernels take a mask of causal/segments/window/chunk/sinks, not each "
    "query's own top-k keys; set attention_impl to 'xla' (or 'auto', which takes it)"
)


def layer_kind(*, causal: bool, cross: bool) -> str:
    """The `ATTENTION_KINDS` entry of an attention layer built with ``causal`` and ``cross``."""
    return "cross" if cross else "causal" if causal else "bidirectional"


@dataclasses.dataclass(frozen=True)
class _Call:
    """What one kind of attention layer asks of ``tjx.kernels.resolve_attention``: its arguments."""

    implementation: str
    dtype: Any
    width: int
    softcap: bool
    bidirectional_window: bool
    #: The layers add attention sinks (gpt-oss; served by XLA only).
    sinks: bool = False
    #: The layers keep each query's own keys (the ``mla`` section's key selection, named: DeepSeek
    #: Sparse Attention's; XLA only), or None.
    sparse: str | None = None


def attention_width(config: TransformerConfig, kind: str) -> int:
    """The head width the kernels of ``config``'s attention layers of ``kind`` see: ``head_dim``,
    or for DeepSeek's MLA self-attention the wider of ``head_dim`` and the value heads."""
    return _call(config, kind).width


def _call(config: TransformerConfig, kind: str) -> _Call:
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
    deepseek = c.attention.type == "mla" and not cross and mla.is_deepseek(c.attention, c.mla)
    width = max(c.head_dim, mla.value_dim(c)) if deepseek else c.head_dim
    window = None if cross else c.attention.sliding_window
    return _Call(
        c.attention_impl,
        c.precision.compute_dtype,
        width,
        softcap=c.attention.logit_softcap is not None,
        bidirectional_window=window is not None and kind == "bidirectional",
        sinks=c.attention.sinks and not cross,
        sparse=c.mla.key_selection if deepseek else None,
    )


# (_Call, Target) -> (the launch tables it was resolved with, the kernel). The tables are held
# (not their id) so that tables read again (`tjx.kernels.launch.clear_launch_cache`, a changed
# table path) resolve again; the entries are few (one per kind of layer and target).
_RESOLVED: dict[tuple[_Call, kernels.Target], tuple[object, kernels.AttentionKernel]] = {}


def _layer_kernel(
    config: TransformerConfig, kind: str, target: kernels.Target | None
) -> kernels.AttentionKernel:
    """The kernel ``config``'s attention layers of ``kind`` run on ``target`` (default: current),
    kept for its arguments, target and launch tables (a ``ValueError`` line for a named kernel
    that cannot serve these layers there)."""
    call = _call(config, kind)
    if call.sparse is not None and call.implementation not in ("auto", "xla"):
        raise ValueError(SPARSE_REFUSAL.format(call.implementation, call.sparse))
    t = kernels.current_target() if target is None else target
    # Only `auto` on a CUDA GPU reads the launch tables' measurements (elsewhere none are read:
    # a bad tables file there stays unread, as in tjx.kernels).
    tables = load_launch_tables() if t.cuda and call.implementation == "auto" else None
    held = _RESOLVED.get((call, t))
    if held is not None and held[0] is tables:
        return held[1]
    kernel = kernels.resolve_attention(
        call.implementation,
        call.dtype,
        call.width,
        target=t,
        softcap=call.softcap,
        bidirectional_window=call.bidirectional_window,
        sinks=call.sinks or call.sparse is not None,  # both: XLA only ("auto" is XLA)
    )
    if len(_RESOLVED) >= 64:  # a long test session: forget the oldest
        del _RESOLVED[next(iter(_RESOLVED))]
    _RESOLVED[(call, t)] = (tables, kernel)
    return kernel


@dataclasses.dataclass(frozen=True)
class ModelAttention:
    """A model's attention, resolved (`resolve_attention`): ``by_kind`` pairs each kind of its
    attention layers (`ATTENTION_KINDS`) with the kernel they run; ``name`` is the
    ``attention_impl`` they were resolved from (with a ``build``: the one that compiled) and
    ``fell_back`` whether that is not the first kernel of its order."""

    by_kind: tuple[tuple[str, kernels.AttentionKernel], ...]
    name: str = "auto"
    fell_back: bool = False
    #: What each kind's layers asked (`_Call`) and of which target, in ``by_kind``'s order:
    #: a model of another config is not served by these kernels (`serves`).
    asked: tuple[tuple[_Call, kernels.Target], ...] = dataclasses.field(
        default=(), compare=False, repr=False
    )

    def serves(self, config: TransformerConfig) -> bool:
        """Whether these are the kernels ``config``'s model would resolve on the current kernel
        target: each kind resolved, for what ``config``'s layers of that kind ask. A model built
        with them (``attention=``) resolves nothing; another config's must resolve its own."""
        return len(self.by_kind) > 0 and all(
            self._serves(config, i) for i in range(len(self.by_kind))
        )

    def _serves(self, config: TransformerConfig, i: int) -> bool:
        if len(self.asked) != len(self.by_kind):  # not made by `resolve_attention`
            return False
        kind = self.by_kind[i][0]
        return self.asked[i] == (_call(config, kind), kernels.current_target())

    def kernel(self, kind: str, config: TransformerConfig | None = None) -> kernels.AttentionKernel:
        """The kernel of the layers of ``kind``; a ``ValueError`` for a kind not resolved, or,
        given the ``config`` of the layer about to be built, one resolved for another config's
        layers or another device (`serves`)."""
        for i, (name, kernel) in enumerate(self.by_kind):
            if name == kind:
                if config is not None and not self._serves(config, i):
                    raise ValueError(
                        f"the attention kernels given ({self.name}) were resolved for another "
                        "model config or device; pass resolve_attention(config) of this model's "
                        "config"
                    )
                return kernel
        resolved = ", ".join(name for name, _ in self.by_kind)
        raise ValueError(
            f"ModelAttention: no {kind!r} attention was resolved (only {resolved}); resolve "
            "the model's config with resolve_attention"
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


def resolve_attention(
    config: TransformerConfig,
    *,
    kinds: Sequence[str] | None = None,
    target: kernels.Target | None = None,
    build: Callable[[str], object] | None = None,
    say: Callable[[str], None] | None = None,
    context_ways: int = 1,
    context_strategy: str = "ring",
    say_xla: bool = False,
    named_by: str = "model.attention_impl",
) -> ModelAttention:
    """The attention kernels of ``config``'s model: the one resolution, where its parts are built
    (a `Stack` resolves its kinds; an app with a ``build`` chooses the kernel that compiles).

    Parameters
    ----------
    config : TransformerConfig
        The model's config (``attention_impl`` auto or a kernel's name).
    kinds : sequence of str, optional
        The kinds to resolve (`ATTENTION_KINDS`); default the config's ``attention_layers``.
    target : tjx.kernels.Target, optional
        The device; default ``tjx.kernels.current_target()``.
    build : callable, optional
        ``build(kernel)`` lowers and compiles the caller's step with ``kernel``, raising on
        failure: the kernels of the order are compiled in turn until one does (each failure a
        line through ``say``), the choice said once; a model with delta layers also has their
        rule's implementation said first (`delta_kernel_line`). None: nothing is compiled or
        said.
    say : callable, optional
        Where a ``build``'s lines go (default: print).
    context_ways, context_strategy
        The devices each sequence is split over and how its blocks cross them: over 1, the
        config's own kernel, its block kernel said (`split_kernel_line`), nothing built.
    say_xla : bool
        Say an ``attention_impl`` of ``"xla"`` too (it needs no choice: by default it is silent).
    named_by : str
        The setting that names the kernel, for the lines.

    Returns
    -------
    ModelAttention
        The kernel of each kind (with a ``build``: of the kernel that compiled, when it can
        serve each kind here), its name and whether it is a fallback.

    Raises
    ------
    tjx.kernels.KernelCompileError
        With a ``build``: the kernel named, or every kernel tried, failed to lower or compile.
    ValueError
        A named kernel that cannot serve the model (cuDNN with a soft-cap, or across a split).
    """
    names = type(config).attention_layers if kinds is None else tuple(kinds)
    if build is None:
        return _resolved(config, names, target, name=config.attention_impl, fell_back=False)
    chosen, fell_back = _compiling(
        config, build, say or print, context_ways, context_strategy, say_xla, named_by
    )
    # The kernels every model built from the choice here runs, resolved now, before any is
    # built (kept for the builds: an app keeps ``auto`` unless it fell back, and a model built
    # with it resolves to the same kernel). A named kernel that cannot serve the model here was
    # refused by the build, whose failure was said in one line.
    with contextlib.suppress(ValueError):
        chosen_config = config.replace(attention_impl=chosen) if fell_back else config
        return _resolved(chosen_config, names, target, name=chosen, fell_back=fell_back)
    return ModelAttention((), name=chosen, fell_back=fell_back)


def _resolved(
    config: TransformerConfig,
    kinds: Sequence[str],
    target: kernels.Target | None,
    *,
    name: str,
    fell_back: bool,
) -> ModelAttention:
    """The `ModelAttention` of ``config``'s layers of ``kinds`` on ``target`` (default: the
    current one), with what each kind asked (`ModelAttention.serves`)."""
    by_kind = tuple((kind, _layer_kernel(config, kind, target)) for kind in kinds)
    t = kernels.current_target() if target is None else target
    asked = tuple((_call(config, kind), t) for kind in kinds)
    return ModelAttention(by_kind, name=name, fell_back=fell_back, asked=asked)


def _compiling(
    config: TransformerConfig,
    build: Callable[[str], object],
    say: Callable[[str], None],
    context_ways: int,
    context_strategy: str,
    say_xla: bool,
    named_by: str,
) -> tuple[str, bool]:
    """The kernel `resolve_attention`'s ``build`` compiles, and whether it is a fallback."""
    impl = config.attention_impl
    delta = delta_kernel_line(config)
    if delta is not None:  # the delta layers' choice, said beside attention's
        say(delta)
    line = split_kernel_line(config, context_ways, context_strategy, named_by)
    if line is not None:  # the blocks of a context split: no cuDNN, nothing to choose
        say(line)
        return impl, False
    if impl == "xla" and not say_xla:
        return impl, False
    sparse = _call(config, "causal").sparse
    if sparse is not None:  # a per-query key selection: XLA only, nothing to rank
        if impl != "auto":
            raise ValueError(SPARSE_REFUSAL.format(impl, sparse))
        say(f"attention: xla ({named_by} auto: {sparse} runs on xla)")
        return "xla", False
    capped = config.attention.logit_softcap is not None  # cuDNN cannot soft-cap (Gemma 2)
    dtype, head_dim = config.precision.compute_dtype, config.head_dim
    assert head_dim is not None  # a built config's checks fill it (d_model // num_heads)
    order = kernels.kernel_order(impl, dtype, head_dim, named_by=named_by, say=say, softcap=capped)
    chosen = kernels.first_that_compiles(order, build, explicit=impl != "auto", say=say)
    return chosen, chosen != order[0]
