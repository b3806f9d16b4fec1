"""Preallocated KV caches for incremental decoding, their size, and top-k sparse decode attention.

A cache is a dict of stacked arrays with a leading ``layers`` axis:
``{"k": [L, b, T, kv_heads, head_dim], "v": ...}`` for standard attention, or
``{"latent": [L, b, T, kv_latent_dim]}`` for the MLA-style compressed cache (keys and values are
up-projected from the latent at each decode step). Slot ``t`` holds the token at absolute
position ``t`` (prompts are right-padded, see ``generate``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels import soft_cap
from tjx.nn.configs import TransformerConfig

Array = jax.Array
LayerCache = dict[str, Array]


def init_cache(
    config: TransformerConfig,
    batch: int,
    max_len: int,
    dtype: Any = None,
    *,
    num_layers: int | None = None,
) -> dict[str, Array]:
    """Zeros cache for ``batch`` sequences of up to ``max_len`` tokens.

    ``dtype`` defaults to the config's compute dtype; ``num_layers`` to ``config.num_layers``
    (an encoder-decoder passes its decoder depth).

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    batch : int
        Rows.
    max_len : int
        Slots per row (``<= max_seq_len``).
    dtype : dtype, optional
        Cache dtype.
    num_layers : int, optional
        Cached layers (default ``config.num_layers``).

    Returns
    -------
    dict of str to Array
        ``{"k", "v"}`` ``[L, b, T, kv_heads, head_dim]`` or ``{"latent"}`` ``[L, b, T, r]``.
    """
    if max_len > config.max_seq_len:
        raise ValueError(
            f"cache length {max_len} exceeds the model's max_seq_len={config.max_seq_len}"
        )
    dt = dtype or config.precision.compute_dtype
    L = config.num_layers if num_layers is None else num_layers
    if config.attention_type == "mla":
        assert config.kv_latent_dim is not None
        return {"latent": jnp.zeros((L, batch, max_len, config.kv_latent_dim), dt)}
    assert config.num_kv_heads is not None and config.head_dim is not None
    shape = (L, batch, max_len, config.num_kv_heads, config.head_dim)
    return {"k": jnp.zeros(shape, dt), "v": jnp.zeros(shape, dt)}


def kv_cache_bytes(
    config: TransformerConfig, *, batch: int, seq_len: int, dtype: Any = jnp.bfloat16
) -> int:
    """Bytes of the KV cache for ``batch × seq_len`` tokens under ``config``.

    Standard attention stores ``2 · L · kv_heads · head_dim`` values per token; MLA stores
    ``L · kv_latent_dim``. Compare ``kv_cache_bytes(cfg)`` with
    ``kv_cache_bytes(cfg.replace(attention_type="mha", kv_latent_dim=None))`` for the saving.

    Parameters
    ----------
    config : TransformerConfig
        The model's config.
    batch, seq_len : int
        Cached rows and tokens per row.
    dtype : dtype
        Cache dtype.

    Returns
    -------
    int
        Bytes.
    """
    itemsize = jnp.dtype(dtype).itemsize
    if config.attention_type == "mla":
        assert config.kv_latent_dim is not None
        per_token = config.kv_latent_dim
    else:
        assert config.num_kv_heads is not None and config.head_dim is not None
        per_token = 2 * config.num_kv_heads * config.head_dim
    return int(config.num_layers * batch * seq_len * per_token * itemsize)


def topk_decode_attention(
    q: Array,
    k: Array,
    v: Array,
    *,
    kv_lengths: Array,
    topk: int,
    bias: Array | None = None,
    scale: float | None = None,
    softcap: float | None = None,
) -> Array:
    """Decode-time sparse attention: each query head keeps its ``topk`` highest-scoring keys.

    Parameters
    ----------
    q : Array
        ``[b, s_q, h, d]`` (``s_q`` is 1 when decoding).
    k, v : Array
        ``[b, T, h_kv, d]``; head ``h`` uses kv head ``h // (h / h_kv)`` as in tjx.kernels.
    kv_lengths : Array
        int ``[b]``; keys at ``>= kv_lengths`` are invalid and never selected.
    topk : int
        Keys kept per query and head (softmax over those only).
    bias : Array, optional
        Additive ``[b|1, h|1, s_q, T]`` logit bias (ALiBi), applied before selection.
    scale : float, optional
        Logit scale; default ``1/sqrt(d)``.
    softcap : float, optional
        Soft-cap the scaled logits (``softcap · tanh(x / softcap)``, Gemma 2) before the bias.

    Returns
    -------
    Array
        ``[b, s_q, h, d]`` in ``q``'s dtype.
    """
    b, s_q, h, d = q.shape
    t, h_kv = k.shape[1], k.shape[2]
    g = h // h_kv
    kk = jnp.repeat(k, g, axis=2)
    vv = jnp.repeat(v, g, axis=2)
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, kk, preferred_element_type=jnp.float32)
    logits = soft_cap(logits * (1.0 / math.sqrt(d) if scale is None else scale), softcap)
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    valid = jnp.arange(t)[None, :] < kv_lengths[:, None]  # [b, T]
    logits = jnp.where(valid[:, None, None, :], logits, -jnp.inf)
    kth = jax.lax.top_k(logits, min(topk, t))[0][..., -1:]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
    probs = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum(
        "bhqk,bkhd->bqhd", probs.astype(v.dtype), vv, preferred_element_type=jnp.float32
    )
    return out.astype(q.dtype)
