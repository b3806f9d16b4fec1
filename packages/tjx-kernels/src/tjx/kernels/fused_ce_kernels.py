"""Pallas (Triton) kernels of the fused linear cross-entropy: logits are never written.

Shapes (padded by the caller, `fused_ce`): hidden ``h [T, D]``, unembedding ``w [D, V]``,
labels ``[T]`` int32 (-1: not scored), all T/D/V multiples of the tiles. Logits are computed
tile by tile in float32 (``B_t`` tokens × ``B_v`` vocabulary columns, the products accumulated
over ``B_k``-wide slices of ``D``) and dropped; columns at or past ``vocab`` (padding) are
masked.

* ``tjx_ce_fwd``, grid ``(T / B_t,)``: a program owns a token tile and walks the vocabulary with
  an online log-sum-exp (running max, rescaled sum of exponentials), the first argmax and the
  label's logit. Writes ``lse``, ``argmax`` and the label logit per token.
* ``tjx_ce_dx``, grid ``(T / B_t, D / B_d)``: a program recomputes its token tile's logits tile
  by tile over the whole vocabulary, forms ``dlogits = g_ce·(p − onehot) + 2·g_z·lse·p`` (zero
  for unscored tokens and padded columns) and accumulates its ``B_d`` columns of
  ``dx = dlogits · wᵀ``.
* ``tjx_ce_dw``, grid ``(D / B_d, V / B_v)``: a program owns a ``[B_d, B_v]`` tile of ``dw``,
  walks the tokens, recomputes each token tile's logits against its vocabulary tile and
  accumulates ``hᵀ · dlogits``.

The backward kernels recompute the logits ``D / B_d`` times each (a program needs the whole
``D`` for a logit but accumulates only ``B_d`` columns of its output, whose float32 tile must
stay in registers). What each launch reads, writes and computes is in `costs.py`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from tjx.kernels.ce_launch import CELaunch
from tjx.kernels.ce_rows import online_row_stats
from tjx.kernels.flash_fwd import dot_nn, dot_nt, dot_tn, out_struct

Array = jax.Array


def _params(launch: CELaunch, backward: bool) -> Any:
    warps = launch.num_warps_bwd if backward else launch.num_warps
    return plgpu.CompilerParams(num_warps=warps, num_stages=launch.num_stages)


def _sizes(h: Array, w: Array, vocab: int, launch: CELaunch) -> dict[str, int]:
    """The kernels' static sizes: the real vocabulary, ``D``, the tiles and the tile counts over
    the vocabulary (``nv``) and the tokens (``nt``); each kernel reads those it needs."""
    (t, d), v = h.shape, w.shape[1]
    bt, bv = launch.block_t, launch.block_v
    return dict(
        vocab=vocab, d=d, bt=bt, bv=bv, bk=launch.block_k, bd=launch.block_d, nv=v // bv,
        nt=t // bt,
    )  # fmt: skip


def _logits(h_ref: Any, w_ref: Any, rows: Any, cols: Any, d: int, bk: int) -> Array:
    """float32 ``h[rows] @ w[:, cols]``, accumulated over ``bk``-wide slices of ``d``."""

    def step(k: Array, acc: Array) -> Array:
        ks = pl.ds(k * bk, bk)
        return acc + dot_nn(h_ref[rows, ks], w_ref[ks, cols])

    n_rows = rows.size if isinstance(rows, pl.Slice) else h_ref.shape[0]
    n_cols = cols.size
    return lax.fori_loop(0, d // bk, step, jnp.zeros((n_rows, n_cols), jnp.float32))


def _dlogits(logits: Array, lse: Array, labels: Array, col: Array, vocab: int, g_ref: Any) -> Array:
    """``g_ce·(p − onehot) + 2·g_z·lse·p`` of a tile; 0 for unscored rows and padded columns."""
    g_ce, g_z = g_ref[0], g_ref[1]
    keep = (labels[:, None] >= 0) & (col[None, :] < vocab)
    p = jnp.where(keep, jnp.exp(logits - lse[:, None]), 0.0)
    onehot = jnp.where(col[None, :] == labels[:, None], g_ce, 0.0)
    return p * (g_ce + 2.0 * g_z * lse[:, None]) - onehot


def _fwd_kernel(
    h_ref: Any, w_ref: Any, lab_ref: Any, lse_ref: Any, top_ref: Any, pick_ref: Any, **kw: Any
) -> None:
    vocab, d, bt, bv, bk = kw["vocab"], kw["d"], kw["bt"], kw["bv"], kw["bk"]
    labels = lab_ref[...]
    rows = pl.ds(0, bt)

    def tile(j: Array) -> tuple[Array, Array]:
        col = j * bv + jnp.arange(bv)
        logits = _logits(h_ref, w_ref, rows, pl.ds(j * bv, bv), d, bk)
        return jnp.where(col[None, :] < vocab, logits, -jnp.inf), col

    lse, top, pick = online_row_stats(tile, labels, kw["nv"], vocab)
    lse_ref[...] = lse
    top_ref[...] = top
    pick_ref[...] = pick


def ce_forward(
    h: Array, w: Array, labels: Array, vocab: int, launch: CELaunch, interpret: bool
) -> tuple[Array, Array, Array]:
    """(lse f32 [T], argmax int32 [T], label logit f32 [T]) of padded inputs."""
    (t, d), v, bt = h.shape, w.shape[1], launch.block_t
    kw = _sizes(h, w, vocab, launch)
    outs = [out_struct((t,), dt, h, w, labels) for dt in (jnp.float32, jnp.int32, jnp.float32)]
    row = pl.BlockSpec((bt,), lambda i: (i,))
    return pl.pallas_call(  # type: ignore[no-any-return]
        functools.partial(_fwd_kernel, **kw),
        grid=(t // bt,),
        in_specs=[
            pl.BlockSpec((bt, d), lambda i: (i, 0)),
            pl.BlockSpec((d, v), lambda i: (0, 0)),
            row,
        ],
        out_specs=[row, row, row],
        out_shape=outs,
        compiler_params=_params(launch, backward=False),
        interpret=interpret,
        name="tjx_ce_fwd",
    )(h, w, labels)


def _dx_kernel(
    h_ref: Any, w_ref: Any, lab_ref: Any, lse_ref: Any, g_ref: Any, dx_ref: Any, **kw: Any
) -> None:
    vocab, d, bt, bv, bk, bd = kw["vocab"], kw["d"], kw["bt"], kw["bv"], kw["bk"], kw["bd"]
    di = pl.program_id(1)
    labels, lse = lab_ref[...], lse_ref[...]
    rows = pl.ds(0, bt)

    def body(j: Array, acc: Array) -> Array:
        col = j * bv + jnp.arange(bv)
        logits = _logits(h_ref, w_ref, rows, pl.ds(j * bv, bv), d, bk)
        dl = _dlogits(logits, lse, labels, col, vocab, g_ref).astype(w_ref.dtype)
        return acc + dot_nt(dl, w_ref[pl.ds(di * bd, bd), pl.ds(j * bv, bv)])

    acc = lax.fori_loop(0, kw["nv"], body, jnp.zeros((bt, bd), jnp.float32))
    dx_ref[...] = acc.astype(dx_ref.dtype)


def _dw_kernel(
    h_ref: Any, w_ref: Any, lab_ref: Any, lse_ref: Any, g_ref: Any, dw_ref: Any, **kw: Any
) -> None:
    vocab, d, bt, bv, bk, bd = kw["vocab"], kw["d"], kw["bt"], kw["bv"], kw["bk"], kw["bd"]
    di, j = pl.program_id(0), pl.program_id(1)
    col = j * bv + jnp.arange(bv)
    cols = pl.ds(0, bv)  # w_ref is this program's [D, B_v] vocabulary tile

    def body(i: Array, acc: Array) -> Array:
        rows = pl.ds(i * bt, bt)
        logits = _logits(h_ref, w_ref, rows, cols, d, bk)
        dl = _dlogits(logits, lse_ref[rows], lab_ref[rows], col, vocab, g_ref).astype(h_ref.dtype)
        return acc + dot_tn(h_ref[rows, pl.ds(di * bd, bd)], dl)

    acc = lax.fori_loop(0, kw["nt"], body, jnp.zeros((bd, bv), jnp.float32))
    dw_ref[...] = acc.astype(dw_ref.dtype)


def ce_backward(
    h: Array, w: Array, labels: Array, lse: Array, g: Array, vocab: int, launch: CELaunch,
    interpret: bool,
) -> tuple[Array, Array]:  # fmt: skip
    """``(dx [T, D], dw [D, V])`` (``h``'s and ``w``'s dtypes) of padded inputs, one launch of
    the dx and one of the dw kernel; ``g`` = float32 ``[g_ce, g_z]``."""
    (t, d), v = h.shape, w.shape[1]
    bt, bv, bd = launch.block_t, launch.block_v, launch.block_d
    kw = _sizes(h, w, vocab, launch)
    args = (h, w, labels, lse, g)

    def call(kernel: Any, name: str, grid: tuple[int, int], specs: list[Any], like: Array) -> Any:
        """One backward launch over ``args``: ``specs`` are its inputs' then its output's."""
        return pl.pallas_call(
            functools.partial(kernel, **kw),
            grid=grid,
            in_specs=specs[:-1],
            out_specs=specs[-1],
            out_shape=out_struct(like.shape, like.dtype, *args),
            compiler_params=_params(launch, backward=True),
            interpret=interpret,
            name=name,
        )(*args)

    g_all = pl.BlockSpec((2,), lambda *_: (0,))  # both kernels read all of g
    row = pl.BlockSpec((bt,), lambda i, di: (i,))  # dx: its token tile's labels and lse
    dx = call(
        _dx_kernel,
        "tjx_ce_dx",
        (t // bt, d // bd),
        [
            pl.BlockSpec((bt, d), lambda i, di: (i, 0)),
            pl.BlockSpec((d, v), lambda i, di: (0, 0)),
            row,
            row,
            g_all,
            pl.BlockSpec((bt, bd), lambda i, di: (i, di)),
        ],
        h,
    )
    whole = pl.BlockSpec((t,), lambda di, j: (0,))  # dw: every token's labels and lse
    dw = call(
        _dw_kernel,
        "tjx_ce_dw",
        (d // bd, v // bv),
        [
            pl.BlockSpec((t, d), lambda di, j: (0, 0)),
            pl.BlockSpec((d, bv), lambda di, j: (0, j)),
            whole,
            whole,
            g_all,
            pl.BlockSpec((bd, bv), lambda di, j: (di, j)),
        ],
        w,
    )
    return dx, dw
