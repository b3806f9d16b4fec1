"""Attention split into its forward and backward halves, for callers that combine blocks.

Ring and all-gather (context-parallel) attention cut the keys into blocks that live on different
devices: each block's forward gives a partial output and its rows' log-sum-exp, the partials are
merged by an online softmax, and each block's backward needs the *merged* output and log-sum-exp
(FlashAttention-2's backward recomputes the probabilities as ``exp(s - lse)``). These are those two
halves, for the XLA path and the Pallas kernels:

* :func:`attention_forward` ``-> (out, lse)``: ``out`` as :func:`tjx.kernels.attention` would give
  for this block alone, ``lse`` the float32 natural log-sum-exp ``[batch, heads, q_len]`` of each
  row's scaled logits (``-inf`` where the row sees no key of the block);
* :func:`attention_backward` ``-> (dq, dk, dv)``: the gradients of this block's share of an
  attention whose rows' softmax is given by ``out`` and ``lse`` (the merged ones), for the
  cotangent ``d_out`` of the merged output.

Neither is differentiable itself: the caller's ``custom_vjp`` calls them. cuDNN has no such split in
jax's public API (its log-sum-exp output takes no cotangent), so ``auto`` is the Pallas kernel on a
CUDA GPU and XLA elsewhere. ``token_index`` (XLA only) gives each query and key its index in the
whole sequence, for the causal and window masks of a block whose tokens are not a contiguous run
(context parallelism's load-balanced chunks). ``softcap`` soft-caps the scaled logits (Gemma 2)
in both halves: ``lse`` is then that of the capped logits, so blocks merge as without a cap.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels._checks import (
    AttentionShapes,
    SegmentIds,
    check_qkv,
    check_scale,
    check_segment_ids,
    check_window,
    split_segment_ids,
    window_visible,
)
from tjx.kernels.choice import current_target
from tjx.kernels.mask import AttentionMask, check_mask
from tjx.kernels.reference import attention_mask
from tjx.kernels.softcap import cap_derivative, check_softcap

Array = jax.Array
TokenIndex = tuple[Array, Array]
BLOCK_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "xla", "pallas")

__all__ = [
    "BLOCK_IMPLEMENTATIONS",
    "attention_backward",
    "attention_forward",
    "block_halves",
    "block_kernel",
]


def block_kernel(implementation: str, *, token_index: TokenIndex | None = None) -> str:
    """``"xla"`` or ``"pallas"`` for ``implementation`` (``auto``: Pallas on a CUDA GPU, else XLA).

    Raises
    ------
    ValueError
        An implementation other than auto/xla/pallas (cuDNN has no split forward/backward), or
        ``token_index`` with Pallas (its masks take positions from the tile).
    """
    if implementation not in BLOCK_IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` of a split attention must be one of "
            f"{', '.join(BLOCK_IMPLEMENTATIONS)} (cuDNN has no separate forward and backward "
            f"in jax's public API); got {implementation!r}"
        )
    if implementation == "auto":
        implementation = "pallas" if current_target().cuda and token_index is None else "xla"
    if implementation == "pallas" and token_index is not None:
        raise ValueError(
            "`token_index` is served by the XLA path only (the Pallas kernel masks by the "
            "tile's own positions); use implementation 'xla'"
        )
    return implementation


def _mask(
    shapes: AttentionShapes, mask: AttentionMask, token_index: TokenIndex | None
) -> Array | None:
    """Boolean [b|1, 1, s_q, s_k] mask (True = attend) or None."""
    if token_index is None:
        return attention_mask(shapes, mask)
    causal, window, segment_ids = mask.causal, mask.window, mask.segment_ids
    q_index, kv_index = (jnp.asarray(i, jnp.int32) for i in token_index)
    if q_index.shape != (shapes.q_len,) or kv_index.shape != (shapes.kv_len,):
        raise ValueError(
            f"`token_index` must be int arrays of shapes ({shapes.q_len},) and "
            f"({shapes.kv_len},); got {q_index.shape} and {kv_index.shape}"
        )
    near = window_visible(q_index[:, None], kv_index[None, :], causal=causal, window=window)
    dense = None if near is None else near[None, None]
    q_ids, kv_ids = split_segment_ids(segment_ids)
    if q_ids is not None and kv_ids is not None:
        same = (q_ids[:, :, None] == kv_ids[:, None, :]) & (kv_ids[:, None, :] != 0)
        dense = same[:, None] if dense is None else dense & same[:, None]
    return dense


def _logits(
    q: Array, k: Array, scale: float, mask: Array | None, softcap: float | None
) -> tuple[Array, Array | None]:
    """Masked scaled (and capped) logits ``[b, h, s_q, s_k]`` in float32 (or wider), keys per
    query head, and ``tanh(x / cap)`` of the uncapped ones (None without a cap)."""
    acc_t = jnp.promote_types(q.dtype, jnp.float32)
    k = jnp.repeat(k, q.shape[2] // k.shape[2], axis=2)
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=acc_t)
    s = s * jnp.asarray(scale, acc_t)
    t = None
    if softcap is not None:
        cap = jnp.asarray(softcap, acc_t)
        t = jnp.tanh(s / cap)
        s = cap * t
    return (s if mask is None else jnp.where(mask, s, -jnp.inf)), t


def _setup(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None,
    scale: float | None,
    softcap: float | None,
    implementation: str,
    token_index: TokenIndex | None,
) -> tuple[AttentionMask, AttentionShapes, float, str]:
    """One block call's mask (None: every key), shapes and logit scale, validated, and the
    kernel that runs it (:func:`block_kernel`): the forward and backward halves check alike."""
    mask = AttentionMask() if mask is None else mask
    shapes = check_qkv(q, k, v)
    check_mask(mask)
    check_segment_ids(mask.segment_ids, shapes)
    for part in ("kv_lengths", "chunk", "sinks"):
        if getattr(mask, part) is not None:
            raise ValueError(
                f"`mask.{part}` is not served by a split attention's blocks (they mask by "
                "causal, segment ids and window); attend without the split"
            )
    check_scale(scale)
    check_softcap(softcap)
    check_window(mask.window)
    sm_scale = 1.0 / math.sqrt(shapes.head_dim) if scale is None else float(scale)
    return mask, shapes, sm_scale, block_kernel(implementation, token_index=token_index)


def attention_forward(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    token_index: TokenIndex | None = None,
    implementation: str = "auto",
    softcap: float | None = None,
) -> tuple[Array, Array]:
    """One block's attention output and its rows' log-sum-exp (not differentiable).

    Parameters
    ----------
    q : Array
        ``[batch, q_len, heads, head_dim]``.
    k, v : Array
        ``[batch, kv_len, kv_heads, head_dim]`` (``kv_heads`` divides ``heads``).
    mask : AttentionMask, optional
        Its causal mask (top-left aligned unless ``token_index``), segment ids and window, as
        in :func:`tjx.kernels.attention` (key lengths, chunks and sinks: a ``ValueError``).
    scale, softcap
        As in :func:`tjx.kernels.attention`.
    token_index : (Array, Array), optional
        int ``[q_len]`` and ``[kv_len]``: each query's and key's index in the whole sequence, for
        the causal (``q >= k``) and window masks (XLA only).
    implementation : {"auto", "xla", "pallas"}
        See :func:`block_kernel`.

    Returns
    -------
    (Array, Array)
        ``out [batch, q_len, heads, head_dim]`` in ``q``'s dtype (zeros on rows that see no key)
        and ``lse`` float32 ``[batch, heads, q_len]`` (``-inf`` on those rows).
    """
    mask, shapes, sm_scale, impl = _setup(
        q, k, v, mask, scale, softcap, implementation, token_index
    )
    if impl == "pallas":
        from tjx.kernels.flash_lse import flash_forward_lse  # Pallas is imported only when chosen

        return flash_forward_lse(q, k, v, mask, scale=sm_scale, softcap=softcap)
    s, _ = _logits(q, k, sm_scale, _mask(shapes, mask, token_index), softcap)
    row_max = jnp.max(s, axis=-1, keepdims=True, initial=-jnp.inf)
    shift = jnp.where(jnp.isfinite(row_max), row_max, 0.0)
    p = jnp.exp(s - shift)
    total = jnp.sum(p, axis=-1, keepdims=True)
    lse = jnp.where(total > 0, jnp.log(jnp.where(total > 0, total, 1.0)) + shift, -jnp.inf)
    p = p / jnp.where(total > 0, total, 1.0)
    v_h = jnp.repeat(v, shapes.num_heads // shapes.num_kv_heads, axis=2)
    out = jnp.einsum("bhqk,bkhd->bqhd", p.astype(v.dtype), v_h, preferred_element_type=p.dtype)
    return out.astype(q.dtype), lse[..., 0].astype(jnp.float32)


def attention_backward(
    q: Array,
    k: Array,
    v: Array,
    out: Array,
    lse: Array,
    d_out: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    token_index: TokenIndex | None = None,
    implementation: str = "auto",
    softcap: float | None = None,
) -> tuple[Array, Array, Array]:
    """Gradients ``(dq, dk, dv)`` of one block of an attention whose rows' softmax is
    ``exp(s - lse)`` and whose output is ``out`` (the merged ones when blocks are combined).

    Parameters
    ----------
    q, k, v, mask, scale, token_index, implementation, softcap
        As in :func:`attention_forward` (the same block).
    out : Array
        ``[batch, q_len, heads, head_dim]``: the (merged) attention output of these rows.
    lse : Array
        float32 ``[batch, heads, q_len]``: the (merged) log-sum-exp of these rows.
    d_out : Array
        The cotangent of ``out``.

    Returns
    -------
    (Array, Array, Array)
        ``dq`` (this block's share), ``dk`` and ``dv``, in the dtypes of ``q``, ``k``, ``v``.
    """
    mask, shapes, sm_scale, impl = _setup(
        q, k, v, mask, scale, softcap, implementation, token_index
    )
    if impl == "pallas":
        from tjx.kernels.flash_lse import flash_backward_lse

        return flash_backward_lse(q, k, v, out, lse, d_out, mask, scale=sm_scale, softcap=softcap)
    s, t = _logits(q, k, sm_scale, _mask(shapes, mask, token_index), softcap)
    acc_t = s.dtype
    row = lse.astype(acc_t)[..., None]
    p = jnp.where(jnp.isfinite(row), jnp.exp(s - jnp.where(jnp.isfinite(row), row, 0.0)), 0.0)
    g = shapes.num_heads // shapes.num_kv_heads
    do = d_out.astype(acc_t)
    v_h = jnp.repeat(v, g, axis=2).astype(acc_t)
    k_h = jnp.repeat(k, g, axis=2).astype(acc_t)
    delta = jnp.einsum("bqhd,bqhd->bhq", do, out.astype(acc_t))[..., None]
    ds = p * (jnp.einsum("bqhd,bkhd->bhqk", do, v_h) - delta)
    derivative = cap_derivative(t)  # d(capped)/d(scaled logit); None without a cap
    if derivative is not None:
        ds = ds * derivative
    dq = jnp.einsum("bhqk,bkhd->bqhd", ds, k_h) * sm_scale
    dk_h = jnp.einsum("bhqk,bqhd->bkhd", ds, q.astype(acc_t)) * sm_scale
    dv_h = jnp.einsum("bhqk,bqhd->bkhd", p, do)

    def grouped(x: Array) -> Array:  # per-query-head gradients summed over each GQA group
        b, s_k, _, d = x.shape
        return x.reshape(b, s_k, shapes.num_kv_heads, g, d).sum(axis=3)

    return dq.astype(q.dtype), grouped(dk_h).astype(k.dtype), grouped(dv_h).astype(v.dtype)


def block_halves(
    implementation: str, *, softcap: float | None = None
) -> tuple[Callable[..., tuple[Array, Array]], Callable[..., tuple[Array, Array, Array]]]:
    """:func:`attention_forward` and :func:`attention_backward` of ``implementation`` (and
    ``softcap``) as a split's block calls take them: tjx-parallel's ring and all-gather attention
    (which imports no kernel) describe each block by ``causal``, ``segment_ids`` and ``window``
    keywords; here they become the block's `AttentionMask`.
    """

    def forward(
        q: Array, k: Array, v: Array, *, causal: bool = False,
        segment_ids: SegmentIds | None = None, window: int | None = None, **kw: Any,
    ) -> tuple[Array, Array]:  # fmt: skip
        mask = AttentionMask(causal=causal, segment_ids=segment_ids, window=window)
        return attention_forward(
            q, k, v, mask, implementation=implementation, softcap=softcap, **kw
        )  # fmt: skip

    def backward(
        q: Array, k: Array, v: Array, out: Array, lse: Array, d_out: Array, *,
        causal: bool = False, segment_ids: SegmentIds | None = None, window: int | None = None,
        **kw: Any,
    ) -> tuple[Array, Array, Array]:  # fmt: skip
        mask = AttentionMask(causal=causal, segment_ids=segment_ids, window=window)
        return attention_backward(
            q, k, v, out, lse, d_out, mask, implementation=implementation, softcap=softcap,
            **kw,
        )  # fmt: skip

    return forward, backward
