"""An attention layer's projections, apart from the layer: the q/k/v projections it is built
with; at call time, a q/k norm per head or over the whole projection, and whether the query, key
and value projections are alike enough to run as one stacked product
(`tjx.nn.linear.stacked_projection`) or one tensor for a kernel that reads a stacked qkv
(`tjx.nn.linear.joint_projection`); the heads' output gated and projected back.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from tjx.nn.linear import Dense
from tjx.nn.norms import RMSNorm
from tjx.nn.params import Initializer

Array = jax.Array


def normed(norm: RMSNorm | None, scope: str, x: Array) -> Array:
    """``x`` [..., heads, head_dim] through a q/k norm (none: unchanged).

    Parameters
    ----------
    norm : RMSNorm, optional
        The layer's query or key norm.
    scope : str
        ``"head"``: per head (Qwen3, Gemma 3); else over the whole projection (OLMo 2).
    x : Array
        Queries or keys ``[..., heads, head_dim]``.

    Returns
    -------
    Array
        ``x`` normed, in its shape.
    """
    if norm is None:
        return x
    if scope == "head":
        return norm(x)
    return norm(x.reshape(*x.shape[:-2], -1)).reshape(x.shape)


def qkv_alike(
    x: Array,
    parts: tuple[Dense, Dense | None, Dense | None],
    *,
    grouped: bool,
    value_norm: bool,
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]] | None:
    """``x``, the query/key/value kernels and biases in the compute dtype when the three
    projections are alike, or None where they are not (MLA, GQA, a LoRA adapter, no biases or a
    bias on some only) or run in float8: those take their own `Dense` calls.

    Parameters
    ----------
    x : Array
        The projections' input ``[b, s, d_model]``.
    parts : (Dense, Dense or None, Dense or None)
        The query, key and value projections (None: a layer without its own).
    grouped : bool
        Keys and values of other heads than the queries (MLA's latent, GQA): never alike.
    value_norm : bool
        The values are normed after their projection: not alike.

    Returns
    -------
    (x, kernels, biases) or None
    """
    query, key, value = parts
    if key is None or value is None or value_norm:
        return None
    alike_parts = (query, key, value)
    if grouped:
        return None
    if any(p.lora is not None or p.n_in != 1 or p.bias is None for p in alike_parts):
        return None
    if len({p.precision for p in alike_parts}) != 1 or query.precision.fp8:
        return None  # fp8: each projection's own float8 product (`Dense`)
    dt = query.precision.compute_dtype
    kernels = tuple(p.kernel[...].astype(dt) for p in alike_parts)
    biases = tuple(p.bias[...].astype(dt) for p in alike_parts if p.bias is not None)
    return x.astype(dt), kernels, biases


def output(
    x: Array,
    out: Array,
    proj: tuple[Dense, Dense | None],
    widths: tuple[int, int],
    rng: Array | None,
    bias: bool = True,
) -> Array:
    """The heads' output ``[b, s, heads, width]`` to ``[b, s, d_model]``: DeepSeek's narrower
    values cut, tagged for remat, gated (Qwen3.5), projected.

    Parameters
    ----------
    x : Array
        The layer's input ``[b, s, d_model]`` (the gate's).
    out : Array
        The kernel's output ``[b, s, heads, width]``.
    proj : (Dense, Dense or None)
        The output projection and the output gate (None: ungated).
    widths : (int, int)
        The values' width and the kernels' (``width``): where they differ ``out`` is cut to the
        values' (DeepSeek's values, padded to the kernels' width).
    rng : Array, optional
        The dropout key of the projection's LoRA adapter.
    bias : bool
        Add the output projection's bias (False: the caller adds it).

    Returns
    -------
    Array
        ``[b, s, d_model]``.
    """
    out_proj, gate_proj = proj
    v_dim, width = widths
    if v_dim != width:
        out = out[..., :v_dim]
    out = checkpoint_name(out, "attention_output")
    if gate_proj is not None:
        gate = jax.nn.sigmoid(gate_proj(x).astype(jnp.promote_types(out.dtype, jnp.float32)))
        out = (out * gate).astype(out.dtype)
    return out_proj(out, rng, add_bias=bias)


def qkv_projections(
    sizes: tuple[int, int, int, int],
    *,
    latent: int | None,
    own_kv: bool,
    own_values: bool,
    init: Initializer,
    qkv: dict[str, Any],
    common: dict[str, Any],
) -> tuple[Dense, Dense | None, Dense | None, Dense | None]:
    """A (non-DeepSeek) attention layer's query, latent, key and value projections, made in that
    order (their keys are drawn in it).

    Parameters
    ----------
    sizes : tuple of int
        ``(d_model, heads, kv_heads, head_dim)``: the layer's own.
    latent : int or None
        MLA's shared latent width (keys and values from ``kv_down``, replicated: the latent dim
        is not a logical axis); None: keys and values from the input.
    own_kv, own_values : bool
        The layer projects its own keys (not read from another layer's) and its own values (not
        the keys' projection reused).
    init : Initializer
        The weights' initializer.
    qkv, common : dict
        `Dense`'s keywords for q/k/v (their biases) and for the other projections.

    Returns
    -------
    tuple
        ``(query, kv_down, key, value)``; None where the layer has none.
    """
    d, h, hk, hd = sizes
    query = Dense((d,), (h, hd), ("embed",), ("heads", "head_dim"), init=init, **qkv)
    if latent is not None:
        kv_down = Dense((d,), (latent,), ("embed",), (None,), init=init, **common)
        latent_key = Dense((latent,), (hk, hd), (None,), ("kv_heads", "head_dim"), init=init, **qkv)
        latent_value = Dense(
            (latent,), (hk, hd), (None,), ("kv_heads", "head_dim"), init=init, **qkv
        )
        return query, kv_down, latent_key, latent_value
    kv = ("kv_heads", "head_dim")
    key = Dense((d,), (hk, hd), ("embed",), kv, init=init, **qkv) if own_kv else None
    value = (
        Dense((d,), (hk, hd), ("embed",), kv, init=init, **qkv) if own_kv and own_values else None
    )
    return query, None, key, value
