"""``attention``: one entry point over the XLA reference, cuDNN fused attention and Pallas flash.

It runs the kernel it is given: an :class:`~tjx.kernels.choice.AttentionKernel` resolved once by
:func:`~tjx.kernels.choice.resolve_attention` (a model resolves its ``attention_impl`` when it is
built), or a name it resolves the same way for this one call. Nothing is chosen again, warned
about or fallen back from here: every refusal is the resolution's (an unknown name, an explicit
kernel that cannot serve: ``ValueError`` naming the argument and what is supported), and a kernel
that fails to lower is the caller's kernel choice to handle (tjx-nn's ``resolve_attention`` with
an app's compile tries the next one and says so, once). The one rule a call adds: features no
fused kernel has (an additive ``bias``, attention dropout) and zero-length sequences take the XLA
path, whatever the kernel. The Pallas kernel's module (and Pallas itself) is imported only when
it runs.

The resolution's rule ("auto", :mod:`tjx.kernels.choice`): on a CUDA GPU the kernels measured on
that device kind rank first (fastest first), then cuDNN wherever it serves the call (packed
batches too: their segment ids become cuDNN's mask), then XLA; the unmeasured Pallas kernel only
by name. On a TPU and on CPUs, "auto" is XLA; an explicit "pallas" or "cudnn" on a TPU is an
error. The rule is the same on one device and on a mesh: both fused kernels partition over batch
and heads under a sharded ``jit``.

``"tokamax"`` is OpenXLA tokamax's Pallas Mosaic GPU flash attention on sm90/sm100 GPUs (the
optional tokamax package, :mod:`tjx.kernels.tokamax_ops`: the one module that imports it, only
when it runs); it serves causal and bidirectional calls, GQA, segment ids (as a mask), key
lengths, windows and soft caps, not sinks; ``auto`` ranks it only where it was measured.

Soft-capped logits (``softcap``, Gemma 2) are served by XLA, Pallas and tokamax; jax's cuDNN
attention cannot cap them, so ``auto`` leaves cuDNN out for such calls and an explicit
``"cudnn"`` is a ``ValueError``. A sliding ``window`` is served by every kernel: cuDNN's own
``local_window_size`` (causal only; a bidirectional window leaves cuDNN out of ``auto``), the
Pallas kernels skip the key blocks outside it, XLA masks. Attention ``sinks`` (gpt-oss: a learned
logit per head in every row's softmax denominator) are XLA's alone: ``auto`` resolves to XLA for
such calls, a fused kernel's name is a ``ValueError``. Chunked local attention (``chunk``,
Llama 4: a token sees only its own chunk of positions) becomes segment ids before any kernel runs
(a packed batch's segments split into their chunks), so every kernel serves it unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp

from tjx.kernels._checks import (
    AttentionShapes,
    SegmentIds,
    check_bias,
    check_dropout,
    check_qkv,
    check_scale,
    check_stacked_qkv,
    split_segment_ids,
)
from tjx.kernels.choice import (
    CUDNN_DTYPES,
    CUDNN_WINDOW,
    FUSED_SINKS,
    IMPLEMENTATIONS,
    AttentionKernel,
    cudnn_max_head_dim,
    current_target,
    resolve_attention,
)
from tjx.kernels.cudnn_segments import segment_attention
from tjx.kernels.mask import AttentionMask, check_mask
from tjx.kernels.reference import reference_attention, rows_seeing_a_key, zero_unseen_rows
from tjx.kernels.softcap import check_softcap

Array = jax.Array
Implementation = Literal["auto", "xla", "cudnn", "pallas", "tokamax"] | AttentionKernel

__all__ = [
    "CUDNN_DTYPES",
    "IMPLEMENTATIONS",
    "attention",
    "attention_qkv",
    "cudnn_max_head_dim",
    "reads_stacked_qkv",
]


def on_cuda_gpu() -> bool:
    """Whether the current target (:func:`tjx.kernels.choice.current_target`) is a CUDA GPU."""
    return current_target().cuda


def _segments_with_lengths(
    segment_ids: SegmentIds | None, kv_lengths: Array | None, shapes: AttentionShapes
) -> SegmentIds | None:
    """Fold ``kv_lengths`` into segment ids (keys past the length get id 0 = padding)."""
    if kv_lengths is None:
        return segment_ids
    q_ids, kv_ids = split_segment_ids(segment_ids)
    if q_ids is None or kv_ids is None:
        q_ids = jnp.ones((shapes.batch, shapes.q_len), jnp.int32)
        kv_ids = jnp.ones((shapes.batch, shapes.kv_len), jnp.int32)
    keep = jnp.arange(shapes.kv_len)[None, :] < jnp.asarray(kv_lengths)[:, None]
    return q_ids, jnp.where(keep, kv_ids, 0)


def _cudnn_attention(
    q: Array, k: Array, v: Array, mask: AttentionMask, *, scale: float, shapes: AttentionShapes
) -> Array:
    # One layout for q, k, v and the batch-leading ids/lengths before jax's cuDNN call, whose
    # SPMD partitioning refuses q, k and v sharded differently (`tjx.kernels.partition.aligned`;
    # that module holds the flash kernels' partitioning, hence Pallas: imported here, on use).
    from tjx.kernels.partition import aligned

    leaves, tree = jax.tree.flatten((mask.segment_ids, mask.kv_lengths))
    q, k, v, *leaves = aligned(q, k, v, *(jnp.asarray(x) for x in leaves))
    segment_ids, kv_lengths = jax.tree.unflatten(tree, leaves)
    causal, window = mask.causal, mask.window
    if segment_ids is not None and not isinstance(segment_ids, tuple | list) and kv_lengths is None:
        # Self-attention segment ids (packed documents): no s × s mask (cudnn_segments).
        ids = jnp.asarray(segment_ids, jnp.int32)
        own = AttentionMask(causal=causal, segment_ids=ids, window=window)
        return segment_attention(q, k, v, own, scale=scale, target=current_target())
    dense = None
    if segment_ids is not None:
        q_ids, kv_ids = split_segment_ids(segment_ids)
        assert q_ids is not None and kv_ids is not None
        dense = ((q_ids[:, :, None] == kv_ids[:, None, :]) & (kv_ids[:, None, :] != 0))[:, None]
    lengths = None if kv_lengths is None else jnp.asarray(kv_lengths, jnp.int32)
    out = jax.nn.dot_product_attention(
        q,
        k,
        v,
        mask=dense,
        scale=scale,
        is_causal=causal,
        key_value_seq_lengths=lengths,
        # cuDNN's own sliding window (causal only: `_window_reason`): `window - 1` keys before.
        local_window_size=None if window is None else (window - 1, 0),
        implementation="cudnn",
    )
    # cuDNN leaves rows that see no key at all to its own devices (a uniform average or NaN);
    # our convention, shared with XLA and Pallas, is zeros.
    seen = mask.replace(segment_ids=segment_ids, kv_lengths=lengths, sinks=None)
    return zero_unseen_rows(out, _visible_rows(shapes, seen))


def _visible_rows(shapes: AttentionShapes, mask: AttentionMask) -> Array | None:
    """Bool [b, s_q]: whether each query row sees at least one key (None: every row does)."""
    if mask.segment_ids is None:
        if mask.kv_lengths is None:
            return None  # key 0 is visible to every query, causal or not
        return jnp.broadcast_to((mask.kv_lengths > 0)[:, None], (shapes.batch, shapes.q_len))
    return rows_seeing_a_key(shapes, mask)


def attention(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    dropout_rate: float = 0.0,
    dropout_rng: Array | None = None,
    implementation: Implementation = "auto",
    bias: Array | None = None,
    softcap: float | None = None,
) -> Array:
    """Multi-head attention with a choice of implementation.

    Parameters
    ----------
    q : Array
        Queries ``[batch, q_len, heads, head_dim]``.
    k, v : Array
        Keys and values ``[batch, kv_len, kv_heads, head_dim]`` (``kv_heads`` divides ``heads``).
    mask : AttentionMask, optional
        Which keys each query sees (`tjx.kernels.AttentionMask`: causal, segment ids, key
        lengths, a sliding window, chunks, sinks); None: every key, no sinks. A ``window`` is
        served by every kernel (cuDNN only with ``causal``: without it, "auto" leaves cuDNN out
        and an explicit "cudnn" is an error); ``sinks`` by XLA only ("auto" resolves to XLA, a
        fused kernel is an error); a ``chunk`` becomes segment ids before any kernel runs, so
        every kernel serves it (a call with ``q_len != kv_len`` is a ``ValueError``: a decode
        step's chunk is its caller's).
    scale : float, optional
        Logit scale, default ``1/sqrt(head_dim)``.
    dropout_rate, dropout_rng
        Attention dropout (XLA path); a key is required when the rate is positive.
    implementation : AttentionKernel or {"auto", "xla", "cudnn", "pallas", "tokamax"}
        The kernel to run: an `AttentionKernel` runs as given (a model resolves its own once);
        a name is resolved for this call (`tjx.kernels.resolve_attention`, module docstring).
    bias : Array, optional
        Additive logit bias ``[batch|1, heads|1, q_len, kv_len]`` (XLA path).
    softcap : float, optional
        Soft-cap the scaled logits to ``(-softcap, softcap)`` (``softcap · tanh(x / softcap)``,
        Gemma 2) before bias and masks: XLA and Pallas; never cuDNN (see the module doc).

    Returns
    -------
    Array
        ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype; with ``q_len == 0`` empty, with
        ``kv_len == 0`` zeros (such calls take the XLA path whatever ``implementation`` says,
        after it is validated).
    """
    mask = AttentionMask() if mask is None else mask
    shapes = check_qkv(q, k, v)
    check_mask(mask)
    mask.check(shapes)
    check_bias(bias, shapes)
    check_dropout(dropout_rate, dropout_rng)
    check_scale(scale)
    check_softcap(softcap)
    mask = mask.unchunked(shapes)  # one mask every kernel has: segments (module docstring)
    causal, window, sinks = mask.causal, mask.window, mask.sinks
    if isinstance(implementation, AttentionKernel):
        kernel = implementation  # resolved once by its owner: run it, choose nothing
        if sinks is not None and kernel != AttentionKernel.XLA:
            raise ValueError(FUSED_SINKS)  # a resolved kernel given a call it cannot serve
    else:
        kernel = resolve_attention(
            implementation,
            q.dtype,
            shapes.head_dim,
            softcap=softcap is not None,
            bidirectional_window=window is not None and not causal,
            sinks=sinks is not None,
        )
    # A zero-length call has nothing to compute (an empty or all-zero result): XLA serves it
    # without padding a sequence of 0 up to a kernel block; bias and dropout only XLA has.
    empty = shapes.q_len == 0 or shapes.kv_len == 0
    impl = "xla" if bias is not None or dropout_rate > 0.0 or empty else kernel.value
    sm_scale = 1.0 / math.sqrt(shapes.head_dim) if scale is None else float(scale)
    if impl == "cudnn":
        if window is not None and not causal:
            raise ValueError(CUDNN_WINDOW)  # a resolved kernel given a call it cannot serve
        return _cudnn_attention(q, k, v, mask, scale=sm_scale, shapes=shapes)
    if impl == "tokamax":
        # The one module that imports tokamax (an optional package), only when chosen.
        from tjx.kernels.tokamax_ops import tokamax_attention

        return tokamax_attention(q, k, v, mask, scale=sm_scale, shapes=shapes, softcap=softcap)
    if impl == "pallas":
        from tjx.kernels.flash import flash_attention  # Pallas is imported only when chosen

        segs = _segments_with_lengths(mask.segment_ids, mask.kv_lengths, shapes)
        return flash_attention(
            q,
            k,
            v,
            mask.replace(segment_ids=segs, kv_lengths=None),
            scale=sm_scale,
            softcap=softcap,
        )
    return reference_attention(
        q,
        k,
        v,
        mask,
        scale=sm_scale,
        dropout_rate=dropout_rate,
        dropout_rng=dropout_rng,
        bias=bias,
        softcap=softcap,
    )


#: Dtypes the stacked kernels serve: 16-bit tiles. In float32 (TF32 products) the stacked
#: forward spills 260 B at head_dim 256 on sm_90 where the separate one spills none (ptxas of
#: triton 3.9), and a float32 GPU run is rare: it keeps the separate kernels.
STACKED_QKV_DTYPES = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def reads_stacked_qkv(kernel: AttentionKernel, dtype: Any = jnp.bfloat16) -> bool:
    """Whether ``kernel`` reads a stacked ``qkv`` of ``dtype`` in place (:func:`attention_qkv`):
    the Pallas kernel (`tjx.kernels.flash_attention_qkv`) on 16-bit tiles
    (`STACKED_QKV_DTYPES`). The others take the three slots as slices (XLA writes them), so a
    model whose kernel does not read it keeps its separate projections."""
    return kernel == AttentionKernel.PALLAS and jnp.dtype(dtype) in STACKED_QKV_DTYPES


def attention_qkv(
    qkv: Array,
    mask: AttentionMask | None = None,
    *,
    scale: float | None = None,
    implementation: Implementation = "auto",
    softcap: float | None = None,
    qkv_bias: tuple[Array, Array, Array] | None = None,
) -> Array:
    """Self-attention of one stacked ``qkv`` ``[batch, seq, 3, heads, head_dim]`` (queries,
    keys, values in slots 0-2 of axis 2: a fused projection's output), each slot plus its bias
    ``[heads, head_dim]`` of ``qkv_bias`` (None: no bias).

    The Pallas kernel reads the slots in place, adding the biases as it reads, and its gradient
    is one array of ``qkv``'s layout (`tjx.kernels.flash_attention_qkv`: neither the forward's
    slices and bias adds nor the backward's concatenation is written); any other kernel, and a
    zero-length call, runs :func:`attention` on the three biased slices. The other arguments
    are :func:`attention`'s (the mask's causal flag, segment ids and window: the stacked kernel
    has no key lengths, chunks or sinks).

    Returns
    -------
    Array
        ``[batch, seq, heads, head_dim]`` in ``qkv``'s dtype.
    """
    mask = AttentionMask() if mask is None else mask
    check_mask(mask)
    shapes = check_stacked_qkv(qkv)
    if isinstance(implementation, AttentionKernel):
        kernel = implementation
    else:
        kernel = resolve_attention(
            implementation,
            qkv.dtype,
            shapes.head_dim,
            softcap=softcap is not None,
            bidirectional_window=mask.window is not None and not mask.causal,
        )
    if not reads_stacked_qkv(kernel, qkv.dtype) or shapes.q_len == 0:
        q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        if qkv_bias is not None:
            q, k, v = (x + b for x, b in zip((q, k, v), qkv_bias, strict=True))
        return attention(
            q, k, v, mask, scale=scale, implementation=kernel, softcap=softcap
        )  # fmt: skip
    from tjx.kernels.flash_qkv import flash_attention_qkv  # Pallas: imported when it runs

    return flash_attention_qkv(qkv, mask, scale=scale, softcap=softcap, qkv_bias=qkv_bias)
