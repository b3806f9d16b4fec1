"""Pallas flash attention over one stacked ``qkv`` tensor: no slice or concatenation written.

A fused query/key/value projection writes one GEMM output ``[b·s, 3·h·d]``, i.e. ``qkv``
``[batch, seq, 3, heads, head_dim]`` (slot 0 the queries, 1 the keys, 2 the values). Fed to
:func:`~tjx.kernels.flash.flash_attention`, that output is first cut into three arrays (a kernel's
operands are whole buffers: XLA writes each slice), and the backward's ``dq``, ``dk``, ``dv`` are
stacked again for the projection's one gradient product (a concatenation written to memory).
:func:`flash_attention_qkv` takes ``qkv`` itself:

* forward: the kernel's block specs read the query tile, keys and values from their slots of the
  one buffer (:func:`~tjx.kernels.flash_fwd.flash_forward_qkv`);
* backward: ``d_qkv`` of ``qkv``'s layout, written by the two backward kernels into one buffer
  (the dK/dV kernel makes it and writes the key and value slots; the dQ kernel takes it aliased
  to its output and writes the query slot: :func:`~tjx.kernels.flash_bwd.flash_backward_qkv`).

The kernels' bodies, tiles, launches and masks are the separate-array kernel's, so its results
are that kernel's (bitwise in interpret mode) and so are its features: causal, segment ids (one
``[b, s]`` array or a pair), a sliding window, soft-capped logits, the backward's head split.
Self-attention only, with as many key/value heads as query heads (a stacked layout for GQA,
``[b, s, h + 2·h_kv, d]``, would need the dK/dV kernel to sum a group's query heads itself;
a GQA model keeps the separate-array kernel); no kv lengths, bias, dropout or sinks (a model
whose call has them keeps the separate-array path, chosen where it is built).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels._checks import check_stacked_qkv
from tjx.kernels.flash import pad_rows, setup_call
from tjx.kernels.flash_fwd import KernelConfig
from tjx.kernels.launch import LaunchDefaults
from tjx.kernels.mask import AttentionMask
from tjx.kernels.partition import partitioned_backward_qkv, partitioned_forward_qkv

Array = jax.Array


Biases = tuple[Array, Array, Array]


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _qkv_core(
    qkv: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    biases: Biases | None,
    cfg: KernelConfig,
) -> Array:
    out, _ = partitioned_forward_qkv(qkv, q_ids, kv_ids, biases, cfg)
    return out


def _qkv_core_fwd(
    qkv: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    biases: Biases | None,
    cfg: KernelConfig,
) -> tuple[Array, tuple[Any, ...]]:
    out, lse = partitioned_forward_qkv(qkv, q_ids, kv_ids, biases, cfg)
    return out, (qkv, q_ids, kv_ids, biases, out, lse)


def _qkv_core_bwd(
    cfg: KernelConfig, res: tuple[Any, ...], d_out: Array
) -> tuple[Array, None, None, Biases | None]:
    qkv, q_ids, kv_ids, biases, out, lse = res
    d_qkv = partitioned_backward_qkv(qkv, q_ids, kv_ids, biases, out, lse, d_out, cfg)
    if biases is None:
        return d_qkv, None, None, None
    # A slot's bias meets every row of it: its gradient is the slot's sum over batch and rows
    # (what the projection's backward summed when it added them: the same sum). Padded rows
    # add 0: a padded query's output cotangent is 0, a padded key is masked.
    db = jnp.sum(d_qkv, axis=(0, 1))  # [3, h, d]
    return d_qkv, None, None, (db[0], db[1], db[2])


_qkv_core.defvjp(_qkv_core_fwd, _qkv_core_bwd)


#: Tiles that take the biases inside the kernels (16-bit, head_dim up to this): adding them as
#: q, k, v are read costs the backward's dK/dV kernel, already at sm_90's 255-register ceiling,
#: spills (ptxas of triton 3.9: bf16 head_dim 128 40 B, 256 180 B, float32 128 800 B) where
#: without them it has none; at 64 it spills 32 B either way (48 B without biases, the query
#: loop's local loads and stores). Elsewhere XLA adds them before the kernel (one loop a call).
BIAS_IN_KERNEL_MAX_HEAD_DIM = 64


def biases_in_kernel(dtype: Any, head_dim: int) -> bool:
    """Whether the stacked kernels add ``qkv_bias`` themselves for tiles of ``dtype`` and
    ``head_dim`` (see `BIAS_IN_KERNEL_MAX_HEAD_DIM`), rather than XLA before them."""
    return jnp.dtype(dtype).itemsize == 2 and head_dim <= BIAS_IN_KERNEL_MAX_HEAD_DIM


def _check_biases(qkv_bias: Any, qkv: Array) -> Biases | None:
    """``qkv_bias`` as three ``[heads, head_dim]`` arrays of ``qkv``'s dtype, or None."""
    if qkv_bias is None:
        return None
    _, _, _, h, d = qkv.shape
    parts = tuple(qkv_bias) if isinstance(qkv_bias, tuple | list) else ()
    if len(parts) != 3 or any(getattr(b, "shape", None) != (h, d) for b in parts):
        shapes = [getattr(b, "shape", type(b).__name__) for b in parts] or type(qkv_bias).__name__
        raise ValueError(
            f"`qkv_bias` must be three arrays (query, key, value biases) of shape {(h, d)} "
            f"[heads, head_dim]; got {shapes}"
        )
    if any(b.dtype != qkv.dtype for b in parts):
        raise ValueError(
            f"`qkv_bias` must have `qkv`'s dtype {qkv.dtype}; got {[str(b.dtype) for b in parts]}"
        )
    return parts  # type: ignore[return-value]


def flash_attention_qkv(
    qkv: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None = None,
    launch: LaunchDefaults | None = None,
    softcap: float | None = None,
    qkv_bias: tuple[Array, Array, Array] | None = None,
) -> Array:
    """Flash self-attention in Pallas of one stacked ``qkv`` (see the module docstring).

    Parameters
    ----------
    qkv : Array
        ``[batch, seq, 3, heads, head_dim]``: queries, keys and values in slots 0, 1, 2 of axis
        2 (a fused projection's output as its GEMM writes it), bfloat16, float16 or float32;
        ``head_dim <= 256``.
    mask, scale, block_q, block_k, interpret, launch, softcap
        As :func:`tjx.kernels.flash_attention` (segment ids: ``[batch, seq]`` or a pair).
    qkv_bias : (Array, Array, Array), optional
        The query, key and value biases ``[heads, head_dim]`` (``qkv``'s dtype), added to their
        slots as the kernels read them (16-bit tiles of head_dim <= 64, `biases_in_kernel`):
        the projection's product goes to the kernel unbiased, so no biased copy of it is
        written; their gradients are the slots' sums. Other tiles: XLA adds them first.

    Returns
    -------
    Array
        ``[batch, seq, heads, head_dim]`` in ``qkv``'s dtype: ``flash_attention`` of the three
        slots (biased). Its gradient is one array of ``qkv``'s shape, made by the backward
        kernels (no concatenation).
    """
    shapes = check_stacked_qkv(qkv)
    biases = _check_biases(qkv_bias, qkv)
    if biases is not None and not biases_in_kernel(qkv.dtype, shapes.head_dim):
        qkv, biases = qkv + jnp.stack(biases)[None, None], None  # XLA's one loop
    b, s, _, h, d = qkv.shape
    setup = setup_call(
        shapes,
        qkv.dtype,
        mask,
        scale=scale,
        softcap=softcap,
        block_q=block_q,
        block_k=block_k,
        interpret=interpret,
        launch=launch,
    )
    if setup is None:
        return jnp.zeros((b, s, h, d), qkv.dtype)  # no row: the biases' gradients are 0 too
    cfg, q_pad, kv_pad, d_pad, q_ids, kv_ids = setup
    # One buffer holds queries and keys: one padded length, a multiple of every tile (each pad
    # is a multiple of its power-of-two tiles, so the larger is of all of them).
    s_pad = max(q_pad, kv_pad)
    cfg = dataclasses.replace(cfg, q_len=s_pad, kv_len=s_pad, qkv_bias=biases is not None)
    rows, cols = s_pad - s, d_pad - d
    if rows or cols:  # a copy; a length of whole tiles and head_dim of 16·2^k need none
        qkv = pad_rows(qkv, rows, cols)
    if cols and biases is not None:
        biases = tuple(jnp.pad(x, ((0, 0), (0, cols))) for x in biases)  # type: ignore[assignment]
    if q_ids is not None and kv_ids is not None and rows:
        q_ids = jnp.pad(q_ids, ((0, 0), (0, rows)))
        kv_ids = jnp.pad(kv_ids, ((0, 0), (0, rows)))
    out = _qkv_core(qkv, q_ids, kv_ids, biases, cfg)
    return out[:, :s, :, :d] if rows or cols else out
