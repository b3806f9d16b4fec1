"""Multi-head attention with GQA/MQA (``num_kv_heads``), cross-attention, RoPE/ALiBi, an
optional MLA-style low-rank key/value path, and KV-cache prefill/decode.

The score/softmax/value step is ``tjx.kernels.attention`` (layout ``[batch, seq, heads,
head_dim]``), so the kernel is a config switch (``attention_impl``). Its output is tagged
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
from tjx.nn.configs import TransformerConfig
from tjx.nn.kv_cache import LayerCache, topk_decode_attention
from tjx.nn.linear import Dense, split_key
from tjx.nn.params import normal
from tjx.nn.positions import alibi_bias, apply_rope

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
    """

    def __init__(
        self,
        config: TransformerConfig,
        *,
        rngs: nnx.Rngs,
        causal: bool = False,
        cross: bool = False,
        out_std: float | None = None,
    ) -> None:
        c = config
        assert c.head_dim is not None and c.num_kv_heads is not None
        self.num_heads, self.num_kv_heads, self.head_dim = c.num_heads, c.num_kv_heads, c.head_dim
        self.causal, self.cross = causal, cross
        self.position = "none" if cross else c.position
        self.rope_theta = c.rope_theta
        self.rope_scaling = c.rope_scaling
        self.impl = c.attention_impl
        self.attention_dropout = c.attention_dropout
        self.decode_topk = c.decode_topk
        self.mla = c.attention_type == "mla" and not cross
        d, h, hk, hd = c.d_model, c.num_heads, c.num_kv_heads, c.head_dim
        common: dict[str, Any] = dict(rngs=rngs, use_bias=c.use_bias, precision=c.precision)
        init = normal(c.init_std)
        # Qwen2 has biases on q/k/v only (``qkv_bias``); ``use_bias`` puts them everywhere.
        qkv: dict[str, Any] = dict(common, use_bias=c.use_bias or c.qkv_bias)
        self.query = Dense((d,), (h, hd), ("embed",), ("heads", "head_dim"), init=init, **qkv)
        if self.mla:
            r = c.kv_latent_dim
            assert r is not None
            # The latent dim is not one of the logical axes: leave it replicated (None).
            self.kv_down: Dense | None = Dense((d,), (r,), ("embed",), (None,), init=init, **common)
            self.key = Dense((r,), (hk, hd), (None,), ("kv_heads", "head_dim"), init=init, **qkv)
            self.value = Dense((r,), (hk, hd), (None,), ("kv_heads", "head_dim"), init=init, **qkv)
        else:
            self.kv_down = None
            self.key = Dense((d,), (hk, hd), ("embed",), ("kv_heads", "head_dim"), init=init, **qkv)
            self.value = Dense(
                (d,), (hk, hd), ("embed",), ("kv_heads", "head_dim"), init=init, **qkv
            )
        self.out = Dense(
            (h, hd),
            (d,),
            ("heads", "head_dim"),
            ("embed",),
            init=normal(out_std if out_std is not None else c.init_std),
            **common,
        )

    def _keys_values(
        self, src: Array, positions: Array | None, lora_rng: Array | None = None
    ) -> tuple[Array, Array]:
        if self.kv_down is not None:
            src = self.kv_down(src)
        k_key, k_value = split_key(lora_rng, 2)
        k, v = self.key(src, k_key), self.value(src, k_value)
        if self.position == "rope" and positions is not None:
            k = apply_rope(k, positions, theta=self.rope_theta, scaling=self.rope_scaling)
        return k, v

    def project_context(self, context: Array) -> tuple[Array, Array]:
        """Cross-attention keys and values ``[b, s_ctx, kv_heads, head_dim]`` of ``context``."""
        return self._keys_values(context, None)

    def _kernel(self, q: Array, k: Array, v: Array, *, impl: str, **kw: Any) -> Array:
        # An additive bias (ALiBi, T5) or attention dropout makes tjx.kernels take its XLA path.
        return kernels.attention(
            q, k, v, scale=1.0 / math.sqrt(self.head_dim), implementation=impl, **kw  # type: ignore[arg-type]
        )

    def __call__(
        self,
        x: Array,
        *,
        positions: Array | None = None,
        segment_ids: Any = None,
        context: Array | None = None,
        deterministic: bool = True,
        dropout_rng: Array | None = None,
        cache: LayerCache | None = None,
        cache_pos: Array | None = None,
        kv: tuple[Array, Array] | None = None,
        bias: Array | None = None,
        lora_rng: Array | None = None,
    ) -> tuple[Array, LayerCache | None]:
        """Attend.

        Parameters
        ----------
        x : Array
            Queries' input ``[b, s, d_model]``.
        positions : Array, optional
            int ``[b, s]`` absolute positions (RoPE/ALiBi).
        segment_ids : Array or pair, optional
            Passed to the kernel (0 = padding). For cross-attention a pair (q_ids, kv_ids).
        context : Array, optional
            ``[b, s_ctx, d_model]`` keys/values input for cross-attention.
        cache, cache_pos : optional
            KV cache of this layer and int ``[b]`` write positions. With ``s > 1`` this is a
            prefill (``cache_pos`` must be 0: the chunk attends causally to itself and is written
            at slots ``0..s-1``); with ``s == 1`` a decode step (written at ``cache_pos``, attends
            to slots ``<= cache_pos``).
        kv : (Array, Array), optional
            Cross-attention only: keys and values ``[b, s_ctx, kv_heads, head_dim]`` already
            projected from the context (``project_context``), so decoding does not re-project
            the encoder output at every step.
        bias : Array, optional
            Additive float32 logit bias ``[b|1, heads, s, s_kv]`` from the stack (T5 relative
            positions, ``RelativePositionBias``); for a decode step ``s_kv`` is the cache length.
        lora_rng : Array, optional
            The dropout key of the projections' LoRA adapters (a training call).

        Returns
        -------
        (out [b, s, d_model], updated cache or None)
        """
        b, s, _ = x.shape
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        k_query, k_kv, k_out = split_key(lora_rng, 3)
        q = self.query(x, k_query)
        if self.position == "rope":
            q = apply_rope(q, positions, theta=self.rope_theta, scaling=self.rope_scaling)
        drop = 0.0 if deterministic else self.attention_dropout
        rng = dropout_rng if drop > 0.0 else None
        if cache is not None and cache_pos is not None and s == 1:
            out, cache = self._decode(x, q, positions, cache, cache_pos, bias)
        else:
            impl = self.impl
            if self.cross:
                if kv is not None:
                    k, v = kv
                    # One query per row while decoding: the XLA path, as for self-attention.
                    impl = "xla" if s == 1 else impl
                elif context is None:
                    raise ValueError("cross-attention needs `context` (or precomputed `kv`)")
                else:
                    k, v = self.project_context(context)
            else:
                k, v = self._keys_values(x, positions, k_kv)
            if self.position == "alibi":
                bias = _add(bias, alibi_bias(positions, positions, self.num_heads))
            out = self._kernel(
                q,
                k,
                v,
                impl=impl,
                causal=self.causal,
                segment_ids=segment_ids,
                dropout_rate=drop,
                dropout_rng=rng,
                bias=bias,
            )
            if cache is not None:
                cache = self._write_prefill(x, k, v, cache)
        out = checkpoint_name(out, "attention_output")
        return self.out(out, k_out), cache

    def _write_prefill(self, x: Array, k: Array, v: Array, cache: LayerCache) -> LayerCache:
        if "latent" in cache:
            assert self.kv_down is not None
            lat = self.kv_down(x).astype(cache["latent"].dtype)
            return {"latent": jax.lax.dynamic_update_slice_in_dim(cache["latent"], lat, 0, 1)}
        return {
            "k": jax.lax.dynamic_update_slice_in_dim(cache["k"], k.astype(cache["k"].dtype), 0, 1),
            "v": jax.lax.dynamic_update_slice_in_dim(cache["v"], v.astype(cache["v"].dtype), 0, 1),
        }

    def _decode(
        self,
        x: Array,
        q: Array,
        positions: Array,
        cache: LayerCache,
        cache_pos: Array,
        bias: Array | None,
    ) -> tuple[Array, LayerCache]:
        b = x.shape[0]
        rows = jnp.arange(b)
        if "latent" in cache:
            assert self.kv_down is not None
            lat = self.kv_down(x)[:, 0].astype(cache["latent"].dtype)
            cache = {"latent": cache["latent"].at[rows, cache_pos].set(lat)}
            # Up-project every cached latent; slot index == absolute position (right padding).
            t = cache["latent"].shape[1]
            slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            latent = cache["latent"].astype(q.dtype)
            k, v = self.key(latent), self.value(latent)
            if self.position == "rope":
                k = apply_rope(k, slots, theta=self.rope_theta, scaling=self.rope_scaling)
        else:
            k_new, v_new = self._keys_values(x, positions)
            cache = {
                "k": cache["k"].at[rows, cache_pos].set(k_new[:, 0].astype(cache["k"].dtype)),
                "v": cache["v"].at[rows, cache_pos].set(v_new[:, 0].astype(cache["v"].dtype)),
            }
            k, v = cache["k"].astype(q.dtype), cache["v"].astype(q.dtype)
        lengths = (cache_pos + 1).astype(jnp.int32)
        t = k.shape[1]
        if self.position == "alibi":
            slots = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32), (b, t))
            bias = _add(bias, alibi_bias(positions, slots, self.num_heads))
        if self.decode_topk is not None and self.decode_topk < t:
            out = topk_decode_attention(
                q, k, v, kv_lengths=lengths, topk=self.decode_topk, bias=bias
            )
        else:
            # One query per row: the XLA path (fused kernels target long query blocks).
            out = kernels.attention(
                q,
                k,
                v,
                kv_lengths=lengths,
                scale=1.0 / math.sqrt(self.head_dim),
                implementation="xla",
                bias=bias,
            )
        return out, cache


def _add(bias: Array | None, extra: Array) -> Array:
    """``bias + extra`` where ``bias`` may be absent."""
    return extra if bias is None else bias + extra
