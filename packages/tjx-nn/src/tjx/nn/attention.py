"""Multi-head attention with GQA/MQA (``num_kv_heads``), cross-attention, RoPE/ALiBi, an
optional MLA-style low-rank key/value path (DeepSeek's with ``qk_rope_head_dim``:
:mod:`tjx.nn.mla`), a sliding window, and KV-cache prefill/decode; q/k norms, Gemma's query
scale and soft-capped logits, gpt-oss's attention sinks, GLM's partial RoPE, Qwen3.5's output
gate, attention chunks, NoPE layers, the weightless q/k norm and temperature (see
``family_config``).

A windowed layer (``attention.sliding_window``; ``attention.window_pattern`` says which layers)
passes the window to the kernel; when decoding, its cache may be a rolling one of the window's
size (slot ``p mod T`` holds position ``p``, see :func:`slot_positions`). Under
``sequence_parallel`` (a sequence split across devices) self-attention runs through the split's
own attention (:mod:`tjx.nn.sequence`).

The score/softmax/value step is ``tjx.kernels.attention`` (layout ``[batch, seq, heads,
head_dim]``), so the kernel is a config switch (``attention_impl``), resolved once before the
model is built (``tjx.nn.resolve_attention``, through ``tjx.kernels.resolve_attention``: an
`AttentionKernel` the calls run; the blocks of a split sequence take the name,
``tjx.kernels.block_kernel``). Its output is tagged
``checkpoint_name(..., "attention_output")`` for the ``save_attention_output`` remat policy.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.ad_checkpoint import checkpoint_name

from tjx import kernels
from tjx.nn import mla as ds
from tjx.nn import probes
from tjx.nn.configs import TransformerConfig, rotated_dims
from tjx.nn.family_config import LayerShape, nope_layers
from tjx.nn.kernel_choice import attention_width, layer_kind, resolve_attention
from tjx.nn.kv_cache import (
    LayerCache,
    last_real,
    step_visible,
    topk_decode_attention,
    write_step,
)
from tjx.nn.linear import Dense, joint_projection, split_key, stacked_projection
from tjx.nn.norm_config import filled
from tjx.nn.norms import RMSNorm, rms_norm
from tjx.nn.params import make_param, normal
from tjx.nn.positions import alibi_bias, apply_rope, proportional_rope
from tjx.nn.rope_scaling import RopeScaling
from tjx.nn.sequence import current_sequence_parallel, split_self_attention

Array = jax.Array
#: A layer's window switch: None (the layer's own setting), a bool, or a traced bool (scanned
#: layers of a mixed ``attention.window_pattern``).
Local = bool | Array | None


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
        if (
            layer is not None
            and not cross
            and (layer.head_dim, layer.kv_heads)
            != (
                c.head_dim,
                c.num_kv_heads,
            )
        ):
            c = c.replace(head_dim=layer.head_dim, num_kv_heads=layer.kv_heads)
            kernel = None  # resolved for this width, below
        assert c.head_dim is not None and c.num_kv_heads is not None
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        # Values from the key projection; keys and values read from another layer.
        self.values_from_keys = layer is not None and layer.values_from_keys and not cross
        self.reads_kv = layer is not None and layer.kv_source is not None and not cross
        self.value_norm = layer is not None and layer.value_norm and not cross
        self.norm_eps = c.norm.eps
        self.rope_proportion = 1.0 if layer is None else layer.rope_proportion
        self.causal, self.cross = causal, cross
        self.position = "none" if cross else c.position.kind
        self.rope_theta = c.position.rope_theta
        self.rope_scaling = c.position.rope_scaling
        self.rope_local_theta = (
            c.position.rope_local_theta
        )  # Gemma 3's windowed layers (family_config)
        if self.rope_proportion < 1.0 and c.position.rope_local_theta is None:
            self.rope_local_theta = (
                c.position.rope_theta
            )  # only the global layers turn proportionally
        self.impl = c.attention_impl  # the name: a split sequence's blocks resolve their own
        self.attention_dropout = c.attention.dropout
        self.decode_topk = c.attention.decode_topk
        # Gemma: 1/sqrt(query_pre_attn_scalar) instead of 1/sqrt(head_dim); Gemma 2's soft cap.
        self.scale = 1.0 / math.sqrt(c.attention.query_pre_attn_scalar or c.head_dim)
        self.scale *= ds.softmax_scale_factor(c)  # DeepSeek's yarn mscale² (else 1)
        self.softcap = c.attention.logit_softcap
        self.window = None if cross else c.attention.sliding_window
        # The local layers' chunk; global layers without RoPE (NoPE), their queries
        # tempered by position; the rotated layers' q and k over their RMS (no weight).
        self.chunk = None if cross else c.attention.chunk
        nope, temperature = nope_layers(c)
        self.global_nope = nope and not cross
        self.qk_l2 = c.qk_l2_norm and not cross
        self.l2_eps = filled(c.norm.eps, "norm.eps")
        self.temperature = None if cross else temperature
        self.mla = c.attention.type == "mla" and not cross
        self.deepseek = self.mla and ds.is_deepseek(c)
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
        if self.deepseek:
            for name, module in modules.items():
                setattr(self, name, module)
        elif self.mla:
            r = c.mla.kv_latent_dim
            assert r is not None
            self.query = Dense((d,), (h, hd), ("embed",), ("heads", "head_dim"), init=init, **qkv)
            # The latent dim is not one of the logical axes: leave it replicated (None).
            self.kv_down: Dense | None = Dense((d,), (r,), ("embed",), (None,), init=init, **common)
            self.key: Dense | None = Dense(
                (r,), (hk, hd), (None,), ("kv_heads", "head_dim"), init=init, **qkv
            )
            self.value: Dense | None = Dense(
                (r,), (hk, hd), (None,), ("kv_heads", "head_dim"), init=init, **qkv
            )
        else:
            self.query = Dense((d,), (h, hd), ("embed",), ("heads", "head_dim"), init=init, **qkv)
            self.kv_down = None
            own_kv = not self.reads_kv
            self.key = (
                Dense((d,), (hk, hd), ("embed",), ("kv_heads", "head_dim"), init=init, **qkv)
                if own_kv
                else None
            )
            self.value = (
                Dense((d,), (hk, hd), ("embed",), ("kv_heads", "head_dim"), init=init, **qkv)
                if own_kv and not self.values_from_keys
                else None
            )
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
        # GLM-4.5: RoPE rotates each head's first dims only (``rope_fraction``).
        self.rotated = rotated_dims(c)
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
            and self.temperature is None
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

    def _normed(self, norm: RMSNorm | None, x: Array) -> Array:
        """``x`` [..., heads, head_dim] through a q/k norm (none: unchanged)."""
        if norm is None:
            return x
        if self.qk_scope == "head":
            return norm(x)
        return norm(x.reshape(*x.shape[:-2], -1)).reshape(x.shape)

    def _rope(
        self, x: Array, positions: Array, length: Array | None = None, local: Local = None
    ) -> Array:
        """``x`` rotated as this layer's kind says: a windowed layer (``local``, as in
        ``_windowed``) of a config with ``rope_local_theta`` at that base, unscaled; else at
        ``rope_theta`` with ``rope_scaling``. A traced ``local`` (scanned layers of a mixed
        pattern) picks between both rotations. With ``rope_fraction`` below 1 only each head's
        first ``rotated`` dims turn (the rest pass through, as in GLM-4.5)."""
        if self.rotated < x.shape[-1]:
            turned = self._rope(x[..., : self.rotated], positions, length, local)
            return jnp.concatenate([turned, x[..., self.rotated :]], axis=-1)

        def wide() -> Array:
            if self.rope_proportion < 1.0:  # proportional RoPE of global layers
                return proportional_rope(
                    x, positions, theta=self.rope_theta, proportion=self.rope_proportion
                )
            return apply_rope(
                x, positions, theta=self.rope_theta, scaling=self.rope_scaling, length=length
            )

        if self.rope_local_theta is None or self.window is None or local is False:
            return wide()
        near = apply_rope(x, positions, theta=self.rope_local_theta)
        if local is None or local is True:
            return near
        return jnp.where(local, near, wide())

    def _position(
        self, x: Array, positions: Array, local: Local = None, length: Array | None = None
    ) -> Array:
        """``x`` [..., heads, head_dim] with this layer's positions: rotated (`_rope`) and, with
        ``qk_l2_norm``, over its RMS; a NoPE layer's (with ``global_nope``: a global one)
        unchanged."""

        def rotated() -> Array:
            y = self._rope(x, positions, length, local)
            if not self.qk_l2:
                return y
            f32 = y.astype(jnp.promote_types(y.dtype, jnp.float32))
            normed = f32 * jax.lax.rsqrt(jnp.mean(f32 * f32, -1, keepdims=True) + self.l2_eps)
            return normed.astype(y.dtype)

        if not self.global_nope or local is None or local is True:
            return rotated()
        if local is False:
            return x
        return jnp.where(local, rotated(), x)

    def _tempered(self, q: Array, positions: Array, local: Local) -> Array:
        """The queries of a NoPE layer times ``1 + scale · log(1 + floor((p + 1) /
        floor))`` at position ``p`` (transformers' ``attn_temperature_tuning``)."""
        if self.temperature is None or local is None or local is True:
            return q
        floor, scale = self.temperature
        f32 = jnp.promote_types(q.dtype, jnp.float32)
        p = positions.astype(f32)
        factor = jnp.log1p(jnp.floor((p + 1.0) / floor)) * scale + 1.0  # [b, s]
        tempered = (q.astype(f32) * factor[..., None, None]).astype(q.dtype)
        return tempered if local is False else jnp.where(local, q, tempered)

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
        k = self._normed(self.k_norm, raw)
        # Global layers without a value projection: the keys' projection, unnormed.
        v = raw if self.value is None else self.value(src, k_value)
        if self.value_norm:  # RMSNorm without a scale
            v = rms_norm(v, jnp.ones(v.shape[-1], v.dtype), self.norm_eps, v.dtype)
        if self.position == "rope" and positions is not None:
            k = self._position(k, positions, local)
        return k, v

    def _alike(self, x: Array) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]] | None:
        """``x``, the query/key/value kernels and biases in the compute dtype when the three
        projections are alike, or None where they are not (MLA, GQA, a LoRA adapter, no biases
        or a bias on some only) or run in float8: those take their own `Dense` calls."""
        if self.key is None or self.value is None or self.value_norm:
            return None
        parts = (self.query, self.key, self.value)
        if self.mla or self.num_kv_heads != self.num_heads:
            return None
        if any(p.lora is not None or p.n_in != 1 or p.bias is None for p in parts):
            return None
        if len({p.precision for p in parts}) != 1 or self.query.precision.fp8:
            return None  # fp8: each projection's own float8 product (`Dense`)
        dt = self.query.precision.compute_dtype
        kernels = tuple(p.kernel[...].astype(dt) for p in parts)
        biases = tuple(p.bias[...].astype(dt) for p in parts if p.bias is not None)
        return x.astype(dt), kernels, biases

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
            q = self._normed(self.q_norm, fused[0])
            if self.position == "rope":
                q = self._position(q, positions, local)
        else:
            q = self._normed(self.q_norm, self.query(x, k_query))
            if self.position == "rope":
                q = self._position(q, positions, local)
        if not self.deepseek:
            q = self._tempered(q, positions, local)
        rng = dropout_rng if drop > 0.0 else None
        if self.reads_kv:  # no cache of its own: a decode step by its positions alone
            step = cache_pos is not None and (s == 1 or extend)
            out = self._shared(q, shared, mask, positions, step, local, drop, rng)
            cache = None
        elif decoding:
            assert cache is not None and cache_pos is not None
            out, cache = self._decode(x, q, positions, cache, cache_pos, bias, local, kv_out)
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
            elif fused is not None:
                k, v = self._normed(self.k_norm, fused[1]), fused[2]
                if self.position == "rope":
                    k = self._position(k, positions, local)
            else:
                k, v = self._keys_values(x, positions, k_kv, local)
            if kv_out is not None:
                kv_out.update(k=k, v=v)
            if self.position == "alibi":
                bias = _add(bias, alibi_bias(positions, positions, self.num_heads))
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
                elif "latent" in cache:
                    assert self.kv_down is not None
                    new = {"latent": self.kv_down(x)}
                cache = self._write_prefill(new, cache, lengths)
        return self._output(x, out, k_out, out_bias), cache

    def _output(self, x: Array, out: Array, rng: Array | None, bias: bool = True) -> Array:
        """The heads' output ``[b, s, heads, width]`` to ``[b, s, d_model]``: DeepSeek's
        narrower values cut, tagged for remat, gated (Qwen3.5), projected (with the output
        projection's bias unless ``bias`` is False)."""
        if self.v_dim != self.width:
            out = out[..., : self.v_dim]
        out = checkpoint_name(out, "attention_output")
        if self.gate is not None:
            gate = jax.nn.sigmoid(self.gate(x).astype(jnp.promote_types(out.dtype, jnp.float32)))
            out = (out * gate).astype(out.dtype)
        return self.out(out, rng, add_bias=bias)

    def _shared(
        self,
        q: Array,
        shared: LayerCache | None,
        mask: kernels.AttentionMask,
        positions: Array,
        decoding: bool,
        local: Local,
        drop: float,
        rng: Array | None,
    ) -> Array:
        """Attend to another layer's keys and values (``kv_shared_layers``): the whole call's,
        with this layer's mask, or while decoding the ones its source attended over, by their
        positions (``shared["pos"]``) with this layer's window."""
        if shared is None:
            raise ValueError(
                "this layer reads an earlier layer's keys and values (kv_shared_layers); call it "
                "through its stack, which hands them over"
            )
        if current_sequence_parallel() is not None:
            raise ValueError(
                "kv_shared_layers are not supported under sequence_parallel; train without it"
            )
        k, v = shared["k"].astype(q.dtype), shared["v"].astype(q.dtype)
        if not decoding:
            return self._windowed(
                local,
                lambda near: self._kernel(
                    q, k, v, kernel=self.kernel, mask=self._mask(mask, near),
                    dropout_rate=drop, dropout_rng=rng,
                ),
            )  # fmt: skip
        visible = step_visible(shared["pos"], positions, window=self.window, local=local)
        return kernels.attention(
            q,
            k,
            v,
            mask=kernels.AttentionMask(sinks=self._sinks()),
            scale=self.scale,
            softcap=self.softcap,
            implementation="xla",
            bias=_masked(visible),
        )

    def _write_prefill(
        self, new: dict[str, Array], cache: LayerCache, lengths: Array | None
    ) -> LayerCache:
        """``new``'s arrays (keys and values, or latents) of a prompt written from slot 0."""
        slots = jax.tree.leaves(cache)[0].shape[1]
        # A rolling cache shorter than the prompt keeps its last real tokens.
        if jax.tree.leaves(new)[0].shape[1] > slots:
            new = last_real(new, slots, lengths)
        put = jax.lax.dynamic_update_slice_in_dim
        return {n: put(cache[n], a.astype(cache[n].dtype), 0, 1) for n, a in new.items()}

    def _decode(
        self,
        x: Array,
        q: Array,
        positions: Array,
        cache: LayerCache,
        cache_pos: Array,
        bias: Array | None,
        local: Local,
        kv_out: LayerCache | None,
    ) -> tuple[Array, LayerCache]:
        """A decode step of ``s >= 1`` tokens at ``positions`` (``cache_pos + i``): their keys
        and values (or latents) written into the cache, each query attending causally to the
        cache's earlier positions and the step's own (`tjx.nn.kv_cache.write_step`)."""
        s = x.shape[1]
        t = jax.tree.leaves(cache)[0].shape[1]
        if s > 1 and self.position == "rope" and _length_dependent(self.rope_scaling):
            raise ValueError(
                "a decode step of several tokens rotates them at one length, but this model's "
                "rope_scaling (dynamic or longrope) turns its frequencies with the length; "
                "decode one token per step (generate)"
            )
        # A rolling cache (the window's size) would lose keys the step's earlier tokens see.
        rolling = self.window is not None and t <= self.window
        finish = None  # DeepSeek's absorbed form: the value up-projection after attending
        if self.deepseek:
            cache, held, q, k, v, finish = ds.decode_step(
                self, x, q, positions, cache, cache_pos, local, rolling=rolling
            )
        elif "latent" in cache:
            assert self.kv_down is not None and self.key is not None and self.value is not None
            new = {"latent": self.kv_down(x)}
            cache, seen, held = write_step(cache, new, cache_pos, rolling=rolling)
            latent = seen["latent"].astype(q.dtype)
            k, v = self._normed(self.k_norm, self.key(latent)), self.value(latent)
            if self.position == "rope":  # each cached key at its own position (right padding)
                k = self._position(k, jnp.maximum(held, 0), local, jnp.max(cache_pos) + s)
        else:
            k_new, v_new = self._keys_values(x, positions, local=local)
            new = {"k": k_new, "v": v_new}
            cache, seen, held = write_step(cache, new, cache_pos, rolling=rolling)
            k, v = seen["k"].astype(q.dtype), seen["v"].astype(q.dtype)
            if kv_out is not None:
                kv_out.update(k=seen["k"], v=seen["v"], pos=held)
        if self.position == "alibi":
            bias = _add(bias, alibi_bias(positions, jnp.maximum(held, 0), self.num_heads))
        visible = step_visible(held, positions, window=self.window, chunk=self.chunk, local=local)
        if self.decode_topk is not None and self.decode_topk < k.shape[1]:
            out = topk_decode_attention(
                q,
                k,
                v,
                kv_mask=visible,
                topk=self.decode_topk,
                bias=bias,
                scale=self.scale,
                softcap=self.softcap,
            )
        else:
            # A few queries per row: the XLA path (fused kernels target long query blocks).
            out = kernels.attention(
                q,
                k,
                v,
                mask=kernels.AttentionMask(sinks=self._sinks()),
                scale=self.scale,
                softcap=self.softcap,
                implementation="xla",
                bias=_add(bias, _masked(visible)),
            )
        return (out if finish is None else finish(out)), cache


def _masked(visible: Array) -> Array:
    """float32 ``[b, 1, s, K]``: 0 where a query sees a key, ``-inf`` (the kernels' mask value)
    where not, as an additive bias (each query its own mask: a decode step of several tokens)."""
    return jnp.where(visible, 0.0, -jnp.inf).astype(jnp.float32)[:, None]


def _length_dependent(scaling: Any) -> bool:
    """Whether a RoPE scaling turns its frequencies with the call's length (dynamic, longrope)."""
    parsed = RopeScaling.parse(scaling)
    return parsed is not None and parsed.depends_on_length


def _add(bias: Array | None, extra: Array) -> Array:
    """``bias + extra`` where ``bias`` may be absent."""
    return extra if bias is None else bias + extra
