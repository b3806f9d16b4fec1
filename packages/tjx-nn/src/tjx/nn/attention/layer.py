"""The attention layer: its projections and norms as parameters (the tree checkpoints load by),
and its call, from the input to the kernel's output projected back (`tjx.nn.attention`).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx import kernels
from tjx.nn import mla as ds
from tjx.nn import probes
from tjx.nn.attention.decode import add_bias, decode_step, shared_layer, write_prefill
from tjx.nn.attention.positions import LayerPositions, Local
from tjx.nn.attention.projections import normed, output, qkv_alike, qkv_projections
from tjx.nn.configs import TransformerConfig, rotated_dims
from tjx.nn.families import parts
from tjx.nn.family_config import LayerShape
from tjx.nn.kernel_choice import attention_width, layer_kind, resolve_attention
from tjx.nn.kv_cache import LayerCache
from tjx.nn.linear import Dense, joint_projection, split_key, stacked_projection
from tjx.nn.norm_config import filled
from tjx.nn.norms import RMSNorm, rms_norm
from tjx.nn.params import make_param, normal
from tjx.nn.positions import alibi_bias
from tjx.nn.sequence import current_sequence_parallel, split_self_attention

Array = jax.Array


class Attention(nnx.Module):
    """Self- or cross-attention for one layer.

    Parameters
    ----------
    config : TransformerConfig
        Sizes, positions, precision, attention implementation, MLA options.
    causal : bool
        Causal self-attention (decoders).
    cross : bool
        Keys/values come from a ``context`` (encoder output); no positions are applied.
    out_std : float, optional
        Init std of the output projection (GPT-2's scaled residual init).
    kernel : tjx.kernels.AttentionKernel, optional
        The kernel its calls run, resolved before it was built (the stack's
        `tjx.nn.kernel_choice.ModelAttention`); None: resolved here, for this layer's kind.
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        causal: bool = False,
        cross: bool = False,
        out_std: float | None = None,
        kernel: kernels.AttentionKernel | None = None,
        layer: LayerShape | None = None,
    ) -> None:
        c = config
        assert c.head_dim is not None and c.num_kv_heads is not None
        # A global layer's own head width and key/value heads (``layer_shape``).
        own = None if layer is None or cross else (layer.head_dim, layer.kv_heads)
        if own is not None and own != (c.head_dim, c.num_kv_heads):
            c = c.replace(head_dim=own[0], num_kv_heads=own[1])
            kernel = None  # resolved for this width, below
        assert c.head_dim is not None and c.num_kv_heads is not None
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        # Values from the key projection; keys and values read from another layer.
        self.values_from_keys = layer is not None and layer.values_from_keys and not cross
        self.reads_kv = layer is not None and layer.kv_source is not None and not cross
        self.value_norm = layer is not None and layer.value_norm and not cross
        self.norm_eps = c.norm.eps
        self.causal, self.cross = causal, cross
        self.position = "none" if cross else c.position.kind
        self.impl = c.attention_impl  # the name: a split sequence's blocks resolve their own
        self.attention_dropout = c.attention.dropout
        self.decode_topk = c.attention.decode_topk
        # Gemma: 1/sqrt(query_pre_attn_scalar) instead of 1/sqrt(head_dim); Gemma 2's soft cap.
        self.scale = 1.0 / math.sqrt(c.attention.query_pre_attn_scalar or c.head_dim)
        deepseek = ds.is_deepseek(c.attention, c.mla)
        # DeepSeek's yarn mscale² (else 1)
        self.scale *= ds.softmax_scale_factor(deepseek, c.position.rope_scaling)
        self.softcap = c.attention.logit_softcap
        self.window = None if cross else c.attention.sliding_window
        self.chunk = None if cross else c.attention.chunk  # the local layers' chunk
        proportion = 1.0 if layer is None else layer.rope_proportion
        local_theta = c.position.rope_local_theta  # Gemma 3's windowed layers (family_config)
        if proportion < 1.0 and local_theta is None:
            local_theta = c.position.rope_theta  # only the global layers turn proportionally
        # Global layers without RoPE (NoPE), their queries tempered by position; the rotated
        # layers' q and k over their RMS (no weight); GLM-4.5's RoPE of each head's first dims.
        nope, temperature = c.nope_layers()
        self.positions = LayerPositions(
            rotated=rotated_dims(c),
            rope_proportion=proportion,
            rope_theta=c.position.rope_theta,
            rope_scaling=c.position.rope_scaling,
            rope_local_theta=local_theta,
            window=self.window,
            global_nope=nope and not cross,
            qk_l2=c.qk_l2_norm and not cross,
            l2_eps=filled(c.norm.eps, "norm.eps"),
            temperature=None if cross else temperature,
        )
        self.mla = c.attention.type == "mla" and not cross
        self.deepseek = self.mla and deepseek
        d, h, hk, hd = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim
        # DeepSeek: values may be narrower than q/k; the kernels see both at the wider ``width``
        # (`attention_width`, which the kernel is resolved for).
        self.v_dim = ds.value_dim(c) if self.deepseek else hd
        kind = layer_kind(causal=causal, cross=cross)
        self.width, self.rope_dim = attention_width(c, kind), c.mla.qk_rope_head_dim or 0
        # The kernel, resolved once for the device the model is built for (inside a
        # `tjx.kernels.target` block: that device), before the model was built (``kernel``) or
        # here: a call runs it and chooses nothing. A name that cannot serve this model here is
        # refused then, with tjx.kernels' one line.
        self.kernel = resolve_attention(c, kinds=(kind,)).kernel(kind) if kernel is None else kernel
        common: dict[str, Any] = dict(rngs=rngs, use_bias=c.use_bias, precision=c.precision)
        init = normal(c.init.std)
        # Qwen2 has biases on q/k/v only (``attention.qkv_bias``); ``use_bias``: everywhere.
        qkv: dict[str, Any] = dict(common, use_bias=c.use_bias or c.attention.qkv_bias)
        modules = ds.deepseek_modules(c, rngs=rngs, common=qkv, init=init) if self.deepseek else {}
        for name in ds.DEEPSEEK_ONLY:  # None in any other attention
            setattr(self, name, modules.pop(name, None))
        for name, module in modules.items():  # DeepSeek's own projections (none otherwise)
            setattr(self, name, module)
        if not self.deepseek:  # MLA's latent width: the config's checks require it
            self.query, self.kv_down, self.key, self.value = qkv_projections(
                (d, h, hk, hd), latent=c.mla.kv_latent_dim if self.mla else None,
                own_kv=not self.reads_kv, own_values=not self.values_from_keys,
                init=init, qkv=qkv, common=common,
            )  # fmt: skip
        # A key selection: the keys each query attends to, and its own loss, reported to the
        # block through ``index_out`` (DeepSeek Sparse Attention's indexer).
        self.indexer = parts.key_selector(c, rngs=rngs) if self.deepseek else None
        self.out = Dense(
            (h, self.v_dim),
            (d,),
            ("heads", "head_dim"),
            ("embed",),
            init=normal(out_std if out_std is not None else c.init.std),
            **common,
        )
        # q/k norms after the projections, before RoPE: per head (Qwen3, Gemma 3: one head_dim
        # scale shared by the heads) or over the whole projection (OLMo 2).
        self.qk_scope = c.attention.qk_norm_scope
        norm_kw: dict[str, Any] = dict(
            rngs=rngs, eps=c.norm.eps, precision=c.precision, plus_one=c.norm.plus_one
        )
        whole = c.attention.qk_norm_scope == "projection"
        self.q_norm = RMSNorm(h * hd if whole else hd, **norm_kw) if c.attention.qk_norm else None
        self.k_norm = (
            RMSNorm(hk * hd if whole else hd, **norm_kw)
            if c.attention.qk_norm and not self.reads_kv
            else None
        )
        # gpt-oss: one learned logit per query head in every softmax row's denominator
        # (self-attention; tjx.kernels' XLA path, which `resolve_attention` resolves to).
        self.sinks = (
            make_param(rngs, init, (h,), ("heads",), c.precision.param_dtype)
            if c.attention.sinks and not cross
            else None
        )
        # Qwen3-Next / Qwen3.5: the heads' output times sigmoid(x · W_gate), per head and dim,
        # before the output projection (HF stores W_gate in q_proj, beside each head's query).
        self.gate = (
            Dense((d,), (h, hd), ("embed",), ("heads", "head_dim"), init=init, **qkv)
            if c.attention.output_gate and not cross
            else None
        )
        # q/k/v as one tensor through the kernel: where the kernel reads a stacked qkv in
        # place (Pallas, 16-bit) and nothing per head sits between the projection and the
        # kernel (RoPE, ALiBi's bias, q/k norms, a NoPE layer's temperature, sinks, chunks), the
        # fused projection's output reaches the kernel whole and its gradient comes back whole
        # (`joint_projection`, `tjx.kernels.attention_qkv`): no slice or concatenation written.
        # Every other layer keeps the three arrays; chosen here, for the kernel it was built for.
        self.stacked_qkv = (
            kernels.reads_stacked_qkv(self.kernel, c.precision.compute_dtype)
            and not (cross or self.mla or self.reads_kv or self.value_norm)
            and self.key is not None
            and self.value is not None
            and h == hk
            and self.position not in ("rope", "alibi")
            and self.q_norm is None
            and self.k_norm is None
            and self.positions.temperature is None
            and self.sinks is None
            and self.chunk is None
            and self.width == hd
        )

    def _sinks(self) -> Array | None:
        """The sinks' logits ``[heads]`` (float32 or wider), or None."""
        if self.sinks is None:
            return None
        value = self.sinks[...]
        return value.astype(jnp.promote_types(value.dtype, jnp.float32))

    def _keys_values(
        self,
        src: Array,
        positions: Array | None,
        lora_rng: Array | None = None,
        local: Local = None,
    ) -> tuple[Array, Array]:
        if self.kv_down is not None:
            src = self.kv_down(src)
        k_key, k_value = split_key(lora_rng, 2)
        assert self.key is not None
        raw = self.key(src, k_key)
        k = normed(self.k_norm, self.qk_scope, raw)
        # Global layers without a value projection: the keys' projection, unnormed.
        v = raw if self.value is None else self.value(src, k_value)
        if self.value_norm:  # RMSNorm without a scale
            v = rms_norm(v, jnp.ones(v.shape[-1], v.dtype), self.norm_eps, v.dtype)
        if self.position == "rope" and positions is not None:
            k = self.positions.apply(k, positions, local)
        return k, v

    def _alike(self, x: Array) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]] | None:
        """``x``, the q/k/v kernels and biases where the projections are alike (`qkv_alike`)."""
        grouped = self.mla or self.num_kv_heads != self.num_heads
        parts = (self.query, self.key, self.value)
        return qkv_alike(x, parts, grouped=grouped, value_norm=self.value_norm)

    def _fused_qkv(self, x: Array) -> tuple[Array, Array, Array] | None:
        """Queries, keys and values of ``x`` through `stacked_projection` (one backward for
        the three), or None where the projections are not alike (`_alike`)."""
        alike = self._alike(x)
        if alike is None:
            return None
        q, k, v = stacked_projection(*alike)
        return q, k, v

    def _joint_qkv(self, x: Array) -> tuple[Array, tuple[Array, Array, Array]] | None:
        """Queries, keys and values of ``x`` as one ``[b, s, 3, heads, head_dim]`` without
        their biases, through `joint_projection` (its gradient taken whole), and the three
        biases (the kernel adds them as it reads); None where the projections are not alike
        (`_alike`: a LoRA adapter added after the build, say)."""
        alike = self._alike(x)
        if alike is None:
            return None
        x, kernels, (bq, bk, bv) = alike
        return joint_projection(x, kernels, ()), (bq, bk, bv)

    def project_context(self, context: Array) -> tuple[Array, Array]:
        """Cross-attention keys and values ``[b, s_ctx, kv_heads, head_dim]`` of ``context``."""
        return self._keys_values(context, None)

    def _mask(self, mask: kernels.AttentionMask, near: bool) -> kernels.AttentionMask:
        """The call's ``mask`` (its segment ids) with this layer's own parts: causal, the window
        and chunk where they apply (``near``), the sinks."""
        return mask.replace(
            causal=self.causal,
            window=self.window if near else None,
            chunk=self.chunk if near else None,
            sinks=self._sinks(),
        )

    def _kernel(
        self, q: Array, k: Array, v: Array, *, kernel: kernels.AttentionKernel, **kw: Any
    ) -> Array:
        # A replay's probe program records the layer's largest logit (nothing otherwise).
        probes.attention_logits(q, k, kw["mask"], scale=self.scale)
        # An additive bias (ALiBi, T5) or attention dropout makes tjx.kernels take its XLA path.
        return kernels.attention(
            q, k, v, scale=self.scale, softcap=self.softcap, implementation=kernel, **kw
        )

    def _windowed(self, local: Local, attend: Any) -> Array:
        """``attend(near)``: whether this layer's window (or chunk) applies, static when
        ``local`` is known while tracing, else both variants under ``lax.cond`` (kernels take
        static windows and chunks)."""
        if (self.window is None and self.chunk is None) or local is False:
            return attend(False)  # type: ignore[no-any-return]
        if local is None or local is True:
            return attend(True)  # type: ignore[no-any-return]
        return jax.lax.cond(local, lambda: attend(True), lambda: attend(False))  # type: ignore[no-any-return]

    def __call__(
        self,
        x: Array,
        *,
        positions: Array | None = None,
        mask: kernels.AttentionMask | None = None,
        context: Array | None = None,
        deterministic: bool = True,
        dropout_rng: Array | None = None,
        cache: LayerCache | None = None,
        cache_pos: Array | None = None,
        kv: tuple[Array, Array] | None = None,
        bias: Array | None = None,
        lora_rng: Array | None = None,
        local: Local = None,
        lengths: Array | None = None,
        shared: LayerCache | None = None,
        kv_out: LayerCache | None = None,
        extend: bool = False,
        out_bias: bool = True,
        index_out: dict[str, Array] | None = None,
    ) -> tuple[Array, LayerCache | None]:
        """Attend.

        Parameters
        ----------
        x : Array
            Queries' input ``[b, s, d_model]``.
        positions : Array, optional
            int ``[b, s]`` absolute positions (RoPE/ALiBi).
        mask : tjx.kernels.AttentionMask, optional
            The call's mask, as its stack built it: its segment ids (0 = padding; for
            cross-attention a pair (q_ids, kv_ids)). The layer adds its own parts (causal, its
            window or chunk, its sinks) before the kernel receives it. None: no segments.
        context : Array, optional
            ``[b, s_ctx, d_model]`` keys/values input for cross-attention.
        cache, cache_pos : optional
            KV cache of this layer and int ``[b]`` write positions. With ``s > 1`` and no
            ``extend`` this is a prefill (``cache_pos`` must be 0: the chunk attends causally to
            itself and is written at slots ``0..s-1``); with ``s == 1`` or ``extend`` a decode
            step (written at ``cache_pos .. cache_pos + s - 1``; token ``i`` attends to the
            cache's positions ``<= cache_pos + i``: `tjx.nn.kv_cache.write_step`).
        kv : (Array, Array), optional
            Cross-attention only: keys and values ``[b, s_ctx, kv_heads, head_dim]`` already
            projected from the context (``project_context``), so decoding does not re-project
            the encoder output at every step.
        bias : Array, optional
            Additive float32 logit bias ``[b|1, heads, s, s_kv]`` from the stack (T5 relative
            positions, ``RelativePositionBias``); for a decode step ``s_kv`` is the cache length.
        lora_rng : Array, optional
            The dropout key of the projections' LoRA adapters (a training call).
        local : bool or Array, optional
            Whether this layer's ``attention.sliding_window`` applies (a traced bool for scanned
            layers of a mixed ``attention.window_pattern``); None: it does, when the config has
            one.
        lengths : Array, optional
            int ``[b]`` real tokens of a right-padded prefill: a rolling cache shorter than the
            prompt keeps each row's last real tokens (default: every row is full).
        shared : dict, optional
            A layer of ``kv_shared_layers``: the keys and values ``{"k", "v"}`` of the
            layer it reads, as that layer's ``kv_out`` holds them this call.
        kv_out : dict, optional
            Filled with this layer's keys and values ``{"k", "v"}`` for a later layer to read:
            this call's own (``[b, s, ...]``), or while decoding the ones it attended over and
            their positions (``"pos"`` ``[b, K]``).
        extend : bool
            With a cache: the ``s`` tokens continue each row's cached sequence at ``cache_pos``
            (a decode step of several tokens, as a speculative draft's verification is), not a
            prefill.
        out_bias : bool
            False: the output projection's bias is left to the caller (a pre-LN block adds it
            in `tjx.nn.norms.residual_layer_norm`).
        index_out : dict, optional
            Filled, by a call without a cache of a layer whose key selection has a loss (the
            sparse-attention indexer's: ``mla.index_loss_weight > 0``), with its sums
            ``{"loss_sum", "queries"}`` (`tjx.nn.families.parts.KeySelector.loss`), which the
            block adds to its MoE statistics.

        Returns
        -------
        (out [b, s, d_model], updated cache or None)
        """
        b, s, _ = x.shape
        mask = kernels.AttentionMask() if mask is None else mask
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        k_query, k_kv, k_out = split_key(lora_rng, 3)
        decoding = cache is not None and cache_pos is not None and (s == 1 or extend)
        drop = 0.0 if deterministic else self.attention_dropout
        # A call the stacked kernel serves (no cache to fill, no bias or dropout, no split
        # sequence, no keys kept for a later layer): the projection's output goes to it whole.
        whole = self.stacked_qkv and cache is None and kv_out is None and bias is None
        whole = whole and drop == 0.0 and current_sequence_parallel() is None
        joint = self._joint_qkv(x) if whole else None
        if joint is not None:
            qkv, biases = joint
            out = self._windowed(
                local,
                lambda near: kernels.attention_qkv(
                    qkv, mask=self._mask(mask, near), scale=self.scale,
                    implementation=self.kernel, softcap=self.softcap, qkv_bias=biases,
                ),
            )  # fmt: skip
            return self._output(x, out, k_out, out_bias), None
        fused = None if self.cross or decoding else self._fused_qkv(x)
        if self.deepseek:
            q = ds.query(self, x, positions, k_query, local)
        elif fused is not None:
            q = normed(self.q_norm, self.qk_scope, fused[0])
            if self.position == "rope":
                q = self.positions.apply(q, positions, local)
        else:
            q = normed(self.q_norm, self.qk_scope, self.query(x, k_query))
            if self.position == "rope":
                q = self.positions.apply(q, positions, local)
        if not self.deepseek:
            q = self.positions.temper(q, positions, local)
        rng = dropout_rng if drop > 0.0 else None
        selection = None
        if self.indexer is not None:  # the key selection: an additive -inf bias (XLA path)
            if current_sequence_parallel() is not None:
                raise ValueError(
                    f"{self.indexer.selection_name} is not supported under sequence_parallel: "
                    "each query's key selection needs every key; train without the split"
                )
            if decoding:
                assert cache is not None and cache_pos is not None
                sparse, cache = self.indexer.step(self, x, positions, cache, cache_pos, local)
            else:
                selection = self.indexer.prefill(self, x, positions, mask.segment_ids, local)
                sparse = selection.bias
            bias = add_bias(bias, sparse)
        if self.reads_kv:  # no cache of its own: a decode step by its positions alone
            step = cache_pos is not None and (s == 1 or extend)
            out = shared_layer(self, q, shared, mask, positions, step, local, drop, rng)
            cache = None
        elif decoding:
            assert cache is not None and cache_pos is not None
            out, cache = decode_step(self, x, q, positions, cache, cache_pos, bias, local, kv_out)
        else:
            kernel = self.kernel
            if self.cross:
                if kv is not None:
                    k, v = kv
                    # One query per row while decoding: the XLA path, as for self-attention.
                    kernel = kernels.AttentionKernel.XLA if s == 1 else kernel
                elif context is None:
                    raise ValueError("cross-attention needs `context` (or precomputed `kv`)")
                else:
                    k, v = self.project_context(context)
            elif self.deepseek:
                latent, rope_key = ds.latents(self, x, positions, local)
                k, v = ds.keys_values(self, latent, rope_key, k_kv)
                # A training or scoring call (no cache: not a generation's prefill) scores it.
                if (
                    self.indexer is not None
                    and selection is not None
                    and index_out is not None
                    and cache is None
                ):
                    sums = self.indexer.loss(selection, q, k, self.scale)
                    if sums is not None:
                        index_out.update(zip(("loss_sum", "queries"), sums, strict=True))
            elif fused is not None:
                k, v = normed(self.k_norm, self.qk_scope, fused[1]), fused[2]
                if self.position == "rope":
                    k = self.positions.apply(k, positions, local)
            else:
                k, v = self._keys_values(x, positions, k_kv, local)
            if kv_out is not None:
                kv_out.update(k=k, v=v)
            if self.position == "alibi":
                bias = add_bias(bias, alibi_bias(positions, positions, self.num_heads))
            split = current_sequence_parallel() if cache is None and not self.cross else None

            def attend(near: bool) -> Array:
                layer_mask = self._mask(mask, near)
                if split is not None and (self.sinks is not None or layer_mask.chunk is not None):
                    raise ValueError(
                        "attention.sinks (gpt-oss) and attention.chunk are not "
                        "supported under sequence_parallel: the split's block kernels have "
                        "neither; train without the split"
                    )
                if split is not None:
                    return split_self_attention(
                        split, q, k, v, layer_mask, impl=self.impl, scale=self.scale,
                        softcap=self.softcap, drop=drop, bias=bias,
                    )  # fmt: skip
                return self._kernel(
                    q,
                    k,
                    v,
                    kernel=kernel,
                    mask=layer_mask,
                    dropout_rate=drop,
                    dropout_rng=rng,
                    bias=bias,
                )

            out = self._windowed(local, attend)
            if cache is not None:
                new = {"k": k, "v": v}
                if self.deepseek:
                    new = {"latent": latent, "rope_key": rope_key}
                    if selection is not None:
                        new |= selection.cached
                elif "latent" in cache:
                    assert self.kv_down is not None
                    new = {"latent": self.kv_down(x)}
                cache = write_prefill(new, cache, lengths)
        return self._output(x, out, k_out, out_bias), cache

    def _output(self, x: Array, out: Array, rng: Array | None, bias: bool = True) -> Array:
        """The heads' output to ``[b, s, d_model]`` (`output`; ``bias``: the projection's)."""
        return output(x, out, (self.out, self.gate), (self.v_dim, self.width), rng, bias)
