"""The three published quantized formats' values, dequantized from their stored parts (pure
NumPy; the formats' tables and how transformers computes each are in `tjx.nn.hf.quantized`, which
shows a folder's tensors dequantized to the loader)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The e2m1 (FP4) value of each 4-bit code: sign bit 3, exponent bits 2-1, mantissa bit 0.
E2M1 = np.array(
    [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
    np.float32,
)
#: MXFP4: values per scale, and bytes per block (two values a byte).
MX_BLOCK, MX_BYTES = 32, 16
#: compressed-tensors' packed INT4: values per int32 word, the value stored for 0 (its offset).
CT_PER_WORD, CT_OFFSET = 8, 8
#: The float32 working set of one dequantization step: rows are converted this many bytes at a
#: time into the output, so a tensor costs its output plus a bounded chunk, not a float32 copy.
CHUNK_BYTES = 16 << 20


def fp8_grid(shape: tuple[int, ...], block: tuple[int, int]) -> tuple[int, ...] | None:
    """The scale shape of an FP8 tensor of ``shape`` in ``block``s (a last partial block where
    the block does not divide), or None for a tensor of fewer than two dims."""
    if len(shape) < 2:
        return None
    rows, cols = shape[-2:]
    return (*shape[:-2], -(-rows // block[0]), -(-cols // block[1]))


def _scales(scales: np.ndarray) -> np.ndarray:
    """Scales as float32: E8M0 bytes (U8) are ``2^(byte − 127)``, the rest their value."""
    if scales.dtype == np.uint8:
        return np.ldexp(np.float32(1), scales.astype(np.int32) - 127)
    return scales.astype(np.float32)


def dequantize_fp8(
    weight: np.ndarray,
    scale_inv: np.ndarray,
    block: tuple[int, int],
    dtype: Any = np.float32,
) -> np.ndarray:
    """Block-scaled FP8 ``weight`` ``[..., R, C]`` times its ``scale_inv`` per block, in ``dtype``.

    Parameters
    ----------
    weight : np.ndarray
        float8 (ml_dtypes' ``float8_e4m3fn`` or ``float8_e5m2``), two dims or more.
    scale_inv : np.ndarray
        ``[..., ⌈R/bm⌉, ⌈C/bn⌉]`` (`fp8_grid`): float32/bfloat16/float16, E8M0 as
        ``float8_e8m0fnu``, or E8M0 bytes (uint8: ``2^(byte − 127)``).
    block : (int, int)
        ``(bm, bn)``, ``weight_block_size``.
    dtype : dtype
        The output's: each float32 product is cast to it.

    Returns
    -------
    np.ndarray
        ``weight``'s shape in ``dtype``.

    Raises
    ------
    ValueError
        ``scale_inv``'s shape is not the grid ``block`` gives.
    """
    grid = fp8_grid(weight.shape, block)
    if grid is None or scale_inv.shape != grid:
        raise ValueError(
            f"FP8 scales of shape {list(scale_inv.shape)} do not fit a weight of shape "
            f"{list(weight.shape)} in blocks of {list(block)} (they need {grid and list(grid)})"
        )
    bm, bn = block
    rows, cols = weight.shape[-2:]
    out = np.empty(weight.shape, dtype)
    flat_w = weight.reshape(-1, rows, cols)
    flat_s = _scales(scale_inv).reshape(-1, *grid[-2:])
    flat_out = out.reshape(-1, rows, cols)
    step = max(1, CHUNK_BYTES // (4 * max(cols, 1) * bm)) * bm  # whole blocks of rows
    for k in range(flat_w.shape[0]):
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            per_row = np.repeat(flat_s[k, r0 // bm : -(-r1 // bm)], bm, axis=0)[: r1 - r0]
            scale = np.repeat(per_row, bn, axis=1)[:, :cols]
            flat_out[k, r0:r1] = flat_w[k, r0:r1].astype(np.float32) * scale
    return out


def dequantize_mxfp4(blocks: np.ndarray, scales: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """gpt-oss's MXFP4 experts as transformers' parameter: ``[E, O, G, 16]`` bytes and ``[E, O,
    G]`` E8M0 scales → ``[E, G·32, O]`` in ``dtype``.

    Byte ``k`` of a block holds value ``2k`` in its low nibble and ``2k + 1`` in its high one,
    each an e2m1 code (`E2M1`) times ``2^(scale − 127)``; the ``[E, O, G·32]`` values are then
    transposed to ``[E, G·32, O]`` (transformers' ``convert_moe_packed_tensors``).

    Raises
    ------
    ValueError
        ``blocks`` not ``[E, O, G, 16]`` bytes, or ``scales`` not ``blocks.shape[:-1]``.
    """
    if blocks.ndim != 4 or blocks.shape[-1] != MX_BYTES or scales.shape != blocks.shape[:-1]:
        raise ValueError(
            f"MXFP4 blocks {list(blocks.shape)} with scales {list(scales.shape)}: the blocks must "
            f"be [experts, rows, groups, {MX_BYTES}] bytes and the scales [experts, rows, groups]"
        )
    experts, rows, groups, _ = blocks.shape
    cols = groups * MX_BLOCK
    out = np.empty((experts, cols, rows), dtype)
    exponents = scales.view(np.uint8)
    step = max(1, CHUNK_BYTES // (4 * max(cols, 1)))
    for e in range(experts):
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            packed = blocks[e, r0:r1].view(np.uint8)
            values = np.empty((r1 - r0, groups, MX_BLOCK), np.float32)
            values[..., 0::2] = E2M1[packed & 0x0F]
            values[..., 1::2] = E2M1[packed >> 4]
            values = np.ldexp(values, exponents[e, r0:r1, :, None].astype(np.int32) - 127)
            out[e, :, r0:r1] = values.reshape(r1 - r0, cols).T
    return out


def dequantize_int4(
    packed: np.ndarray, scales: np.ndarray, group: int, dtype: Any = np.float32
) -> np.ndarray:
    """compressed-tensors' ``pack-quantized`` symmetric INT4 weight ``[..., O, I]``.

    Value ``i`` of a row is the 4 bits from bit ``4i`` of the row's int32 words taken as one
    little-endian bit string (word ``i // 8``; byte ``k`` of a word holds values ``2k``, its low
    nibble, and ``2k + 1``), stored offset by 8: the weight is ``(nibble − 8) · scale`` of its
    group of ``group`` inputs, rounded to the scales' dtype (compressed-tensors multiplies in
    it), then cast to ``dtype``.

    Parameters
    ----------
    packed : np.ndarray
        int32 ``[..., O, ⌈I/8⌉]``.
    scales : np.ndarray
        float32, bfloat16 or float16 ``[..., O, I/group]``.
    group : int
        ``group_size``: inputs per scale.
    dtype : dtype
        The output's.

    Returns
    -------
    np.ndarray
        ``[..., O, I]`` in ``dtype``, ``I = scales.shape[-1] · group``.

    Raises
    ------
    ValueError
        ``packed`` not int32 of two dims or more, or ``scales`` not the shape it needs.
    """
    cols = scales.shape[-1] * group if scales.ndim else 0
    words = -(-cols // CT_PER_WORD)
    if (
        packed.dtype != np.int32
        or packed.ndim < 2
        or scales.shape[:-1] != packed.shape[:-1]
        or packed.shape[-1] != words
    ):
        raise ValueError(
            f"packed INT4 weights {packed.dtype} {list(packed.shape)} with scales "
            f"{list(scales.shape)} in groups of {group}: the weights must be int32 [..., rows, "
            f"{words}] for [..., rows, {cols}] values (the scales' groups times {group})"
        )
    rows = packed.shape[-2]
    groups = scales.shape[-1]
    # compressed-tensors computes (q − zero point) · scale in the scale's dtype.
    product = scales.dtype if scales.dtype.itemsize <= 4 else np.dtype(np.float32)
    out = np.empty((*packed.shape[:-1], cols), dtype)
    flat_p = np.ascontiguousarray(packed, "<i4").reshape(-1, rows, words)
    flat_s = scales.reshape(-1, rows, groups)
    flat_out = out.reshape(-1, rows, cols)
    step = max(1, CHUNK_BYTES // (4 * max(words * CT_PER_WORD, 1)))
    for k in range(flat_p.shape[0]):
        for r0 in range(0, rows, step):
            r1 = min(rows, r0 + step)
            nibbles = flat_p[k, r0:r1].view(np.uint8)  # little-endian: value 2k, 2k+1 in byte k
            values = np.empty((r1 - r0, words * CT_PER_WORD), np.float32)
            values[:, 0::2] = nibbles & 0x0F
            values[:, 1::2] = nibbles >> 4
            values = (values[:, :cols] - CT_OFFSET).reshape(r1 - r0, groups, group)
            values *= flat_s[k, r0:r1, :, None].astype(np.float32)  # exact for BF16/F16 scales
            flat_out[k, r0:r1] = values.reshape(r1 - r0, cols).astype(product)
    return out
