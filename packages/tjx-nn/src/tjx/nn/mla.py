"""DeepSeek's multi-head latent attention (V2, V2-Lite, V3), the form ``attention.type="mla"``
takes with ``qk_rope_head_dim`` set (tjx's older MLA, without it, rotates whole up-projected keys).

Per token ``x`` (``d_model``), with ``r = kv_latent_dim``, ``ρ = qk_rope_head_dim``, ``n =
head_dim − ρ`` and ``v_head_dim`` (default ``head_dim``):

* query: ``query(x)`` → ``[heads, head_dim]``, or with ``q_lora_rank`` (V3) the low-rank
  ``query(RMSNorm(query_down(x)))``; its last ``ρ`` dims of each head are rotated (RoPE);
* keys and values: the latent ``c = RMSNorm(kv_down(x))`` (``[r]``, ``kv_latent_norm``) is
  up-projected per head to ``key(c)`` (``[heads, n]``) and ``value(c)`` (``[heads,
  v_head_dim]``); one rotated key ``RoPE(key_rope(x))`` (``[ρ]``) is shared by every head and
  appended to each head's ``n`` dims. RoPE touches only the ``ρ`` dims, never the up-projection;
  the two latent norms take ``mla.latent_norm_eps`` (``norm.eps`` when None: transformers keeps
  them at 1e-6 whatever ``rms_norm_eps`` the other norms take, 1e-5 in some releases);
* the softmax scale is ``head_dim^-0.5``, times ``mscale²`` with a yarn ``rope_scaling`` that has
  ``mscale_all_dim`` (``mscale = 0.1·mscale_all_dim·ln(factor) + 1``, as DeepSeek-V3 and
  transformers compute it; yarn's own attention factor scales the rotated dims as for any model).

tjx rotates the "rotate-half" way (dim ``i`` with ``i + ρ/2``); DeepSeek's checkpoints rotate
interleaved pairs. q·k only needs q and k laid out alike, so the HF import permutes the rotated
rows of ``q_proj``/``q_b_proj`` and ``kv_a_proj_with_mqa`` (``hf.deepseek_tensors``).

The KV cache stores per token the normed latent (``r``) and the rotated shared key (``ρ``):
``{"latent", "rope_key"}`` ``[L, b, T, r | ρ]``, what DeepSeek caches. A decode step attends
over it in DeepSeek's absorbed form (``key`` folded into the query, ``value`` into the output:
`decode_step`), or, with a bias or a LoRA adapter on ``key``/``value``, up-projects every cached
latent again.

The attention kernels take one head width for q, k and v: when ``v_head_dim`` differs from
``head_dim`` the narrower side is padded with zeros to the wider and the output sliced back.
That is exact in every kernel (zeros add nothing to q·k nor to the weighted sum of values), at
the cost of the padded width's FLOPs and memory (DeepSeek-V3: values 128 → 192).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.attention_config import AttentionConfig
from tjx.nn.configs import TransformerConfig
from tjx.nn.kv_cache import write_step
from tjx.nn.linear import Dense, split_key
from tjx.nn.mla_config import MLAConfig
from tjx.nn.norms import RMSNorm
from tjx.nn.rope_scaling import RopeScaling

Array = jax.Array


#: The modules only DeepSeek's MLA has (None in other attention layers).
DEEPSEEK_ONLY = ("query_down", "query_latent_norm", "kv_latent_norm", "key_rope")


def is_deepseek(attention: AttentionConfig, mla: MLAConfig) -> bool:
    """Whether a model's self-attention (its ``attention`` and ``mla`` sections) is DeepSeek's
    MLA."""
    return attention.type == "mla" and mla.qk_rope_head_dim is not None


def value_dim(config: TransformerConfig) -> int:
    """A value head's width: ``v_head_dim``, else ``head_dim``."""
    assert config.head_dim is not None
    return int(config.mla.v_head_dim or config.head_dim)


def softmax_scale_factor(deepseek: bool, scaling: RopeScaling | None) -> float:
    """DeepSeek's yarn correction of the softmax scale: ``mscale²`` (1 without it), from whether
    the attention is DeepSeek's (`is_deepseek`) and the model's ``position.rope_scaling``."""
    s = scaling
    if not deepseek or s is None or not s.mscale_all_dim or s.factor is None:
        return 1.0
    mscale = 1.0 if s.factor <= 1 else 0.1 * s.mscale_all_dim * math.log(s.factor) + 1.0
    return mscale * mscale


def deepseek_modules(
    config: TransformerConfig, *, rngs: nnx.Rngs, common: dict[str, Any], init: Any
) -> dict[str, Any]:
    """The projections and norms of one DeepSeek MLA layer (the module docstring's names)."""
    c = config
    assert c.head_dim is not None and c.mla.kv_latent_dim is not None
    assert c.mla.qk_rope_head_dim is not None
    d, h, hd = c.d_model, c.num_heads, c.head_dim
    r, rope = c.mla.kv_latent_dim, c.mla.qk_rope_head_dim
    eps = c.norm.eps if c.mla.latent_norm_eps is None else c.mla.latent_norm_eps
    norm: dict[str, Any] = dict(rngs=rngs, eps=eps, precision=c.precision, plus_one=c.norm.plus_one)
    q_in = c.mla.q_lora_rank or d
    # The latent widths are not logical axes: left replicated (None), as tjx's older MLA's.
    return dict(
        query_down=(
            Dense((d,), (q_in,), ("embed",), (None,), init=init, **common)
            if c.mla.q_lora_rank
            else None
        ),
        query_latent_norm=RMSNorm(q_in, **norm) if c.mla.q_lora_rank else None,
        query=Dense(
            (q_in,),
            (h, hd),
            ("embed" if q_in == d else None,),
            ("heads", "head_dim"),
            init=init,
            **common,
        ),
        kv_down=Dense((d,), (r,), ("embed",), (None,), init=init, **common),
        kv_latent_norm=RMSNorm(r, **norm),
        key_rope=Dense((d,), (rope,), ("embed",), (None,), init=init, **common),
        key=Dense((r,), (h, hd - rope), (None,), ("kv_heads", "head_dim"), init=init, **common),
        value=Dense(
            (r,), (h, value_dim(c)), (None,), ("kv_heads", "head_dim"), init=init, **common
        ),
    )


def widen(x: Array, width: int) -> Array:
    """``x`` ``[..., w]`` padded with zeros to ``[..., width]`` (unchanged when ``w == width``)."""
    pad = width - x.shape[-1]
    if pad == 0:
        return x
    return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)])


def query(attn: Any, x: Array, positions: Array, lora_rng: Array | None, local: Any) -> Array:
    """``[b, s, heads, W]`` queries (``W``: the wider of ``head_dim`` and ``v_head_dim``), their
    last ``qk_rope_head_dim`` dims of ``head_dim`` rotated."""
    src = x if attn.query_down is None else attn.query_latent_norm(attn.query_down(x))
    q = attn.query(src, lora_rng)
    nope = q.shape[-1] - attn.rope_dim
    q = jnp.concatenate(
        [q[..., :nope], attn.positions.rope(q[..., nope:], positions, local=local)], -1
    )
    return widen(q, attn.width)


def latents(attn: Any, x: Array, positions: Array, local: Any) -> tuple[Array, Array]:
    """What the cache holds per token: the normed latent ``[b, s, r]`` and the rotated shared key
    ``[b, s, qk_rope_head_dim]``."""
    latent = attn.kv_latent_norm(attn.kv_down(x))
    rope_key = attn.positions.rope(attn.key_rope(x)[:, :, None, :], positions, local=local)
    return latent, rope_key[:, :, 0, :]


def keys_values(
    attn: Any, latent: Array, rope_key: Array, lora_rng: Array | None = None
) -> tuple[Array, Array]:
    """Keys and values ``[b, s, heads, W]`` of latents ``[b, s, r]`` and shared rotated keys
    ``[b, s, ρ]``: each head's up-projected key with the shared key appended, its value."""
    k_key, k_value = split_key(lora_rng, 2)
    k_nope = attn.key(latent, k_key)
    shared = jnp.broadcast_to(
        rope_key[:, :, None, :].astype(k_nope.dtype), (*k_nope.shape[:-1], rope_key.shape[-1])
    )
    k = jnp.concatenate([k_nope, shared], axis=-1)
    return widen(k, attn.width), widen(attn.value(latent, k_value), attn.width)


def absorbable(attn: Any) -> bool:
    """Whether a decode step may fold ``key`` into the query and ``value`` into the output:
    neither has a bias or a LoRA adapter (their kernels are then the whole map)."""
    return all(m.bias is None and m.lora is None for m in (attn.key, attn.value))


def decode_step(
    attn: Any,
    x: Array,
    q: Array,
    positions: Array,
    cache: dict[str, Array],
    cache_pos: Array,
    local: Any,
    *,
    rolling: bool = False,
) -> tuple[dict[str, Array], Array, Array, Array, Array, Callable[[Array], Array] | None]:
    """One decode step of ``s >= 1`` tokens from ``cache_pos``: the cache with their latents and
    rotated keys written (`tjx.nn.kv_cache.write_step`), the positions of the keys the step
    attends over, and the (query, keys, values, finish) it attends with, ``finish`` mapping the
    kernel's output to the value heads (None: the output already is).

    The absorbed form (DeepSeek's inference form, used when `absorbable`): with ``W_UK`` =
    ``key.kernel`` ``[r, h, n]`` and ``W_UV`` = ``value.kernel`` ``[r, h, v]``, a head's score
    ``q_n·(W_UK c) + q_ρ·k_ρ`` is ``(W_UKᵀ q_n)·c + q_ρ·k_ρ``, and its output ``Σ w (W_UV c)`` is
    ``W_UV (Σ w c)``: the step attends with one shared key/value head, ``[c, k_ρ]`` and ``c``,
    over the cache as it is, instead of up-projecting every cached latent (``T·r·h·(n+v)``
    multiply-adds per layer and step: for DeepSeek-V3's shapes at ``T`` = 4096 about 110× the
    absorbed step's, counted from the shapes, not timed). Same numbers up to float rounding (the
    sums are associated differently).
    """
    latent, rope_key = latents(attn, x, positions, local)
    new = {"latent": latent, "rope_key": rope_key}
    cache, seen, held = write_step(cache, new, cache_pos, rolling=rolling)
    lat, rk = seen["latent"].astype(q.dtype), seen["rope_key"].astype(q.dtype)
    if not absorbable(attn):
        return (cache, held, q, *keys_values(attn, lat, rk), None)
    r, nope = lat.shape[-1], attn.head_dim - attn.rope_dim
    w_uk = attn.key.kernel[...].astype(q.dtype)
    w_uv = attn.value.kernel[...].astype(q.dtype)
    q_lat = jnp.einsum("bshn,rhn->bshr", q[..., :nope], w_uk)
    q_abs = jnp.concatenate([q_lat, q[..., nope : attn.head_dim]], axis=-1)
    k_abs = jnp.concatenate([lat, rk], axis=-1)[:, :, None, :]  # one head, shared
    v_abs = widen(lat, k_abs.shape[-1])[:, :, None, :]

    def finish(out: Array) -> Array:
        return jnp.einsum("bshr,rhv->bshv", out[..., :r], w_uv)

    return cache, held, q_abs, k_abs, v_abs, finish
