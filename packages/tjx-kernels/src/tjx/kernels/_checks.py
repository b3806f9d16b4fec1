"""Argument validation shared by the attention entry points.

Every check raises ``ValueError`` naming the offending argument and what is supported, so a caller
sees the contract instead of an XLA shape error deep inside a kernel.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

#: Floating dtypes every attention implementation accepts.
SUPPORTED_DTYPES: tuple[jnp.dtype, ...] = (
    jnp.dtype(jnp.float32),
    jnp.dtype(jnp.bfloat16),
    jnp.dtype(jnp.float16),
    jnp.dtype(jnp.float64),
)

SegmentIds = Array | tuple[Array, Array]


class AttentionShapes(NamedTuple):
    """Static sizes of one attention call, after validation."""

    batch: int
    q_len: int
    kv_len: int
    num_heads: int
    num_kv_heads: int
    head_dim: int


def check_qkv(q: Array, k: Array, v: Array) -> AttentionShapes:
    """Validate q [b, s_q, h, d], k/v [b, s_k, h_kv, d] and return their sizes."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(
                f"`{name}` must have rank 4 [batch, seq, heads, head_dim]; got shape {x.shape}"
            )
        if jnp.dtype(x.dtype) not in SUPPORTED_DTYPES:
            raise ValueError(
                f"`{name}` has dtype {x.dtype}; supported: "
                f"{', '.join(str(d) for d in SUPPORTED_DTYPES)}"
            )
    if k.shape != v.shape:
        raise ValueError(f"`k` and `v` must have the same shape; got {k.shape} and {v.shape}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"`q`, `k`, `v` must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    b, s_q, h, d = q.shape
    if k.shape[0] != b:
        raise ValueError(f"`k`/`v` batch {k.shape[0]} differs from `q` batch {b}")
    if k.shape[3] != d:
        raise ValueError(f"`k`/`v` head_dim {k.shape[3]} differs from `q` head_dim {d}")
    h_kv = k.shape[2]
    if h_kv == 0 or h % h_kv != 0:
        raise ValueError(
            f"`q` heads ({h}) must be a multiple of `k`/`v` heads ({h_kv}) (GQA/MQA); "
            "supported: num_kv_heads dividing num_heads"
        )
    return AttentionShapes(b, s_q, k.shape[1], h, h_kv, d)


def check_stacked_qkv(qkv: Array) -> AttentionShapes:
    """Validate a stacked ``qkv`` ``[batch, seq, 3, heads, head_dim]`` (queries, keys, values in
    slots 0-2 of axis 2) and return its sizes."""
    if qkv.ndim != 5 or qkv.shape[2] != 3:
        raise ValueError(
            "`qkv` must have shape [batch, seq, 3, heads, head_dim] (queries, keys, values "
            f"stacked on axis 2); got {qkv.shape}"
        )
    if jnp.dtype(qkv.dtype) not in SUPPORTED_DTYPES:
        raise ValueError(
            f"`qkv` has dtype {qkv.dtype}; supported: {', '.join(str(d) for d in SUPPORTED_DTYPES)}"
        )
    b, s, _, h, d = qkv.shape
    return AttentionShapes(b, s, s, h, h, d)


def check_segment_ids(segment_ids: SegmentIds | None, shapes: AttentionShapes) -> None:
    """Validate ``segment_ids``: one int array [b, s] (self-attention) or a (q_ids, kv_ids) pair."""
    if segment_ids is None:
        return
    if isinstance(segment_ids, tuple | list):
        if len(segment_ids) != 2:
            raise ValueError("`segment_ids` as a sequence must be a pair (q_ids, kv_ids)")
        q_ids, kv_ids = segment_ids
    else:
        if shapes.q_len != shapes.kv_len:
            raise ValueError(
                "`segment_ids` as one array needs q and k of the same length "
                f"(got {shapes.q_len} and {shapes.kv_len}); pass a pair (q_ids, kv_ids)"
            )
        q_ids = kv_ids = segment_ids
    for name, ids, length in (("q", q_ids, shapes.q_len), ("kv", kv_ids, shapes.kv_len)):
        if ids.shape != (shapes.batch, length):
            raise ValueError(
                f"`segment_ids` ({name}) must have shape {(shapes.batch, length)}; got {ids.shape}"
            )
        if not jnp.issubdtype(ids.dtype, jnp.integer):
            raise ValueError(f"`segment_ids` ({name}) must be an integer array; got {ids.dtype}")


def split_segment_ids(segment_ids: SegmentIds | None) -> tuple[Array | None, Array | None]:
    """Return (q_ids, kv_ids) as int32 arrays (or (None, None))."""
    if segment_ids is None:
        return None, None
    if isinstance(segment_ids, tuple | list):
        q_ids, kv_ids = segment_ids
    else:
        q_ids = kv_ids = segment_ids
    return jnp.asarray(q_ids, jnp.int32), jnp.asarray(kv_ids, jnp.int32)


def check_kv_lengths(kv_lengths: Array | None, shapes: AttentionShapes) -> None:
    """Validate ``kv_lengths``: integer [batch]."""
    _check_vector("kv_lengths", kv_lengths, shapes.batch, jnp.integer, "an integer")


def _check_vector(
    name: str, x: Array | None, size: int, kind: Any, kind_words: str, why: str = ""
) -> None:
    """``x`` None, or ``[size]`` of a dtype of ``kind`` (else a ``ValueError`` naming ``name``,
    ``kind_words`` and ``why`` the size is what it is)."""
    if x is None:
        return
    if x.shape != (size,) or not jnp.issubdtype(x.dtype, kind):
        raise ValueError(
            f"`{name}` must be {kind_words} array of shape {(size,)}{why}; "
            f"got {x.dtype}{tuple(x.shape)}"
        )


def check_bias(bias: Array | None, shapes: AttentionShapes) -> None:
    """Validate an additive ``bias`` of shape [b|1, h|1, s_q, s_k]."""
    if bias is None:
        return
    ok = (
        bias.ndim == 4
        and bias.shape[0] in (1, shapes.batch)
        and bias.shape[1] in (1, shapes.num_heads)
        and bias.shape[2:] == (shapes.q_len, shapes.kv_len)
    )
    if not ok:
        raise ValueError(
            f"`bias` must have shape [{shapes.batch}|1, {shapes.num_heads}|1, {shapes.q_len}, "
            f"{shapes.kv_len}]; got {bias.shape}"
        )


def check_dropout(dropout_rate: float, dropout_rng: Array | None) -> None:
    """Validate the dropout rate (0 <= rate < 1) and that a key comes with a positive rate."""
    if not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"`dropout_rate` must be in [0, 1); got {dropout_rate}")
    if dropout_rate > 0.0 and dropout_rng is None:
        raise ValueError("`dropout_rng` is required when `dropout_rate` > 0")


def check_scale(scale: float | None) -> None:
    """Validate the softmax scale (None = 1/sqrt(head_dim), else a positive finite float)."""
    if scale is not None and not (float(scale) > 0.0 and float(scale) < float("inf")):
        raise ValueError(f"`scale` must be a positive finite float or None; got {scale}")


def check_sinks(sinks: Array | None, shapes: AttentionShapes) -> None:
    """Validate attention ``sinks``: None, or one floating logit per query head ``[heads]``."""
    why = " (one logit per query head)"
    _check_vector("sinks", sinks, shapes.num_heads, jnp.floating, "a floating", why)


def check_window(window: int | None) -> None:
    """Validate a sliding ``window``: None (every key) or a positive int (the keys a query sees,
    itself included: ``i - window < j <= i`` when causal, ``|i - j| < window`` when not)."""
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int) or window < 1:
        raise ValueError(
            f"`window` must be a positive int (the keys a query sees, itself included) or None; "
            f"got {window!r}"
        )


def check_chunk(chunk: int | None, shapes: AttentionShapes) -> None:
    """Validate chunked local attention's ``chunk``: None, or a positive int over a self-attention
    call (``q_len == kv_len``: the chunks are of positions both sides share)."""
    if chunk is None:
        return
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1:
        raise ValueError(
            f"`chunk` must be a positive int (tokens per chunk) or None; got {chunk!r}"
        )
    if shapes.q_len != shapes.kv_len:
        raise ValueError(
            f"`chunk` needs as many queries as keys (q_len {shapes.q_len}, kv_len "
            f"{shapes.kv_len}): a decoding step's chunk is its position's, which the caller "
            "masks (segment ids or kv_lengths)"
        )


def chunk_segment_ids(
    segment_ids: SegmentIds | None, chunk: int, shapes: AttentionShapes
) -> tuple[Array, Array]:
    """Chunked local attention as segment ids every kernel reads: position ``t``'s chunk is
    ``t // chunk``, and a token sees only its own chunk of its own segment. Each (segment, chunk)
    pair gets its own id (padding, 0, stays 0)."""
    chunks = -(-shapes.q_len // chunk)
    index = (jnp.arange(shapes.q_len, dtype=jnp.int32) // chunk)[None]
    q_ids, kv_ids = split_segment_ids(segment_ids)

    def combine(ids: Array | None) -> Array:
        if ids is None:
            return jnp.broadcast_to(index + 1, (shapes.batch, shapes.q_len))
        return jnp.where(ids > 0, (ids - 1) * chunks + index + 1, 0).astype(jnp.int32)

    return combine(q_ids), combine(kv_ids)


def window_visible(rows: Array, cols: Array, *, causal: bool, window: int | None) -> Array | None:
    """Boolean (broadcast of ``rows`` against ``cols``): the causal and window conditions on
    query index ``rows`` and key index ``cols``; None when neither applies."""
    mask: Array | None = None
    if causal:
        mask = rows >= cols
    if window is not None:
        near = rows - cols < window
        if not causal:
            near = near & (cols - rows < window)
        mask = near if mask is None else mask & near
    return mask
