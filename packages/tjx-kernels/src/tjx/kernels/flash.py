"""Pallas flash attention: public wrapper, padding, launch choice and the custom VJP.

``flash_attention`` validates its arguments, pads the sequence lengths up to multiples of the block
sizes and ``head_dim`` up to a power of two (>= 16, as Triton's ``tl.dot`` wants), runs the forward
kernel (:mod:`tjx.kernels.flash_fwd`) and, under differentiation, the backward kernels
(:mod:`tjx.kernels.flash_bwd`). The ``custom_vjp`` saves the (padded) inputs, the output and the
per-row log-sum-exp only. Padded keys are masked (by segment id 0, or by a static length test), and
padded query rows are sliced off, so padding never changes a result.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from tjx.kernels._checks import (
    AttentionShapes,
    check_qkv,
    check_scale,
    check_segment_ids,
    check_window,
    split_segment_ids,
)
from tjx.kernels.choice import current_target, lowering_for_cuda
from tjx.kernels.flash_fwd import KernelConfig
from tjx.kernels.launch import MIN_BLOCK, LaunchDefaults, default_launch
from tjx.kernels.mask import AttentionMask, check_mask
from tjx.kernels.partition import partitioned_backward, partitioned_forward
from tjx.kernels.softcap import check_softcap

Array = jax.Array

#: Largest head_dim the kernel accepts (padded internally to a power of two).
MAX_HEAD_DIM = 256
LN2 = math.log(2.0)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def _fit_block(block: int, length: int) -> int:
    """Shrink a power-of-two block to the (power-of-two rounded) length, never below MIN_BLOCK."""
    return max(MIN_BLOCK, min(block, _next_pow2(length)))


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


def _check_block(name: str, value: int | None) -> None:
    if value is None:
        return
    if not isinstance(value, int) or value < MIN_BLOCK or value & (value - 1):
        raise ValueError(f"`{name}` must be a power of two >= {MIN_BLOCK}; got {value!r}")


def resolve_interpret(interpret: bool | None) -> bool:
    """``None`` → interpret everywhere except on a CUDA GPU (where Triton compiles the kernel),
    or inside a ``tjx.kernels.target("gpu", ...)`` block (cross-lowering for one)."""
    if interpret is not None:
        return bool(interpret)
    return not lowering_for_cuda()


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash_core(
    q: Array, k: Array, v: Array, q_ids: Array | None, kv_ids: Array | None, cfg: KernelConfig
) -> Array:
    out, _ = partitioned_forward(q, k, v, q_ids, kv_ids, cfg)
    return out


def _flash_core_fwd(
    q: Array, k: Array, v: Array, q_ids: Array | None, kv_ids: Array | None, cfg: KernelConfig
) -> tuple[Array, tuple[Array | None, ...]]:
    out, lse = partitioned_forward(q, k, v, q_ids, kv_ids, cfg)
    return out, (q, k, v, q_ids, kv_ids, out, lse)


def _flash_core_bwd(
    cfg: KernelConfig, res: tuple[Any, ...], d_out: Array
) -> tuple[Array, Array, Array, None, None]:
    q, k, v, q_ids, kv_ids, out, lse = res
    dq, dk, dv = partitioned_backward(q, k, v, q_ids, kv_ids, out, lse, d_out, cfg)
    return dq, dk, dv, None, None


_flash_core.defvjp(_flash_core_fwd, _flash_core_bwd)


def _make_config(
    shapes: AttentionShapes,
    *,
    dtype: Any,
    causal: bool,
    has_segments: bool,
    scale: float,
    block_q: int | None,
    block_k: int | None,
    interpret: bool,
    launch: LaunchDefaults | None = None,
    softcap: float | None = None,
    window: int | None = None,
) -> tuple[KernelConfig, int, int, int]:
    """Kernel config plus the padded (q_len, kv_len, head_dim).

    ``launch`` None takes the device's (or the generic) launch for ``dtype`` and head_dim.
    """
    d_pad = max(MIN_BLOCK, _next_pow2(shapes.head_dim))
    if launch is None:
        t = current_target() if lowering_for_cuda() else None  # a target() block's GPU too
        launch = default_launch(
            shapes.head_dim,
            dtype,
            device_kind=None if t is None else t.device_kind,
            hopper=t is not None and (t.compute_capability or (0, 0)) >= (9, 0),
        )
    # An explicit block size applies to the forward and the backward kernels alike.
    bq = _fit_block(block_q or launch.block_q, shapes.q_len)
    bk = _fit_block(block_k or launch.block_k, shapes.kv_len)
    bq_b = _fit_block(block_q or launch.block_q_bwd, shapes.q_len)
    bk_b = _fit_block(block_k or launch.block_k_bwd, shapes.kv_len)
    split = min(launch.head_split_bwd, d_pad // MIN_BLOCK)
    if softcap is not None and split > 1 and not (block_q or block_k):
        # The capped backward keeps one more [q, k] float32 tile live (P times the cap's
        # derivative). Under a head split (16-bit head_dim 256 on sm_90) half the query rows
        # compile to 0 spills with wgmma kept (16 bytes spilled otherwise, triton 3.9; kernels
        # README). Elsewhere the default tiles stay: halving them cost wgmma.
        bq_b = max(MIN_BLOCK, bq_b // 2)
    # A head split (at most one 16-column slice per program) swaps dQ's tiles: both lengths
    # then pass through both backward tiles.
    both = max(bq_b, bk_b) if split > 1 else 0
    q_pad = _round_up(shapes.q_len, max(bq, bq_b, both))
    kv_pad = _round_up(shapes.kv_len, max(bk, bk_b, both))
    cfg = KernelConfig(
        scale=scale,
        causal=causal,
        has_segments=has_segments,
        q_len=q_pad,
        kv_len=kv_pad,
        kv_valid=shapes.kv_len,
        groups=shapes.num_heads // shapes.num_kv_heads,
        block_q=bq,
        block_k=bk,
        block_q_bwd=bq_b,
        block_k_bwd=bk_b,
        num_warps=launch.num_warps,
        num_warps_bwd=launch.num_warps_bwd,
        num_stages=launch.num_stages,
        num_stages_bwd=launch.num_stages_bwd,
        interpret=interpret,
        head_split_bwd=split,
        softcap=None if softcap is None else float(softcap),
        window=window,
    )
    return cfg, q_pad, kv_pad, d_pad


class Padded(NamedTuple):
    """One call's kernel config and its inputs padded to the kernel's tiles."""

    cfg: KernelConfig
    shapes: AttentionShapes
    q: Array
    k: Array
    v: Array
    q_ids: Array | None
    kv_ids: Array | None


def pad_rows(x: Array, rows: int, cols: int, axis: int = 1) -> Array:
    """``x`` padded with ``rows`` zeros along ``axis`` and ``cols`` along the last axis."""
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, rows)
    widths[-1] = (0, cols)
    return jnp.pad(x, widths)


class CallSetup(NamedTuple):
    """One checked call's kernel config, its padded (q_len, kv_len, head_dim) and segment ids."""

    cfg: KernelConfig
    q_pad: int
    kv_pad: int
    d_pad: int
    q_ids: Array | None
    kv_ids: Array | None


def setup_call(
    shapes: AttentionShapes,
    dtype: Any,
    mask: AttentionMask | None,
    *,
    scale: float | None,
    softcap: float | None,
    block_q: int | None,
    block_k: int | None,
    interpret: bool | None,
    launch: LaunchDefaults | None,
) -> CallSetup | None:
    """Check one call past its inputs' shapes (the checks every flash entry makes: a
    ``ValueError`` naming the argument and what is supported) and make its kernel config (mask
    ``None``: every key; scale ``None``: ``1/sqrt(head_dim)``); None when either length is 0
    (nothing to tile: no query rows, or no key for any row to see)."""
    mask = AttentionMask() if mask is None else mask
    check_mask(mask)
    check_segment_ids(mask.segment_ids, shapes)
    for part in ("kv_lengths", "chunk", "sinks"):
        if getattr(mask, part) is not None:  # the dispatcher folds lengths and chunks into ids
            raise ValueError(
                f"`mask.{part}` is not served by flash_attention (it masks by causal, segment "
                "ids and window); use tjx.kernels.attention, which folds key lengths and chunks "
                "into segment ids and runs sinks on XLA"
            )
    check_scale(scale)
    check_softcap(softcap)
    check_window(mask.window)
    _check_block("block_q", block_q)
    _check_block("block_k", block_k)
    if launch is not None and not isinstance(launch, LaunchDefaults):
        raise ValueError(f"`launch` must be a LaunchDefaults; got {type(launch).__name__}")
    if shapes.head_dim > MAX_HEAD_DIM:
        raise ValueError(
            f"`q` head_dim {shapes.head_dim} is not supported by flash_attention; "
            f"supported: 1..{MAX_HEAD_DIM}"
        )
    if jnp.dtype(dtype) == jnp.dtype(jnp.float64):
        raise ValueError(
            "`q` dtype float64 is not supported by flash_attention; use bf16/fp16/fp32"
        )
    if shapes.q_len == 0 or shapes.kv_len == 0:
        return None  # padding a length of 0 up to a block would invent keys
    q_ids, kv_ids = split_segment_ids(mask.segment_ids)
    sm_scale = 1.0 / math.sqrt(shapes.head_dim) if scale is None else float(scale)
    cfg, q_pad, kv_pad, d_pad = _make_config(
        shapes,
        dtype=dtype,
        causal=mask.causal,
        has_segments=q_ids is not None,
        scale=sm_scale,
        block_q=block_q,
        block_k=block_k,
        interpret=resolve_interpret(interpret),
        launch=launch,
        softcap=softcap,
        window=mask.window,
    )
    return CallSetup(cfg, q_pad, kv_pad, d_pad, q_ids, kv_ids)


def prepare_call(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None,
    *,
    scale: float | None,
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None,
    launch: LaunchDefaults | None,
    softcap: float | None = None,
) -> Padded | AttentionShapes:
    """Validate one call (as :func:`setup_call`; block sizes ``None``: the launch's) and pad it
    to the kernel's tiles; the bare shapes when either length is 0 (nothing to tile: no query
    rows, or no key for any row to see)."""
    shapes = check_qkv(q, k, v)
    setup = setup_call(
        shapes,
        q.dtype,
        mask,
        scale=scale,
        softcap=softcap,
        block_q=block_q,
        block_k=block_k,
        interpret=interpret,
        launch=launch,
    )
    if setup is None:
        return shapes
    cfg, q_pad, kv_pad, d_pad, q_ids, kv_ids = setup
    dq_, dk_, dd = q_pad - shapes.q_len, kv_pad - shapes.kv_len, d_pad - shapes.head_dim
    if q_ids is not None and kv_ids is not None:
        q_ids = jnp.pad(q_ids, ((0, 0), (0, dq_)))
        kv_ids = jnp.pad(kv_ids, ((0, 0), (0, dk_)))
    return Padded(
        cfg,
        shapes,
        pad_rows(q, dq_, dd),
        pad_rows(k, dk_, dd),
        pad_rows(v, dk_, dd),
        q_ids,
        kv_ids,
    )


def flash_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    block_q: int | None = None,
    block_k: int | None = None,
    interpret: bool | None = None,
    launch: LaunchDefaults | None = None,
    softcap: float | None = None,
) -> Array:
    """Flash attention in Pallas (online softmax, fused forward and backward).

    Parameters
    ----------
    q, k, v : Array
        ``[batch, q_len, heads, head_dim]`` and ``[batch, kv_len, kv_heads, head_dim]``
        (``kv_heads`` divides ``heads``), of one dtype: bfloat16, float16 or float32;
        ``head_dim <= 256``.
    mask : AttentionMask, optional
        Its causal mask (key blocks above the diagonal are skipped), segment ids (``[batch,
        seq]`` or ``(q_ids, kv_ids)``; tokens attend within their segment; 0 = padding) and
        sliding window (query ``i`` sees keys ``i - window < j``, ``<= i`` when causal, else
        ``< i + window``; key blocks wholly outside every query's window of a query block are
        never loaded, forward and backward). Key lengths, chunks and sinks are a
        ``ValueError`` (``tjx.kernels.attention`` folds the first two into segment ids). None:
        every key.
    scale : float, optional
        Logit scale, default ``1/sqrt(head_dim)``.
    block_q, block_k : int, optional
        Tile sizes (powers of two >= 16) for the forward and backward kernels, overriding those
        of the launch; all tiles shrink to short sequences.
    interpret : bool, optional
        Run the Pallas interpreter. ``None`` (default): compiled on a CUDA GPU, interpreted
        elsewhere.
    launch : LaunchDefaults, optional
        Tiles, warps and stages of both passes for this call. ``None`` (default): the device's
        table entry for dtype and head_dim, else the generic one (:func:`default_launch`).
    softcap : float, optional
        Soft-cap the scaled logits to ``(-softcap, softcap)`` (``softcap · tanh(x / softcap)``,
        Gemma 2), before masking; None: no cap.

    Returns
    -------
    Array
        ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype; rows with no visible key are 0
        (all of them when ``kv_len == 0``; ``q_len == 0`` gives an empty array).
    """
    p = prepare_call(
        q,
        k,
        v,
        mask,
        scale=scale,
        block_q=block_q,
        block_k=block_k,
        interpret=interpret,
        launch=launch,
        softcap=softcap,
    )
    if not isinstance(p, Padded):
        # Nothing to tile: no query rows, or no key for any row to see (zeros, as for a fully
        # masked row).
        return jnp.zeros(q.shape, q.dtype)
    out = _flash_core(p.q, p.k, p.v, p.q_ids, p.kv_ids, p.cfg)
    return out[:, : p.shapes.q_len, :, : p.shapes.head_dim]
