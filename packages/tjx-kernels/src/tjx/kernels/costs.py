"""What tjx's own Triton kernels read, write and compute: their prices for a roofline estimate.

A compiled program shows a Pallas kernel as one custom call with its launch grid, its operands
and its results; its operands alone would flatter it (a flash kernel reads the keys and values
once per query block, not once). So each kernel is priced from its grid, the way its programs
walk their tiles (the kernels' own loop bounds, `kv_block_range` / `q_block_range`), with the
launch parameters tjx.kernels chooses for that device (`default_launch`: the walked tile and the
backward's head split). ``d`` is the padded head size the kernel computes with; ``b``, ``h`` the
batch and query heads; sizes in elements, times the input's item size for bytes.

``tjx_flash_fwd``, grid (s_q / B_q, b, h); query block i visits keys ``0 .. n_i`` (all of them
without a causal mask; with one, up to the diagonal rounded up to the key tile B_k):
    reads   b·h·(s_q·d + 2·d·Σᵢ nᵢ)                            [+ ids: s_q + Σᵢ nᵢ, int32]
    writes  b·h·(s_q·d + s_q·4 bytes of log-sum-exp)
    FLOPs   b·h·4·B_q·d·Σᵢ nᵢ                                   (QKᵀ and PV)
``tjx_flash_bwd_dq``, grid (s_q / B_q · n, b, h) with the head split n: every program of a block
reads its query tile, dO, lse, delta and the keys/values it walks, computes the full-width
scores and its own d/n columns of dQ:
    reads   n·b·h·Σᵢ (2·B_q·d + 2·B_q·4 + 2·nᵢ·d)    writes  b·h·s_q·d
    FLOPs   b·h·(4n + 2)·B_q·d·Σᵢ nᵢ                             (QKᵀ, dO·Vᵀ, dS·K/n per program)
``tjx_flash_bwd_dkdv``, grid (s_k / B_k · n, b, h); key block j meets queries ``m_j`` (all, or
from the diagonal on):
    reads   n·b·h·Σⱼ (2·B_k·d + 2·m_j·d + 2·m_j·4)   writes  2·b·h·s_k·d (float32 under GQA)
    FLOPs   b·h·(4n + 4)·B_k·d·Σⱼ mⱼ                             (QKᵀ, dO·Vᵀ, dV/n, dK/n)

Segment ids add their int32 reads where the call has them. The stacked kernels
(``tjx_flash_qkv_*``, :mod:`tjx.kernels.flash_qkv`) do the same work on one ``[b, s, 3, h, d]``
operand (read three times: query, key and value slots) and are priced as the kernel above of
one slot's shape; the dQ call's last operand (the gradient buffer it writes into) is never read,
and the slots' biases (a ``[d]`` row per program) are left out.

The fused linear cross-entropy (`fused_ce_kernels`), ``T`` tokens, ``D`` = d_model, ``V`` the
vocabulary (all padded to the tiles), tiles ``B_t × B_v`` of logits, ``B_k`` columns of ``D`` per
product step, ``B_d`` output columns per backward program; ``I`` the inputs' item size. Every
logits tile loads its ``B_t × D`` hidden rows and ``D × B_v`` unembedding columns again (Triton
holds no more than the tile in registers):
``tjx_ce_fwd``, grid (T / B_t,):
    reads   T·D·I·V/B_v + (T/B_t)·D·V·I + 4·T         writes  12·T
    FLOPs   2·T·D·V
``tjx_ce_dx``, grid (T / B_t, D / B_d): each program recomputes its tokens' logits over all of V
and multiplies by its ``B_d`` rows of the unembedding:
    reads   (T/B_t)(D/B_d)·[(V/B_v)·((B_t·D + D·B_v + B_d·B_v)·I + 8) + 8·B_t]
    writes  T·D·I       FLOPs   2·T·D·V·(D/B_d + 1)
``tjx_ce_dw``, grid (D / B_d, V / B_v): each program walks every token tile:
    reads   (D/B_d)(V/B_v)·(T/B_t)·((B_t·D + D·B_v + B_t·B_d)·I + 8·B_t + 8)
    writes  D·V·I       FLOPs   2·T·D·V·(D/B_d + 1)
The chunked loss head's row kernels (`ce_rows`), one chunk's stored logits ``x [c, V]`` (item
size ``I``) and their gradient (item size ``O``): a program sweeps its rows twice, and the
second sweep is counted as a second read (no credit for L2, module end):
``tjx_ce_rows`` (statistics and gradient):
    reads   2·c·V·I + 4·c + 8        writes  c·V·O + 12·c
``tjx_ce_rows_grad`` (the log-sum-exp given: one sweep):
    reads   c·V·I + 8·c + 8          writes  c·V·O
The gated delta rule's sequential kernels (`gated_delta_pallas`), grid (d_v / B_v, b, h), ``R``
the chunked rows (chunks · padded chunk), ``n`` the chunks, ``I`` the item size: every program
reads its head's ``[R, d_k]`` operands and decays whole and its own ``B_v`` columns of the rest,
and walks every chunk once (the state stays on chip):
``tjx_gdelta_fwd_h`` (``W``, ``Ũ``, ``Ke``, decays, initial state → states, ``U``, final):
    reads   b·h·I·((d_v/B_v)·(2·R·d_k + n·d_k) + R·d_v + d_k·d_v)
    writes  b·h·I·(n·d_k·d_v + R·d_v + d_k·d_v)      FLOPs   4·b·h·R·d_k·d_v
``tjx_gdelta_bwd_dh`` (``diag(γ)Q``, ``W``, ``Ke``, ``dO``, ``(QKᵀ⊙M)ᵀdO``, decays, final's
cotangent → the states' cotangents, ``dU``, the initial state's):
    reads   b·h·I·((d_v/B_v)·(3·R·d_k + n·d_k) + 2·R·d_v + d_k·d_v)
    writes  as the forward's                          FLOPs   6·b·h·R·d_k·d_v
(the operands' own shapes: the formulas are what `gated_delta_cost` sums over them).

tokamax's Mosaic GPU attention (`tokamax_attention_cost`, ``attention_impl: tokamax``): its
custom call (``mosaic_gpu_v2``) names no kernel, but tokamax writes its op, tiles and mask into
the call's op name; the forward, dQ and dK/dV calls are priced as the flash kernels above with no
head split and tokamax's tiles (``block_q``/``block_kv``, ``block_*_dq``, ``block_*_dkv``), and
named so in the estimate (``tokamax attention fwd (mosaic_gpu_v2, tjx's flash formulas)``), which
prices them as attention.

``B_v`` and ``B_k`` (and ``B_t`` for ``dw``) are the default launch's (`DEFAULT_CE_LAUNCH`, what
the model takes); the rest come from the grid. What it leaves out: L2 hits (tiles
re-read by neighbouring programs often come from L2, so real HBM traffic is lower) and the
exponentials (not matmul FLOPs).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tjx.kernels.launch import MIN_BLOCK, default_launch

__all__ = [
    "CE_KERNELS",
    "GATED_DELTA_KERNELS",
    "KERNELS",
    "STACKED_KERNELS",
    "CE_ROWS_KERNELS",
    "ce_cost",
    "ce_rows_cost",
    "custom_call_cost",
    "gated_delta_cost",
    "roofline_costs",
    "tokamax_attention_cost",
]

#: The kernels priced here, by their ``pallas_call`` name.
KERNELS = ("tjx_flash_fwd", "tjx_flash_bwd_dq", "tjx_flash_bwd_dkdv")
#: The stacked-qkv kernels → the separate-array kernel whose work each does.
STACKED_KERNELS = {
    "tjx_flash_qkv_fwd": "tjx_flash_fwd",
    "tjx_flash_qkv_bwd_dq": "tjx_flash_bwd_dq",
    "tjx_flash_qkv_bwd_dkdv": "tjx_flash_bwd_dkdv",
}
CE_KERNELS = ("tjx_ce_fwd", "tjx_ce_dx", "tjx_ce_dw")
#: The chunked head's row kernels (`ce_rows`): how many sweeps of the logits each makes.
CE_ROWS_KERNELS = {"tjx_ce_rows": 2, "tjx_ce_rows_grad": 1}
#: The gated delta rule's kernels (`gated_delta_pallas`) → the operands every program of a
#: head reads whole (its ``[R, d_k]`` operands and decays; the rest it reads by its columns).
GATED_DELTA_KERNELS = {"tjx_gdelta_fwd_h": (0, 2, 3), "tjx_gdelta_bwd_dh": (0, 1, 2, 5)}

Shape = tuple[str, Sequence[int]]  # (HLO element type, dims)
_ITEM = {"bf16": 2, "f16": 2, "f32": 4, "f64": 8}
_NUMPY = {"bf16": "bfloat16", "f16": "float16", "f32": "float32", "f64": "float64"}


def _walked(own: int, walked: int, length: int, total: int, causal: bool, after: bool) -> int:
    """Σ over ``own``-row blocks of the rows of the other side each visits (``total`` of them,
    in tiles of ``walked``): everything, or up to (``after``: from) the causal diagonal."""
    count = length // own
    if not causal:
        return count * total
    visited = 0
    for i in range(count):
        if after:  # key block i meets the query tiles from the one holding its first key on
            first = (i * own) // walked * walked
            visited += max(0, total - first)
        else:  # query block i meets the key tiles up to the one holding its last query
            last = (i + 1) * own
            visited += min(total, -(-last // walked) * walked)
    return visited


def custom_call_cost(
    kernel: str,
    grid: Sequence[int],
    operands: Sequence[Shape],
    results: Sequence[Shape],
    *,
    causal: bool = True,
    device_kind: str | None = None,
    hopper: bool = True,
) -> tuple[dict[str, float], float, float] | None:
    """``(FLOPs by dtype, bytes read, bytes written)`` of one launch of a tjx kernel (see the
    module docstring for the formulas), or None for a kernel that is not tjx's.

    Parameters
    ----------
    kernel : str
        The custom call's kernel name (``"tjx_flash_fwd"``...).
    grid : sequence of int
        Its launch grid (x, y, z).
    operands, results : sequence of (dtype, dims)
        HLO element types and dimensions, in the call's order (the kernel's argument order:
        ``q, k, v[, d_out, lse, delta][, q_ids][, kv_ids]``).
    causal : bool
        Whether the attention was causal (the custom call does not say; the model does).
    device_kind, hopper : optional
        The device the kernel was launched for, to read its launch parameters.
    """
    if kernel in CE_KERNELS and len(operands) >= 3:
        return ce_cost(kernel, grid, operands)
    if kernel in CE_ROWS_KERNELS and len(operands) >= 3 and results:
        return ce_rows_cost(kernel, operands, results)
    if kernel in GATED_DELTA_KERNELS and len(operands) == 7 - 2 * (kernel == "tjx_gdelta_fwd_h"):
        return gated_delta_cost(kernel, grid, operands, results)
    if kernel in STACKED_KERNELS and len(operands) >= 3 and results:
        kernel, operands, results = _unstacked(kernel, operands, results)
    if kernel not in KERNELS or len(operands) < 3 or not results:
        return None
    (dtype, q), (_, k) = operands[0], operands[1]
    b, s_q, h, d = (int(x) for x in q)
    s_k = int(k[1])
    item = _ITEM.get(dtype, 4)
    launch = default_launch(
        max(d, MIN_BLOCK), np.dtype(_NUMPY.get(dtype, "float32")), device_kind, hopper=hopper
    )
    heads = b * h
    ids = len(operands) - (3 if kernel == "tjx_flash_fwd" else 6)  # segment ids given: 0 or 2
    if kernel == "tjx_flash_fwd":
        bq = s_q // int(grid[0])
        bk = min(launch.block_k, 1 << max(0, (s_k - 1).bit_length()))
        keys = _walked(bq, bk, s_q, s_k, causal, after=False)
        read = heads * (s_q * d + 2 * keys * d) * item + heads * (s_q + keys) * 4 * (ids > 0)
        written = heads * s_q * d * item + heads * s_q * 4
        return {dtype: 4.0 * heads * bq * d * keys}, float(read), float(written)
    n = max(1, min(launch.head_split_bwd, d // MIN_BLOCK))
    if kernel == "tjx_flash_bwd_dq":
        bq = s_q * n // int(grid[0])
        other = launch.block_q_bwd if n > 1 else launch.block_k_bwd  # dq_blocks()
        keys = _walked(bq, min(other, s_k), s_q, s_k, causal, after=False)
        read = n * heads * ((2 * s_q * d + 2 * keys * d) * item + 2 * s_q * 4)
        read += n * heads * (s_q + keys) * 4 * (ids > 0)
        written = heads * s_q * d * item
        return {dtype: (4.0 * n + 2) * heads * bq * d * keys}, float(read), float(written)
    bk = s_k * n // int(grid[0])
    queries = _walked(bk, min(launch.block_q_bwd, s_q), s_k, s_q, causal, after=True)
    read = n * heads * ((2 * s_k * d + 2 * queries * d) * item + 2 * queries * 4)
    read += n * heads * (s_k + queries) * 4 * (ids > 0)
    out_item = _ITEM.get(results[0][0], item)
    written = 2 * heads * s_k * d * out_item
    return {dtype: (4.0 * n + 4) * heads * bk * d * queries}, float(read), float(written)


def _unstacked(
    kernel: str, operands: Sequence[Shape], results: Sequence[Shape]
) -> tuple[str, list[Shape], list[Shape]]:
    """A stacked kernel's call as the separate-array kernel's of one slot's shape. Its q/k/v
    operands are ``qkv`` as the kernels read it, ``[b, s, 3·h, d]`` (or ``[b, s, 3, h, d]``);
    the gradient buffer is ``[b, s, 3, h, d]``."""
    dtype, dims = operands[0]
    b, s, d = dims[0], dims[1], dims[-1]
    h = dims[3] if len(dims) == 5 else dims[2] // 3
    one: Shape = (dtype, (b, s, h, d))
    stacked = {tuple(dims), (b, s, 3, h, d)}
    # The slots' biases ([h, d] of qkv's dtype; a row a program) are left out like the
    # separate kernels' scalars: the integer ids keep their price.
    ops = [
        one if tuple(shape) in stacked else (t, shape)
        for t, shape in operands
        if not (t == dtype and len(shape) == 2)
    ]
    name = STACKED_KERNELS[kernel]
    if name == "tjx_flash_fwd":
        return name, ops, list(results)
    if name == "tjx_flash_bwd_dq":  # its last operand is the buffer it writes (aliased)
        return name, ops[:-1], [one]
    return name, ops, [(results[0][0], one[1])] * 2  # dK and dV: two of the three slots


Cost = tuple[dict[str, float], float, float]
#: A cost with the kernel's name for the estimate (tjx.metrics' ``CustomCost``).
NamedCost = tuple[dict[str, float], float, float, str]
#: The custom call target of a Pallas Mosaic GPU kernel (tokamax's attention: one forward call,
#: two backward ones).
MOSAIC_GPU_TARGET = "mosaic_gpu_v2"
_TOKAMAX_OPS = {
    "PallasMosaicGpuFlashAttention": "fwd",
    "PallasMosaicGpuFlashAttentionVjp": "bwd",
}


def _tokamax_op(op_name: str) -> dict[str, Any] | None:
    """The JSON tokamax writes into its calls' op names (``.../tokamax:{"op": ...}/...``)."""
    at = op_name.find("tokamax:{")
    if at < 0:
        return None
    try:
        found, _ = json.JSONDecoder().raw_decode(op_name, at + len("tokamax:"))
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


def tokamax_attention_cost(
    target: str, op_name: str, operands: Sequence[Shape], results: Sequence[Shape]
) -> NamedCost | None:
    """``(FLOPs by dtype, bytes read, bytes written, name)`` of one launch of tokamax's Mosaic
    GPU attention (`tjx.kernels.tokamax_ops`), None for any other call.

    The call's op name holds tokamax's op, its tiles (``config``) and the mask (``is_causal``);
    the formulas are the Pallas kernels' with tokamax's tiles (module docstring): the forward
    walks ``block_kv`` key tiles per ``block_q`` query tile (``4·B_q·d`` FLOPs per key), the
    backward's dQ kernel (one result) its key tiles (``6·B_q·d``: QKᵀ, dO·Vᵀ, dS·K) and its
    dK/dV kernel (two results) its query tiles (``8·B_kv·d``). Key ranges (windows, lengths) and
    masks are not subtracted: an upper bound for such calls. The name says it is tokamax's and
    an estimate by these formulas (no measured tokamax kernel yet): ``tokamax attention fwd
    (mosaic_gpu_v2, tjx's flash formulas)``; the estimate prices it as attention.
    """
    if target != MOSAIC_GPU_TARGET or len(operands) < 3 or not results:
        return None
    found = _tokamax_op(op_name)
    op = found.get("op", {}) if found else {}
    kind = _TOKAMAX_OPS.get(str(op.get("__type", "")).rsplit(".", 1)[-1])
    if kind is None:
        return None
    config = op.get("config") or {}
    mask = (found or {}).get("arguments", {}).get("mask") or {}
    causal = bool(mask.get("is_causal", False))
    (dtype, q), (_, k) = operands[0], operands[1]
    b, s_q, h, d = (int(x) for x in q)
    s_k = int(k[1])
    item = _ITEM.get(dtype, 4)
    heads = b * h
    name = f"tokamax attention {{}} ({target}, tjx's flash formulas)"
    if kind == "fwd":
        bq, bk = int(config.get("block_q", 64)), int(config.get("block_kv", 128))
        keys = _walked(min(bq, s_q), min(bk, s_k), s_q, s_k, causal, after=False)
        read = heads * (s_q * d + 2 * keys * d) * item
        written = heads * s_q * d * item + 2 * heads * s_q * 4  # out, two float32 residuals
        flops = {dtype: 4.0 * heads * min(bq, s_q) * d * keys}
        return flops, float(read), float(written), name.format("fwd")
    if len(results) == 1:  # dQ
        bq, bk = int(config.get("block_q_dq", 64)), int(config.get("block_kv_dq", 64))
        keys = _walked(min(bq, s_q), min(bk, s_k), s_q, s_k, causal, after=False)
        read = heads * ((2 * s_q * d + 2 * keys * d) * item + 3 * s_q * 4)
        flops = {dtype: 6.0 * heads * min(bq, s_q) * d * keys}
        return flops, float(read), float(heads * s_q * d * item), name.format("bwd dq")
    bq, bk = int(config.get("block_q_dkv", 64)), int(config.get("block_kv_dkv", 64))
    queries = _walked(min(bk, s_k), min(bq, s_q), s_k, s_q, causal, after=True)
    read = heads * ((2 * s_k * d + 2 * queries * d) * item + 3 * queries * 4)
    written = 2 * heads * s_k * d * item  # dK, dV per query head (summed over a group after)
    flops = {dtype: 8.0 * heads * min(bk, s_k) * d * queries}
    return flops, float(read), float(written), name.format("bwd dk dv")


def roofline_costs(
    *, causal: bool, device_kind: str | None, compute_capability: tuple[int, int] | None
) -> Callable[[Any], Cost | NamedCost | None]:
    """tjx.metrics' roofline's ``custom_call_cost``: these prices for the calls of a program.

    Parameters
    ----------
    causal : bool
        Whether the model's attention is causal (the call does not say).
    device_kind, compute_capability : optional
        The device the program was compiled for: the launch it took (from sm_90 on, Hopper's).

    Returns
    -------
    callable
        ``(CustomCall) -> (FLOPs by dtype, bytes read, bytes written)``, None for a call that is
        not tjx's; tokamax's Mosaic GPU attention (no Triton name: `tokamax_attention_cost`)
        with its name as a fourth element.
    """
    hopper = (compute_capability or (0, 0)) >= (9, 0)

    def cost(call: Any) -> Cost | NamedCost | None:
        if call.kernel is None:  # no Triton name: tokamax's Mosaic GPU attention, or unknown
            if getattr(call, "target", None) != MOSAIC_GPU_TARGET:
                return None
            shapes = ([(a.dtype, a.dims) for a in x] for x in (call.operands, call.results))
            return tokamax_attention_cost(call.target, getattr(call, "op_name", ""), *shapes)
        return custom_call_cost(
            call.kernel,
            call.grid,
            [(a.dtype, a.dims) for a in call.operands],
            [(a.dtype, a.dims) for a in call.results],
            causal=causal,
            device_kind=device_kind,
            hopper=hopper,
        )

    return cost


def ce_cost(
    kernel: str, grid: Sequence[int], operands: Sequence[Shape]
) -> tuple[dict[str, float], float, float]:
    """``(FLOPs by dtype, bytes read, bytes written)`` of one launch of a fused cross-entropy
    kernel (``operands``: ``h [T, D], w [D, V], labels[, lse, g]``; formulas above)."""
    from tjx.kernels.ce_launch import DEFAULT_CE_LAUNCH

    (dtype, (t, d)), (_, (_, v)) = operands[0], operands[1]
    t, d, v = int(t), int(d), int(v)
    item = _ITEM.get(dtype, 4)
    launch = DEFAULT_CE_LAUNCH.fitted(d)
    bv = launch.block_v
    products = 2.0 * t * d * v
    if kernel == "tjx_ce_fwd":
        bt = t // int(grid[0])
        read = t * d * item * (v // bv) + (t // bt) * d * v * item + 4 * t
        return {dtype: products}, float(read), float(12 * t)
    if kernel == "tjx_ce_dx":
        bt, bd = t // int(grid[0]), d // int(grid[1])
        tile = (bt * d + d * bv + bd * bv) * item + 8
        read = (t // bt) * (d // bd) * ((v // bv) * tile + 8 * bt)
        return {dtype: products * (d // bd + 1)}, float(read), float(t * d * item)
    bd, bv = d // int(grid[0]), v // int(grid[1])
    bt = launch.block_t
    tile = (bt * d + d * bv + bt * bd) * item + 8 * bt + 8
    read = (d // bd) * (v // bv) * (t // bt) * tile
    return {dtype: products * (d // bd + 1)}, float(read), float(d * v * item)


def ce_rows_cost(
    kernel: str, operands: Sequence[Shape], results: Sequence[Shape]
) -> tuple[dict[str, float], float, float]:
    """``(FLOPs by dtype, bytes read, bytes written)`` of one launch of a row kernel
    (``operands``: ``x [c, V], labels [c], g [2][, lse [c]]``; ``results`` end with the
    gradient ``[c, V]``; formulas above). No matmul FLOPs: the exponentials are not counted."""
    (dtype, (c, v)), (out_dtype, _) = operands[0], results[-1]
    rows, cols = int(c), int(v)
    logits = rows * cols
    read = CE_ROWS_KERNELS[kernel] * logits * _ITEM.get(dtype, 4) + 8
    read += 4 * rows * (len(operands) - 2)  # the labels, and the given log-sum-exp
    written = logits * _ITEM.get(out_dtype, 4) + 4 * rows * (len(results) - 1)
    return {}, float(read), float(written)


def gated_delta_cost(
    kernel: str, grid: Sequence[int], operands: Sequence[Shape], results: Sequence[Shape]
) -> tuple[dict[str, float], float, float]:
    """``(FLOPs by dtype, bytes read, bytes written)`` of one launch of a gated delta kernel
    (formulas in the module docstring: the operands every program reads whole count once per
    column block, the rest once; the results are written once)."""
    whole = GATED_DELTA_KERNELS[kernel]
    blocks = int(grid[0])

    def size(shape: Shape) -> float:
        return float(np.prod([int(x) for x in shape[1]])) * _ITEM.get(shape[0], 4)

    read = sum(size(op) * (blocks if i in whole else 1) for i, op in enumerate(operands))
    written = sum(size(r) for r in results)
    dtype, (b, h, rows, dk) = operands[0][0], (int(x) for x in operands[0][1])
    dv = int(results[1][1][-1])
    products = (4.0 if kernel == "tjx_gdelta_fwd_h" else 6.0) * b * h * rows * dk * dv
    return {dtype: products}, float(read), float(written)
