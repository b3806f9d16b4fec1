"""The chunked loss head's per-chunk pass as one Pallas (Triton) kernel: statistics and gradient.

Under differentiation the chunked cross-entropy (`chunked_cross_entropy`) turns each chunk's
stored logits ``x [c, V]`` into the row statistics (log-sum-exp, argmax, the label's logit) and
the logits gradient ``g_ce·(softmax − onehot) + 2·g_z·lse·softmax``. XLA makes that two kernels
a chunk: a reduction reading ``x`` for the statistics, then an elementwise pass reading ``x``
again and writing the gradient (its Triton softmax fusion does not take a 50 304-wide row).
``tjx_ce_rows`` does both in one launch: a program owns ``B_r`` rows and sweeps their columns
twice in ``B_v``-wide tiles, first with an online log-sum-exp (running max, rescaled sum of
exponentials, first argmax, label pick), then forming and writing the gradient tile by tile.

What it reads: the second sweep re-reads the program's rows (``B_r · V`` elements, 0.8 MB at
GPT-2's vocabulary in bf16 with ``B_r = 8``) right after the first; whether that comes from L2
depends on how many programs run at once, so the honest bound is two reads of ``x`` from device
memory and one write of the gradient, the same bytes as XLA's two kernels, in one launch and
without XLA's float32 upcast between them (`costs.ce_rows_cost` prices it so; one read is the
floor if L2 holds every re-read). Holding a whole row on chip instead (its 100 KB fit an H100's
shared memory, not its registers) takes a kernel that manages shared memory (Mosaic GPU); this
one is Triton, like tjx's other Pallas kernels, so it lowers through jaxlib's own Triton in a
deviceless H100 compile and runs in Pallas' interpreter on CPU for the tests.

Given the log-sum-exp (``lse``: the z-loss backward, whose forward saved it) the kernel skips
the first sweep: one read, one write.

Tiles are the largest powers of two dividing the rows (at most `ROW_BLOCK`) and the vocabulary
(at most `COL_BLOCK`), so no padding copy is made (GPT-2's 50 304 columns: tiles of 128).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from tjx.kernels.flash import resolve_interpret
from tjx.kernels.flash_fwd import out_struct

Array = jax.Array

#: Rows a program owns (at most): few, so the rows it re-reads are likelier still in L2.
ROW_BLOCK = 8
#: Columns a tile spans (at most).
COL_BLOCK = 1024
#: Warps a program runs (no GPU has measured another; the GPU suite's ``ce rows`` cell times it).
NUM_WARPS = 4
#: The kernels' names in a compiled program (their Triton custom calls) and in the estimate: the
#: statistics-and-gradient kernel and the gradient-only one (the log-sum-exp given).
KERNEL = "tjx_ce_rows"
GRAD_KERNEL = "tjx_ce_rows_grad"


def pow2_divisor(n: int, cap: int) -> int:
    """The largest power of two dividing ``n`` (``n >= 1``), at most ``cap``."""
    return min(n & -n, cap)


def online_row_stats(
    tile: Callable[[Array], tuple[Array, Array]], labels: Array, tiles: int, no_column: int
) -> tuple[Array, Array, Array]:
    """(lse, first argmax, label logit) of a program's rows, one online pass over column tiles.

    Parameters
    ----------
    tile : callable
        ``j`` → tile ``j``'s float32 logits ``[rows, bv]`` and their column numbers ``[bv]``.
    labels : Array
        int32 ``[rows]``: each row's label column.
    tiles : int
        Column tiles to sweep.
    no_column : int
        The argmax of a tile with no column at its max (a NaN row): past every real column.
    """

    def body(j: Array, carry: tuple[Array, Array, Array, Array]) -> Any:
        m, s, top, pick = carry
        x, col = tile(j)
        tile_max = jnp.max(x, axis=1)
        # the tile's first column holding its max (ties: the lowest index, as jnp.argmax)
        tile_arg = jnp.min(jnp.where(x == tile_max[:, None], col[None, :], no_column), axis=1)
        m_new = jnp.maximum(m, tile_max)
        shift = jnp.where(m_new == -jnp.inf, 0.0, m_new)  # an all -inf prefix: no inf - inf
        s = s * jnp.exp(m - shift) + jnp.sum(jnp.exp(x - shift[:, None]), axis=1)
        top = jnp.where(tile_max > m, tile_arg, top)  # an earlier tile keeps a tie
        pick = pick + jnp.sum(jnp.where(col[None, :] == labels[:, None], x, 0.0), axis=1)
        return m_new, s, top, pick

    rows = labels.shape[0]
    init = (
        jnp.full((rows,), -jnp.inf, jnp.float32),
        jnp.zeros((rows,), jnp.float32),
        jnp.zeros((rows,), jnp.int32),
        jnp.zeros((rows,), jnp.float32),
    )
    m, s, top, pick = lax.fori_loop(0, tiles, body, init)
    return m + jnp.log(s), top, pick


def _stats_sweep(x_ref: Any, labels: Array, bv: int, nv: int) -> tuple[Array, ...]:
    """(lse, first argmax, label logit) of the program's rows, one read of their columns."""

    def tile(j: Array) -> tuple[Array, Array]:
        col = j * bv + jnp.arange(bv, dtype=jnp.int32)
        return x_ref[:, pl.ds(j * bv, bv)].astype(jnp.float32), col

    return online_row_stats(tile, labels, nv, nv * bv)


def _grad_sweep(
    x_ref: Any, dx_ref: Any, labels: Array, lse: Array, g_ref: Any, bv: int, nv: int
) -> None:
    """``g_ce·(p − onehot) + 2·g_z·lse·p`` of the program's rows, written tile by tile; zero
    for rows whose label is negative (not scored)."""
    g_ce, g_z = g_ref[0], g_ref[1]
    scale = (g_ce + 2.0 * g_z * lse)[:, None]
    scored = labels[:, None] >= 0

    def body(j: Array, carry: Array) -> Array:
        col = j * bv + jnp.arange(bv, dtype=jnp.int32)
        x = x_ref[:, pl.ds(j * bv, bv)].astype(jnp.float32)
        out = jnp.exp(x - lse[:, None]) * scale - jnp.where(
            col[None, :] == labels[:, None], g_ce, 0.0
        )
        dx_ref[:, pl.ds(j * bv, bv)] = jnp.where(scored, out, 0.0).astype(dx_ref.dtype)
        return carry

    lax.fori_loop(0, nv, body, jnp.int32(0))


def _rows_kernel(
    x_ref: Any,
    lab_ref: Any,
    g_ref: Any,
    lse_ref: Any,
    top_ref: Any,
    pick_ref: Any,
    dx_ref: Any,
    *,
    bv: int,
    nv: int,
) -> None:
    labels = lab_ref[...]
    lse, top, pick = _stats_sweep(x_ref, labels, bv, nv)
    lse_ref[...] = lse
    top_ref[...] = top
    pick_ref[...] = pick
    _grad_sweep(x_ref, dx_ref, labels, lse, g_ref, bv, nv)


def _grad_kernel(
    x_ref: Any, lab_ref: Any, g_ref: Any, lse_ref: Any, dx_ref: Any, *, bv: int, nv: int
) -> None:
    _grad_sweep(x_ref, dx_ref, lab_ref[...], lse_ref[...], g_ref, bv, nv)


def ce_rows(
    logits: Array,
    labels: Array,
    g: Array,
    out_dtype: Any,
    *,
    lse: Array | None = None,
    interpret: bool | None = None,
) -> tuple[Array, Array, Array, Array]:
    """Row statistics and the logits gradient of one chunk, in one kernel.

    Parameters
    ----------
    logits : Array
        ``[c, V]`` as stored (bf16, fp16 or fp32); the kernel computes in float32.
    labels : Array
        ``[c]`` int32; negative: the row is not scored (its gradient is zero, its label logit 0).
    g : Array
        float32 ``[2]``: ``(g_ce, g_z)``, the gradient's weights of the cross-entropy and of
        ``lse²`` (the fused head's ``(1, 0)``).
    out_dtype : dtype
        The gradient's dtype (the head's products' operand dtype).
    lse : Array, optional
        float32 ``[c]`` log-sum-exp already known: the kernel only writes the gradient (one read
        of the logits) and returns it as given, with zero argmax and label logit.
    interpret : bool, optional
        Pallas' interpreter; None: compiled on a CUDA GPU (Triton), interpreted elsewhere.

    Returns
    -------
    tuple of Array
        ``(lse f32 [c], argmax int32 [c], label logit f32 [c], dlogits out_dtype [c, V])``.
    """
    c, v = logits.shape
    br, bv = pow2_divisor(c, ROW_BLOCK), pow2_divisor(v, COL_BLOCK)
    nv = v // bv
    row = pl.BlockSpec((br,), lambda i: (i,))
    whole = pl.BlockSpec((br, v), lambda i: (i, 0))
    both = pl.BlockSpec((2,), lambda i: (0,))
    grad = out_struct((c, v), out_dtype, logits, labels, g)
    common = dict(
        grid=(c // br,),
        compiler_params=plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=2),
        interpret=resolve_interpret(interpret),
    )
    if lse is not None:
        dx = pl.pallas_call(
            functools.partial(_grad_kernel, bv=bv, nv=nv),
            in_specs=[whole, row, both, row],
            out_specs=whole,
            out_shape=grad,
            name=GRAD_KERNEL,
            **common,  # type: ignore[arg-type]
        )(logits, labels, g, lse)
        zero = jnp.zeros((c,), jnp.int32)
        return lse, zero, zero.astype(jnp.float32), dx
    stats = [out_struct((c,), dt, logits, labels) for dt in (jnp.float32, jnp.int32, jnp.float32)]
    out = pl.pallas_call(
        functools.partial(_rows_kernel, bv=bv, nv=nv),
        in_specs=[whole, row, both],
        out_specs=[row, row, row, whole],
        out_shape=[*stats, grad],
        name=KERNEL,
        **common,  # type: ignore[arg-type]
    )(logits, labels, g)
    return out[0], out[1], out[2], out[3]
