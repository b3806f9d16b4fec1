"""Plain-XLA attention: the reference every fused kernel is tested against, and the fallback path.

The softmax subtracts the row maximum and runs in float32 whatever the input dtype; masked logits
are ``-inf`` (not a large negative constant) and a row whose keys are all masked gives zeros, with
zero gradients, instead of NaN or a uniform average. Zero-length sequences are valid: ``q_len == 0``
gives an empty ``[b, 0, h, d]`` result and ``kv_len == 0`` a zero one (no query sees a key).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from tjx.kernels._checks import (
    AttentionShapes,
    check_bias,
    check_dropout,
    check_qkv,
    check_scale,
    check_window,
    split_segment_ids,
    window_visible,
)
from tjx.kernels.mask import AttentionMask, check_mask
from tjx.kernels.softcap import check_softcap, soft_cap

Array = jax.Array


def attention_mask(shapes: AttentionShapes, mask: AttentionMask) -> Array | None:
    """The boolean array of ``mask``'s causal, segment, key-length and window parts
    ``[b|1, 1, s_q, s_k]`` (True = attend), or None when nothing is masked.

    Causal masking is top-left aligned (query ``i`` sees keys ``j <= i``), as in
    ``jax.nn.dot_product_attention``. Segment id 0 marks padding: a padding query attends to
    nothing and no query attends to a padding key. A sliding window keeps the keys within
    ``window`` of the query, itself included: ``i - window < j`` (and ``j < i + window`` when not
    causal). A ``chunk`` must have become segment ids first (`AttentionMask.unchunked`); sinks
    mask nothing.

    Parameters
    ----------
    shapes : AttentionShapes
        Sizes of the call (from ``check_qkv``).
    mask : AttentionMask
        The call's mask.

    Returns
    -------
    Array or None
        Boolean ``[b|1, 1, s_q, s_k]``, True where a query may attend to a key; ``None`` when
        nothing is masked.
    """
    check_window(mask.window)
    s_q, s_k = shapes.q_len, shapes.kv_len
    dense: Array | None = None

    def conj(a: Array | None, b: Array) -> Array:
        return b if a is None else jnp.logical_and(a, b)

    near = window_visible(
        jnp.arange(s_q)[:, None], jnp.arange(s_k)[None, :], causal=mask.causal, window=mask.window
    )
    if near is not None:
        dense = conj(dense, near[None, None])
    q_ids, kv_ids = split_segment_ids(mask.segment_ids)
    if q_ids is not None and kv_ids is not None:
        same = q_ids[:, :, None] == kv_ids[:, None, :]
        valid = (q_ids[:, :, None] != 0) & (kv_ids[:, None, :] != 0)
        dense = conj(dense, (same & valid)[:, None])
    if mask.kv_lengths is not None:
        keep = jnp.arange(s_k)[None, :] < jnp.asarray(mask.kv_lengths)[:, None]
        dense = conj(dense, keep[:, None, None, :])
    return dense


def rows_seeing_a_key(shapes: AttentionShapes, mask: AttentionMask) -> Array | None:
    """Whether each query row of ``mask`` sees at least one key (the rows a kernel that does not
    zero them itself must have zeroed: :func:`zero_unseen_rows`).

    Parameters
    ----------
    shapes : AttentionShapes
        Sizes of the call (from ``check_qkv``).
    mask : AttentionMask
        The call's mask (as in :func:`attention_mask`).

    Returns
    -------
    Array or None
        Boolean ``[batch, q_len]``; ``None`` when nothing is masked (every row sees a key).
    """
    dense = attention_mask(shapes, mask)
    if dense is None:
        return None
    return jnp.broadcast_to(jnp.any(dense[:, 0], axis=-1), (shapes.batch, shapes.q_len))


def zero_unseen_rows(out: Array, visible: Array | None) -> Array:
    """``out [batch, q_len, heads, head_dim]`` with the rows where ``visible`` (from
    :func:`rows_seeing_a_key`; ``None``: every row) is False set to 0, as this reference gives
    them."""
    if visible is None:
        return out
    return jnp.where(visible[:, :, None, None], out, jnp.zeros((), out.dtype))


def reference_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    bias: Array | None = None,
    softcap: float | None = None,
) -> Array:
    """Multi-head attention in plain XLA (the reference implementation).

    Parameters
    ----------
    q, k, v, mask, scale, dropout_rate, dropout_rng, bias, softcap
        As in :func:`tjx.kernels.attention`, whose XLA path this is: every part of the mask is
        served, sinks included (one learned logit per query head, gpt-oss: a column every query
        sees in the softmax's denominator with no value behind it, so a row's probabilities sum
        to less than 1); the bias is added after scaling and after the soft cap.

    Returns
    -------
    Array
        ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype. Rows with no visible key are zero
        (every row when ``kv_len == 0``); ``q_len == 0`` gives an empty array.
    """
    shapes = check_qkv(q, k, v)
    check_dropout(dropout_rate, dropout_rng)
    h = q.shape[2]
    p = _probabilities(q, k, shapes, mask, scale=scale, bias=bias, softcap=softcap)
    acc_t = p.dtype
    if dropout_rate > 0.0:
        assert dropout_rng is not None
        keep = jax.random.bernoulli(dropout_rng, 1.0 - dropout_rate, p.shape)
        p = jnp.where(keep, p / (1.0 - dropout_rate), 0.0)
    v = _per_query_head(v, h)
    out = jnp.einsum("bhqs,bshd->bqhd", p.astype(v.dtype), v, preferred_element_type=acc_t)
    return out.astype(q.dtype)


def _per_query_head(x: Array, heads: int) -> Array:
    """Keys or values ``[b, s, h_kv, d]`` repeated to one per query head (GQA/MQA); as is when
    ``h_kv == heads``.

    Why not a grouped 5-D einsum: XLA:CPU runs the 4-D form's forward and backward 1.6× faster for
    GQA (measured, 8 query and 2 kv heads), and the repeated keys are small next to the logits.
    """
    g = heads // x.shape[2]
    return x if g == 1 else jnp.repeat(x, g, axis=2)


@jax.custom_jvp
def _masked_softmax(logits: Array) -> Array:
    """Softmax over the last axis where ``-inf`` entries are masked and an all-masked row is 0.

    The row maximum is subtracted; an all ``-inf`` row (or an empty one) shifts by 0 so that it
    sums to 0 and gives zeros instead of NaN.
    """
    # `initial=-inf`: with no keys at all (kv_len 0) the max of an empty row is -inf, like a
    # fully masked row, instead of an error; it changes nothing when the row has entries.
    row_max = jnp.max(logits, axis=-1, keepdims=True, initial=-jnp.inf)
    row_max = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.exp(logits - row_max)
    denom = jnp.sum(p, axis=-1, keepdims=True)
    return p / jnp.where(denom == 0.0, 1.0, denom)


@_masked_softmax.defjvp
def _masked_softmax_jvp(primals: tuple[Array], tangents: tuple[Array]) -> tuple[Array, Array]:
    # The softmax's own derivative, p * (t - <p, t>), instead of differentiating the max, shift,
    # exp, sum and division above one by one: XLA:CPU runs the whole attention forward and backward
    # in 0.65× the time with it (measured, batch 8, 256 tokens, 4 heads of 64). Masked entries
    # have p = 0 and a finite tangent, so they stay 0; an all-masked row has a zero derivative.
    (logits,), (t,) = primals, tangents
    p = _masked_softmax(logits)
    return p, p * (t - jnp.sum(p * t, axis=-1, keepdims=True))


def _probabilities(
    q: Array,
    k: Array,
    shapes: AttentionShapes,
    mask: AttentionMask | None,
    *,
    scale: float | None,
    bias: Array | None,
    softcap: float | None = None,
) -> Array:
    """Softmax probabilities ``[b, h, s_q, s_k]`` (float32 or wider)."""
    mask = AttentionMask() if mask is None else mask
    check_mask(mask)
    mask.check(shapes)
    mask = mask.unchunked(shapes)  # as the dispatcher does: a chunk is segment ids
    sinks = mask.sinks
    check_bias(bias, shapes)
    check_scale(scale)
    check_softcap(softcap)
    h, d = q.shape[2], q.shape[3]
    sm_scale = 1.0 / math.sqrt(d) if scale is None else float(scale)
    acc_t = jnp.promote_types(q.dtype, jnp.float32)
    k = _per_query_head(k, h)
    logits = jnp.einsum("bqhd,bshd->bhqs", q, k, preferred_element_type=acc_t)
    logits = soft_cap(logits * jnp.asarray(sm_scale, acc_t), softcap)
    if bias is not None:
        logits = logits + bias.astype(acc_t)  # [b|1, h|1, s_q, s_k]
    dense = attention_mask(shapes, mask)
    if dense is not None:
        logits = jnp.where(dense, logits, -jnp.inf)  # [b|1, 1, s_q, s_k]
    if sinks is None:
        return _masked_softmax(logits)
    # The sink: one more column per head, seen by every query (never masked), then dropped.
    b, _, s_q, _ = logits.shape
    column = jnp.broadcast_to(sinks.astype(acc_t)[None, :, None, None], (b, h, s_q, 1))
    return _masked_softmax(jnp.concatenate([logits, column], axis=-1))[..., :-1]


def attention_weights(
    q: Array,
    k: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    bias: Array | None = None,
    softcap: float | None = None,
) -> Array:
    """The attention probabilities of :func:`reference_attention` (without dropout).

    For inspection (attention maps, distances): the same masks, bias and scale as the call the
    model made, so ALiBi, T5 bias and packed-document masks are all in them.

    Parameters
    ----------
    q, k, mask, scale, bias, softcap
        As in :func:`reference_attention` (``k``'s heads may be fewer: GQA/MQA).

    Returns
    -------
    Array
        float32 (or wider) ``[batch, heads, q_len, kv_len]`` (empty when either length is 0);
        each row sums to 1 (less with ``sinks``), or is all zero
        where the query sees no key (padding).
    """
    shapes = check_qkv(q, k, k)
    return _probabilities(q, k, shapes, mask, scale=scale, bias=bias, softcap=softcap)
