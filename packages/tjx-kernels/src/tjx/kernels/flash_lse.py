"""The Pallas flash kernels' forward and backward halves alone, for callers that merge blocks.

:mod:`tjx.kernels.blocks` serves ring and all-gather (context-parallel) attention with these: the
forward gives a block's output and its rows' natural log-sum-exp, the backward the block's
gradients given the merged output and log-sum-exp. Validation, padding and the kernel config are
:func:`tjx.kernels.flash.prepare_call`'s, as for ``flash_attention``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tjx.kernels.flash import LN2, Padded, pad_rows, prepare_call
from tjx.kernels.launch import LaunchDefaults
from tjx.kernels.mask import AttentionMask
from tjx.kernels.partition import partitioned_backward, partitioned_forward

Array = jax.Array


def flash_forward_lse(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    interpret: bool | None = None,
    launch: LaunchDefaults | None = None,
    softcap: float | None = None,
) -> tuple[Array, Array]:
    """The forward kernel alone: ``(out, lse)``, not differentiable (see :mod:`tjx.kernels.blocks`).

    ``lse`` is the float32 natural log-sum-exp ``[batch, heads, q_len]`` of each row's scaled
    logits (capped ones under ``softcap``), ``-inf`` for a row that sees no key. Arguments as
    :func:`flash_attention`.
    """
    p = prepare_call(
        q, k, v, mask, scale=scale, interpret=interpret, launch=launch, softcap=softcap
    )
    if not isinstance(p, Padded):
        b, s_q, h, _ = q.shape
        return jnp.zeros(q.shape, q.dtype), jnp.full((b, h, s_q), -jnp.inf, jnp.float32)
    out, lse2 = partitioned_forward(p.q, p.k, p.v, p.q_ids, p.kv_ids, p.cfg)
    s_q, d = p.shapes.q_len, p.shapes.head_dim
    lse2 = lse2[:, :, :s_q]
    # The kernel keeps base-2 sums and +inf on empty rows (its backward's convention).
    lse = jnp.where(lse2 == jnp.inf, -jnp.inf, lse2 * LN2)
    return out[:, :s_q, :, :d], lse


def flash_backward_lse(
    q: Array,
    k: Array,
    v: Array,
    out: Array,
    lse: Array,
    d_out: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    interpret: bool | None = None,
    launch: LaunchDefaults | None = None,
    softcap: float | None = None,
) -> tuple[Array, Array, Array]:
    """The backward kernels alone: ``(dq, dk, dv)`` of the rows' softmax given by ``out`` and
    ``lse`` (natural log, ``-inf`` for empty rows), which may be those of a longer attention this
    call is one block of (ring attention): the probabilities are ``exp(s - lse)``."""
    p = prepare_call(
        q, k, v, mask, scale=scale, interpret=interpret, launch=launch, softcap=softcap
    )
    if not isinstance(p, Padded):
        return jnp.zeros_like(q), jnp.zeros_like(k), jnp.zeros_like(v)
    s_q, d = p.shapes.q_len, p.shapes.head_dim
    rows, cols = p.q.shape[1] - s_q, p.q.shape[-1] - d
    lse2 = jnp.where(lse == -jnp.inf, jnp.inf, lse.astype(jnp.float32) / LN2)
    lse2 = jnp.pad(lse2, ((0, 0), (0, 0), (0, rows)), constant_values=jnp.inf)
    out_p = pad_rows(out.astype(q.dtype), rows, cols)
    d_out_p = pad_rows(d_out.astype(q.dtype), rows, cols)
    dq, dk, dv = partitioned_backward(p.q, p.k, p.v, p.q_ids, p.kv_ids, out_p, lse2, d_out_p, p.cfg)
    s_k = p.shapes.kv_len
    return dq[:, :s_q, :, :d], dk[:, :s_k, :, :d], dv[:, :s_k, :, :d]
