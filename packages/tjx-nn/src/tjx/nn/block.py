"""One transformer layer: (self-attention, optional cross-attention, MLP) with its norms before
the sublayers (pre-LN), after the residual sum (post-LN), on both sides of each sublayer (Gemma's
sandwich) or on its output only (OLMo 2)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
from flax import nnx

from tjx.kernels import AttentionMask
from tjx.nn.attention import Attention
from tjx.nn.configs import TransformerConfig
from tjx.nn.families.parts import layer_input
from tjx.nn.family_config import LayerShape
from tjx.nn.gated_deltanet import DeltaState, GatedDeltaNet
from tjx.nn.kernel_choice import ModelAttention, layer_kind
from tjx.nn.kv_cache import LayerCache
from tjx.nn.linear import dropout, split_key
from tjx.nn.mlp import MLP, model_mlp
from tjx.nn.moe.layer import MoE, MoEStats, index_stats
from tjx.nn.norm_config import filled
from tjx.nn.norms import LayerNorm, RMSNorm, make_norm
from tjx.nn.params import make_param, ones
from tjx.nn.sequence import current_sequence_parallel

Array = jax.Array
#: A layer that later layers read (``kv_shared_layers``) returns its keys and values (and while
#: decoding their positions) in its cache slot under names with this prefix (beside its cache,
#: if any); the stack takes them out.
KEPT = "kept_"


def residual_std(config: TransformerConfig, num_layers: int) -> float:
    """Init std of residual output projections: GPT-2's ``std/√(2·layers)`` when enabled.

    Parameters
    ----------
    config : TransformerConfig
        Supplies the ``init`` section (``std``, ``scaled_residual``).
    num_layers : int
        Depth of the stack.

    Returns
    -------
    float
    """
    if config.init.scaled_residual:
        return config.init.std / math.sqrt(2 * num_layers)
    return config.init.std


def model_norm(config: TransformerConfig, *, rngs: nnx.Rngs) -> LayerNorm | RMSNorm:
    """A ``d_model``-wide norm layer as ``config`` makes them: its ``norm`` section's kind, eps
    and ``plus_one``, its ``use_bias`` and ``precision`` (`make_norm`).

    Parameters
    ----------
    config : TransformerConfig
        The model config (its ``norm`` section filled).
    rngs : nnx.Rngs
        The parameters' keys.

    Returns
    -------
    LayerNorm or RMSNorm
    """
    c = config
    return make_norm(
        c.norm.kind,
        c.d_model,
        rngs=rngs,
        eps=c.norm.eps,
        use_bias=c.use_bias,
        precision=c.precision,
        plus_one=c.norm.plus_one,
        impl=c.norm.impl,
    )


@dataclasses.dataclass(frozen=True)
class LayerInputs:
    """What every layer of one stack call reads alike: the stack builds it once and hands the
    same value to each `Block` (each layer's own inputs, its cache and keys, stay keywords).

    Attributes
    ----------
    positions : Array, optional
        int ``[b, s]`` absolute positions (RoPE/ALiBi).
    mask, context_mask : tjx.kernels.AttentionMask, optional
        The segment ids of the self- and cross-attention; the attention layers add their own
        parts (causal, window, chunk, sinks) and a delta layer reads ``mask``'s segment ids.
    context : Array, optional
        ``[b, s_ctx, d_model]``: what the cross-attention attends to.
    deterministic : bool
        Disable dropout.
    cache_pos : Array, optional
        int ``[b]``: where a prefill or decode step writes each row's cache (see `Attention`).
    bias : Array, optional
        The stack's T5 relative position bias, for the self-attention only: cross-attention has
        no relative positions, as in T5.
    lengths : Array, optional
        A prefill's real tokens per row (a rolling cache keeps each row's last ones).
    extend : bool
        With a cache, a decode step of the ``s`` tokens (see `Attention`): a delta layer steps
        its state through them one by one, an MoE layer routes them without a capacity (a
        one-token step drops none either).
    """

    positions: Array | None = None
    mask: AttentionMask | None = None
    context: Array | None = None
    context_mask: AttentionMask | None = None
    deterministic: bool = True
    cache_pos: Array | None = None
    bias: Array | None = None
    lengths: Array | None = None
    extend: bool = False


#: A call without any (no positions, mask, context or cache; dropout off).
NO_INPUTS = LayerInputs()


class Block(nnx.Module):
    """A transformer layer.

    Pre-LN: ``x + attn(norm(x))`` then ``x + mlp(norm(x))``. Post-LN (BERT, original
    Transformer): ``norm(x + attn(x))`` then ``norm(x + mlp(x))``. Sandwich (Gemma 2/3):
    ``x + post_norm(attn(norm(x)))``, likewise the MLP; output (OLMo 2): ``x + post_norm(attn(x))``
    (no ``attn_norm``/``mlp_norm``). With ``cross=True`` a cross-attention sub-layer over
    ``context`` sits between the two (pre- and post-LN only). With ``moe=True`` the MLP is an
    MoE block (``moe.MoE``), whose router statistics the call returns. ``attention``: the
    kernels its attention layers run (the stack's `ModelAttention`; None: each resolves its own).
    With ``mixer="delta"`` the token mixer is Gated DeltaNet (``delta``, `GatedDeltaNet`) in
    place of self-attention (``attn`` is None): a causal decoder's layer only.
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        num_layers: int,
        causal: bool,
        cross: bool = False,
        moe: bool = False,
        attention: ModelAttention | None = None,
        mixer: str = "attention",
        index: int | None = None,
    ) -> None:
        c = config
        # The layer's own attention geometry, MLP width and part options (a decoder's; its
        # ``index`` in a stack of layers of their own shapes, else None).
        shape: LayerShape | None = c.layer_shape(index) if causal and not cross else None
        self.keeps_kv = shape is not None and shape.keeps_kv
        self.post_ln = c.norm.position == "post"
        self.rate = c.dropout
        out_std = residual_std(c, num_layers)
        before = c.norm.position != "output"  # a norm on each sublayer's input (or sum)
        after = c.norm.position in ("sandwich", "output")  # a norm on each sublayer's output
        if cross and after:
            raise ValueError(
                f"cross-attention blocks take norm.position pre or post; got {c.norm.position!r}"
            )

        def norm(on: bool) -> LayerNorm | RMSNorm | None:
            return model_norm(c, rngs=rngs) if on else None

        self.attn_norm = norm(before)
        self.attn_post_norm = norm(after)
        # The kernels the stack resolved (none given: each attention layer resolves its own).
        kind = layer_kind(causal=causal, cross=False)
        kernel = attention.kernel(kind, c) if attention is not None else None
        if mixer == "delta":
            if cross or not causal:
                raise ValueError("delta layers (Gated DeltaNet) are causal decoder layers only")
            assert c.delta.key_heads is not None and c.delta.value_heads is not None
            assert c.delta.key_dim is not None and c.delta.value_dim is not None
            self.attn: Attention | None = None
            self.delta: GatedDeltaNet | None = GatedDeltaNet(
                c.d_model,
                num_k_heads=c.delta.key_heads,
                num_v_heads=c.delta.value_heads,
                head_k_dim=c.delta.key_dim,
                head_v_dim=c.delta.value_dim,
                rngs=rngs,
                conv_kernel=c.delta.conv_kernel,
                eps=filled(c.norm.eps, "norm.eps"),
                init_std=c.init.std,
                precision=c.precision,
                implementation=c.delta.impl,
            )
        else:
            self.delta = None
            self.attn = Attention(
                c, rngs=rngs, causal=causal, out_std=out_std, kernel=kernel, layer=shape
            )
        if cross:
            self.cross_norm: LayerNorm | RMSNorm | None = model_norm(c, rngs=rngs)
            crossed = attention.kernel("cross", c) if attention is not None else None
            self.cross_attn: Attention | None = Attention(
                c, rngs=rngs, cross=True, out_std=out_std, kernel=crossed
            )
        else:
            self.cross_norm = None
            self.cross_attn = None
        self.mlp_norm = norm(before)
        self.mlp_post_norm = norm(after)
        assert c.mlp.dim is not None and c.mlp.activation is not None  # the config filled them
        self.moe: MoE | None = MoE(c, rngs=rngs, out_std=out_std) if moe else None
        # moe_beside_mlp: an MoE layer keeps its MLP, the MoE block beside it with norms of its own:
        # the MLP's output norm (``mlp_mid_norm``), the MoE's input and output norms.
        beside = moe and c.moe.beside_mlp
        self.mlp_mid_norm = norm(beside)
        self.moe_norm = norm(beside)
        self.moe_post_norm = norm(beside)
        self.mlp: MLP | None = (
            None
            if moe and not beside
            else model_mlp(
                c, c.mlp.dim if shape is None else shape.mlp_dim, rngs=rngs, out_std=out_std
            )
        )
        self.router_reads_residual = c.moe.router_input_norm  # the router reads the raw residual
        self.per_layer = layer_input(c, rngs=rngs, out_std=out_std)
        self.scale = (
            make_param(rngs, ones(), (1,), (None,), c.precision.param_dtype)
            if shape is not None and shape.scaled
            else None
        )

    def __call__(
        self,
        x: Array,
        inputs: LayerInputs = NO_INPUTS,
        *,
        rng: Array | None = None,
        cache: LayerCache | None = None,
        context_kv: LayerCache | None = None,
        local: Any = None,
        per_layer_input: Array | None = None,
        shared_kv: LayerCache | None = None,
    ) -> tuple[Array, LayerCache | None, MoEStats | None]:
        """Apply the layer; returns ``(x, updated cache, MoE statistics or None)``.

        ``inputs`` is what every layer of the call reads alike (`LayerInputs`, built once by
        the stack); the keywords are this layer's own. ``rng`` draws its dropout keys.
        ``context_kv`` (``{"k", "v"}``, see ``Attention.project_context``) replaces projecting
        ``inputs.context`` in the cross-attention (incremental decoding of an encoder-decoder).
        ``local`` switches the self-attention's sliding window for this layer (see
        ``Attention``). ``per_layer_input`` is this layer's PLE ``[b, s, P]``; ``shared_kv`` the
        keys and values of the layer this one reads (``kv_shared_layers``); a layer others read
        returns its own in its cache slot under ``KEPT``.
        """
        step = (
            cache is not None
            and inputs.cache_pos is not None
            and (x.shape[1] == 1 or inputs.extend)
        )
        keys = split_key(rng, 6)
        lora_keys = split_key(keys[5], 2)  # LoRA adapters' dropout (tjx.nn.add_lora)

        def sub(
            x: Array, norm: nnx.Module | None, post: nnx.Module | None, fn: Any, key: Array | None
        ) -> Array:
            if self.post_ln:
                assert norm is not None
                return norm(x + dropout(fn(x), self.rate, key, deterministic=inputs.deterministic))
            h = fn(x if norm is None else norm(x))
            h = h if post is None else post(h)
            return x + dropout(h, self.rate, key, deterministic=inputs.deterministic)

        new_cache: list[LayerCache | None] = [cache]
        kept: LayerCache | None = {} if self.keeps_kv else None
        index: dict[str, Array] = {}  # the attention's indexer loss sums, when it has one

        def self_attn(h: Array, out_bias: bool = True) -> Array:
            if self.delta is not None:
                ids = None if inputs.mask is None else inputs.mask.segment_ids
                out, new_cache[0] = _delta_mix(self.delta, h, ids, cache, step, inputs.lengths)
                return out
            assert self.attn is not None
            out, new_cache[0] = self.attn(
                h,
                shared=shared_kv,
                kv_out=kept,
                positions=inputs.positions,
                mask=inputs.mask,
                deterministic=inputs.deterministic,
                dropout_rng=keys[0],
                cache=cache,
                cache_pos=inputs.cache_pos,
                bias=inputs.bias,
                lora_rng=lora_keys[0],
                local=local,
                lengths=inputs.lengths,
                extend=inputs.extend,
                out_bias=out_bias,
                index_out=index,
            )
            return out

        stats: list[MoEStats | None] = [None]
        moe = self.moe

        def ffn(h: Array, out_bias: bool = True) -> Array:
            if moe is None:
                assert self.mlp is not None
                return self.mlp(h, lora_keys[1], out_bias=out_bias)
            out, stats[0] = moe(h, no_capacity=step)
            return out

        if self._fuses_residual_norm(inputs.deterministic):
            x = self._fused_pre_ln(x, self_attn, ffn)
            return self._tail(x, per_layer_input, kept, new_cache[0], _with(stats[0], index))
        x = sub(x, self.attn_norm, self.attn_post_norm, self_attn, keys[1])
        if self.cross_attn is not None and self.cross_norm is not None:
            cross_attn = self.cross_attn

            def cross(h: Array) -> Array:
                out, _ = cross_attn(
                    h,
                    mask=inputs.context_mask,
                    context=inputs.context,
                    deterministic=inputs.deterministic,
                    dropout_rng=keys[2],
                    kv=None if context_kv is None else (context_kv["k"], context_kv["v"]),
                )
                return out

            x = sub(x, self.cross_norm, None, cross, keys[3])

        def beside(h: Array) -> Array:
            """``moe_beside_mlp``: the MLP and the MoE block side by side on the residual ``h``."""
            assert self.mlp is not None and moe is not None and self.mlp_norm is not None
            assert self.mlp_mid_norm is not None and self.moe_norm is not None
            assert self.moe_post_norm is not None
            dense = self.mlp_mid_norm(self.mlp(self.mlp_norm(h), lora_keys[1]))
            router_input = h if self.router_reads_residual else None
            out, stats[0] = moe(self.moe_norm(h), router_input=router_input, no_capacity=step)
            return dense + self.moe_post_norm(out)

        if self.mlp_mid_norm is not None:
            x = sub(x, None, self.mlp_post_norm, beside, keys[4])
        else:
            x = sub(x, self.mlp_norm, self.mlp_post_norm, ffn, keys[4])
        return self._tail(x, per_layer_input, kept, new_cache[0], _with(stats[0], index))

    def _tail(
        self,
        x: Array,
        per_layer_input: Array | None,
        kept: LayerCache | None,
        cache: LayerCache | None,
        stats: MoEStats | None,
    ) -> tuple[Array, LayerCache | None, MoEStats | None]:
        """The layer's end: its per-layer input, the layer scale, the kept keys/values."""
        if self.per_layer is not None:
            if per_layer_input is None:
                raise ValueError("this layer adds a per-layer input (PLE): pass per_layer_input")
            x = self.per_layer(x, per_layer_input)
        if self.scale is not None:
            x = x * self.scale[...].astype(x.dtype)
        if kept is not None:
            held = {KEPT + name: a for name, a in kept.items()}
            return x, {**(cache or {}), **held}, stats
        return x, cache, stats

    def _fuses_residual_norm(self, deterministic: bool) -> bool:
        """Whether this call takes `_fused_pre_ln`: a pre-LN layer of self-attention and a plain
        MLP whose output projections both have a bias and no adapter, LayerNorm between them,
        and no residual dropout (a bias the mask would scale is not the one added after it)."""
        attn, mlp = self.attn, self.mlp
        if self.post_ln or attn is None or mlp is None or self.moe is not None:
            return False
        if self.cross_attn is not None or self.mlp_mid_norm is not None:
            return False
        if self.attn_post_norm is not None or self.mlp_post_norm is not None:
            return False
        if not isinstance(self.mlp_norm, LayerNorm) or self.attn_norm is None:
            return False
        if not (deterministic or self.rate == 0.0):
            return False
        return all(d.bias is not None and d.lora is None for d in (attn.out, mlp.fc_out))

    def _fused_pre_ln(self, x: Array, attend: Any, ffn: Any) -> Array:
        """``x + attn(norm(x))`` then ``x + mlp(norm(x))`` with the attention's residual add
        and the MLP's norm as one `tjx.nn.norms.residual_layer_norm`, which also takes both
        output projections' biases: their gradients come out of the norm's backward reduction
        instead of a column sum each (four kernels a layer fewer on a GPU). The forward
        adds what `Dense` adds, in the same order."""
        assert self.attn is not None and self.mlp is not None and self.attn_norm is not None
        assert isinstance(self.mlp_norm, LayerNorm)
        out_bias, fc_bias = self.attn.out.bias, self.mlp.fc_out.bias
        assert out_bias is not None and fc_bias is not None
        h = attend(self.attn_norm(x), out_bias=False)
        x, y, (carried,) = self.mlp_norm.residual(x, h, out_bias[...], (fc_bias[...],))
        return x + (ffn(y, out_bias=False) + carried)


def _with(stats: MoEStats | None, index: dict[str, Array]) -> MoEStats | None:
    """The layer's statistics with its attention's indexer loss sums (``index``, filled by a
    call whose indexer has a loss): an MoE layer's row gets them, a dense layer returns a row of
    them alone (`tjx.nn.moe.layer.index_stats`)."""
    if not index:
        return stats
    if stats is None:
        return index_stats(index["loss_sum"], index["queries"])
    return stats._replace(index_loss_sum=index["loss_sum"], index_queries=index["queries"])


def _delta_mix(
    delta: GatedDeltaNet,
    h: Array,
    segment_ids: Any,
    cache: LayerCache | None,
    step: bool,
    lengths: Array | None,
) -> tuple[Array, LayerCache | None]:
    """A delta layer's mixing: the whole sequence (training, scoring), a prefill that leaves its
    state in the layer's cache (``{"conv", "recurrent"}``, see `tjx.nn.kv_cache`), or a decode
    ``step`` of one or more tokens from it."""
    if cache is None:
        if current_sequence_parallel() is not None:
            raise ValueError(
                "delta layers (Gated DeltaNet) are not supported under sequence_parallel: the "
                "recurrent state would restart on each device's part; train without the split"
            )
        return delta(h, segment_ids=segment_ids), None  # type: ignore[return-value]
    state = DeltaState(cache["conv"], cache["recurrent"])
    if step:
        out, state = delta.step(h, state)
    else:
        out, state = delta(h, segment_ids=segment_ids, return_state=True, lengths=lengths)
    new = {"conv": state.conv.astype(cache["conv"].dtype)}
    return out, new | {"recurrent": state.recurrent.astype(cache["recurrent"].dtype)}
