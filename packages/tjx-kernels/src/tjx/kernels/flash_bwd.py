"""Backward Pallas kernels of flash attention (FlashAttention-2 backward, two kernels).

From the saved output ``O`` and base-2 log-sum-exp ``L`` the probabilities of any tile are
recomputed as ``P = exp2(S·log2e − L)``; with ``δ = rowsum(dO ∘ O)`` (computed in XLA)
``dS = P ∘ (dO·Vᵀ − δ)``, ``dV = Pᵀ·dO``, ``dK = scale · dSᵀ·Q`` and ``dQ = scale · dS·K``.

* ``dkdv`` kernel: one program per (key block, batch, query head); walks over query blocks from the
  diagonal on (causal), up to the end of a sliding window, and accumulates dK and dV in float32.
* ``dq`` kernel: one program per (query block, batch, query head); walks over key blocks from the
  window's start up to the diagonal and accumulates dQ in float32.

With a ``softcap`` the tile's logits are the capped ``cap · tanh(scale · q·kᵀ / cap)``; ``dS``
is then multiplied by the cap's derivative ``1 - t²`` (``t`` recomputed with the probabilities
and folded into them at once, see ``_probs``) before the ``scale · dS·K`` products.

With GQA each query head writes its own dK/dV slice (float32); the caller sums the group in XLA.
Nothing of size ``[seq, seq]`` is ever stored.

Head split (``cfg.head_split_bwd = n > 1``, the sm_90 launch of 16-bit head_dim 256): each block
gets n programs, each accumulating only its ``head_dim / n`` columns of dK/dV or dQ, so the float32
accumulators shrink n-fold (at n = 1 they did not fit a warpgroup's registers with wgmma tiles).
Each program still computes the tile's full-width ``S`` and ``dP`` (summed over the column slices),
so the kernels do ``(2n + 2)/4`` (dK/dV) and ``(2n + 1)/3`` (dQ) times the products of n = 1
(1.5 and 1.67 at n = 2) and n times the exponentials.
dK/dV then works on transposed tiles (``Sᵀ = K·Qᵀ``, keys on rows), the operand layout of
its products, and dQ takes the tiles the other way round (:meth:`KernelConfig.dq_blocks`).

Stacked (:func:`flash_backward_qkv`, :mod:`tjx.kernels.flash_qkv`): the same two kernels read
q, k, v from one ``[b, s, 3, h, d]`` operand (its slot-merged view) and write ONE gradient of
that layout: dK/dV the key and value slots of a buffer it makes, dQ the query slot of that
buffer, passed to it as an input aliased to its output.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from tjx.kernels.flash_fwd import (
    K_SLOT,
    Q_SLOT,
    V_SLOT,
    KernelConfig,
    bias_specs,
    biased,
    block_mask,
    dot_nn,
    dot_nt,
    dot_tn,
    key_walk,
    kv_block_range,
    out_struct,
    q_block_range,
    query_walk,
    scores,
    slot_view,
    walk,
)
from tjx.kernels.softcap import cap_derivative

Array = jax.Array


def _probs(
    cfg: KernelConfig,
    s: Array,
    lse: Array,
    q_pos: Array,
    k_pos: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    edge: bool,
    transposed: bool = False,
) -> tuple[Array, Array]:
    """Attention probabilities of one tile from its raw scores ``s`` ([bq, bk] = q·kᵀ, or
    [bk, bq] = k·qᵀ when ``transposed``) and the saved log-sum-exp, with the soft cap's
    probabilities as ``dS = P ∘ (dP − δ)`` uses them: times the soft cap's derivative ``1 - t²``
    (``P`` itself without a cap). Forming that product here, before the ``dV`` product, lets
    ``t`` die at once: a kernel keeping ``P``, ``t`` and ``dP`` spilled registers on sm_90."""
    s, t = scores(cfg, s)
    mask = block_mask(cfg, q_pos, k_pos, q_ids, kv_ids, edge, transposed)
    if mask is not None:
        s = jnp.where(mask, s, -jnp.inf)
    # lse is +inf on empty rows: exp2(-inf) = 0 whatever s is.
    p = jnp.exp2(s - (lse[None, :] if transposed else lse[:, None]))
    g = cap_derivative(t)
    return p, p if g is None else p * g


def _split_program(cfg: KernelConfig, d: int) -> tuple[Array, list[Any] | None]:
    """(block index, column slices) of this program; slices None without a head split.

    With ``head_split_bwd = n > 1`` grid axis 0 runs n programs per block side by side (they read
    the same inputs). Each accumulates and writes only its own ``d / n`` columns of the gradient,
    the first slice; the tile's scores still need every column, summed over the n slices (its own
    first, so the loads of its slice serve both).
    """
    n = cfg.head_split_bwd
    if n == 1:
        return pl.program_id(0), None
    pid, w = pl.program_id(0), d // n
    return pid // n, [pl.ds((pid % n + t) % n * w, w) for t in range(n)]


def _dot_parts(a: list[Array], b: list[Array]) -> Array:
    """Σ a[t]·b[t]ᵀ: a product over column slices, float32."""
    return functools.reduce(lambda x, y: x + y, map(dot_nt, a, b))


#: The refs both backward kernels read: q, k, v, dO, lse, δ, query and key segment ids.
Refs = tuple[Any, Any, Any, Any, Any, Any, Any, Any]


def dkdv_sums(refs: Refs, cfg: KernelConfig) -> tuple[Array, Array]:
    """One dK/dV program's float32 sums (dK scaled) over the query blocks its key block meets:
    the ``[block_k, head_dim / n]`` tiles its caller stores (as separate arrays, or into the
    key and value slots of one stacked gradient, :mod:`tjx.kernels.flash_qkv`)."""
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qid_ref, kid_ref = refs
    bq, bk = cfg.block_q_bwd, cfg.block_k_bwd
    j, cols = _split_program(cfg, k_ref.shape[-1])
    k: Any = k_ref[...] if cols is None else [k_ref[:, c] for c in cols]
    v: Any = v_ref[...] if cols is None else [v_ref[:, c] for c in cols]
    k_pos = j * bk + jnp.arange(bk)
    kv_ids = None if kid_ref is None else kid_ref[...]

    def body(i: Array, carry: tuple[Array, Array], edge: bool) -> tuple[Array, Array]:
        dk, dv = carry
        qs = pl.ds(i * bq, bq)
        q: Any = q_ref[qs, :] if cols is None else [q_ref[qs, c] for c in cols]
        do: Any = do_ref[qs, :] if cols is None else [do_ref[qs, c] for c in cols]
        q_ids = None if qid_ref is None else qid_ref[qs]
        q_pos = i * bq + jnp.arange(bq)
        lse = lse_ref[qs]
        if cols is not None:  # transposed tiles [bk, bq] (keys on rows, as dK/dV want)
            pt, pt_ds = _probs(cfg, _dot_parts(k, q), lse, q_pos, k_pos, q_ids, kv_ids, edge, True)
            dv = dv + dot_nn(pt.astype(do[0].dtype), do[0])
            dst = pt_ds * (_dot_parts(v, do) - delta_ref[qs][None, :])
            return dk + dot_nn(dst.astype(q[0].dtype), q[0]), dv
        p, p_ds = _probs(cfg, dot_nt(q, k), lse, q_pos, k_pos, q_ids, kv_ids, edge)
        dv = dv + dot_tn(p.astype(do.dtype), do)
        ds = p_ds * (dot_nt(do, v) - delta_ref[qs][:, None])
        dk = dk + dot_tn(ds.astype(q.dtype), q)
        return dk, dv

    d = k_ref.shape[-1] // cfg.head_split_bwd
    carry = (jnp.zeros((bk, d), jnp.float32), jnp.zeros((bk, d), jnp.float32))
    # Causal: query blocks wholly before this key block see none of it, nor do those wholly past
    # a window; those straddling the diagonal or the window's edge need the mask; the rest see
    # the whole key block.
    dk, dv = walk(*q_block_range(cfg, j, bq, bk), body, carry, *query_walk(cfg))
    return dk * cfg.scale, dv


def _dkdv_kernel(*refs: Any, cfg: KernelConfig) -> None:
    dk_ref, dv_ref = refs[8:]
    dk, dv = dkdv_sums(refs[:8], cfg)
    dk_ref[...] = dk.astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def dq_sums(refs: Refs, cfg: KernelConfig) -> Array:
    """One dQ program's float32 sum (scaled) over the key blocks its query block meets: the
    ``[block_q, head_dim / n]`` tile its caller stores (as an array of its own, or into the
    query slot of one stacked gradient)."""
    q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qid_ref, kid_ref = refs
    bq, bk = cfg.dq_blocks()
    i, cols = _split_program(cfg, q_ref.shape[-1])
    q = [q_ref[...]] if cols is None else [q_ref[:, c] for c in cols]
    do = [do_ref[...]] if cols is None else [do_ref[:, c] for c in cols]
    lse = lse_ref[...]
    delta = delta_ref[...]
    q_pos = i * bq + jnp.arange(bq)
    q_ids = None if qid_ref is None else qid_ref[...]

    def body(j: Array, dq: Array, edge: bool) -> Array:
        ks = pl.ds(j * bk, bk)
        k = [k_ref[ks, :]] if cols is None else [k_ref[ks, c] for c in cols]
        kv_ids = None if kid_ref is None else kid_ref[ks]
        k_pos = j * bk + jnp.arange(bk)
        _, p_ds = _probs(cfg, _dot_parts(q, k), lse, q_pos, k_pos, q_ids, kv_ids, edge)
        v = [v_ref[ks, :]] if cols is None else [v_ref[ks, c] for c in cols]
        ds = p_ds * (_dot_parts(do, v) - delta[:, None])
        return dq + dot_nn(ds.astype(k[0].dtype), k[0])

    dq = jnp.zeros((bq, q_ref.shape[-1] // cfg.head_split_bwd), jnp.float32)
    dq = walk(*kv_block_range(cfg, i, bq, bk), body, dq, *key_walk(cfg))
    return dq * cfg.scale


def _dq_kernel(*refs: Any, cfg: KernelConfig) -> None:
    dq_ref = refs[8]
    dq_ref[...] = dq_sums(refs[:8], cfg).astype(dq_ref.dtype)


def _delta(out: Array, d_out: Array) -> Array:
    """``δ = rowsum(dO ∘ O)`` ``[b, h, s_q]`` in float32, both backward kernels' input."""
    return jnp.einsum("bqhd,bqhd->bhq", out.astype(jnp.float32), d_out.astype(jnp.float32))


def _grid_maps(n: int) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """(block index, output column slice) of grid axis 0 under a head split of ``n`` programs
    per block (``n = 1``: the axis is the block index, one slice)."""
    if n == 1:
        return (lambda x: x), (lambda x: 0)
    return (lambda x: x // n), (lambda x: x % n)


def _whole(x: Any) -> Any:
    """Row block of an operand every program reads whole: the first (and only) one."""
    return 0


def _grid_head(hi: Any) -> Any:
    """Head of an operand laid out as the grid's heads (dO, separate queries)."""
    return hi


def _in_specs(
    d: int,
    q_rows: int,
    q_at: Callable[[Any], Any],
    k_rows: int,
    k_at: Callable[[Any], Any],
    heads: tuple[Callable[[Any], Any], ...],
    q_ids: Array | None,
    kv_ids: Array | None,
) -> list[pl.BlockSpec | None]:
    """Block specs of the `Refs` both backward kernels read, separate or stacked, on a grid
    (block × column slices, batch row, head): ``q_rows`` query rows (dO, lse and δ likewise) at
    row block ``q_at(grid axis 0)``, ``k_rows`` key and value rows at ``k_at(...)`` (the walked
    side whole: `_whole`), of the ``heads`` of q, k and v (dO's are the grid's)."""
    q_head, k_head, v_head = heads

    def tile(rows: int, at: Callable[[Any], Any], head: Callable[[Any], Any]) -> pl.BlockSpec:
        return pl.BlockSpec((None, rows, None, d), lambda x, bi, hi: (bi, at(x), head(hi), 0))

    def ids(x: Array | None, rows: int, at: Callable[[Any], Any]) -> pl.BlockSpec | None:
        return None if x is None else pl.BlockSpec((None, rows), lambda y, bi, hi: (bi, at(y)))

    row = pl.BlockSpec((None, None, q_rows), lambda x, bi, hi: (bi, hi, q_at(x)))
    return [
        tile(q_rows, q_at, q_head),
        tile(k_rows, k_at, k_head),
        tile(k_rows, k_at, v_head),
        tile(q_rows, q_at, _grid_head),
        row,
        row,
        ids(q_ids, q_rows, q_at),
        ids(kv_ids, k_rows, k_at),
    ]


def _backward_call(
    kernel: Callable[..., None],
    name: str,
    cfg: KernelConfig,
    grid: tuple[int, int, int],
    in_specs: list[pl.BlockSpec | None],
    out_specs: Any,
    out_shape: Any,
    **params: Any,
) -> Any:
    """One backward kernel's ``pallas_call`` with ``cfg`` and its backward launch parameters
    (``params``: further ``pallas_call`` arguments)."""
    return pl.pallas_call(
        functools.partial(kernel, cfg=cfg),
        grid=grid,
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=cfg.compiler_params(backward=True),
        interpret=cfg.interpret,
        name=name,
        **params,
    )


def flash_backward(
    q: Array,
    k: Array,
    v: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    out: Array,
    lse: Array,
    d_out: Array,
    cfg: KernelConfig,
) -> tuple[Array, Array, Array]:
    """Gradients (dq, dk, dv) of padded flash attention; dk/dv have k's shape and dtype."""
    b, s_q, h, d = q.shape
    s_k, h_kv = k.shape[1], k.shape[2]
    g = cfg.groups
    delta, d_out = _delta(out, d_out), d_out.astype(q.dtype)
    args = (q, k, v, d_out, lse, delta, q_ids, kv_ids)
    n = cfg.head_split_bwd
    blk, col = _grid_maps(n)

    def kv_head(hi: Any) -> Any:  # the group's key and value head
        return hi // g

    heads = (_grid_head, kv_head, kv_head)

    # dK, dV: grid over key blocks (× column slices); queries, dO, lse, delta whole.
    bk = cfg.block_k_bwd
    out_kv = pl.BlockSpec((None, bk, None, d // n), lambda j, bi, hi: (bi, blk(j), hi, col(j)))
    kv_dtype = k.dtype if g == 1 else jnp.float32
    dk, dv = _backward_call(
        _dkdv_kernel,
        "tjx_flash_bwd_dkdv",
        cfg,
        (s_k // bk * n, b, h),
        _in_specs(d, s_q, _whole, bk, blk, heads, q_ids, kv_ids),
        [out_kv, out_kv],
        [out_struct((b, s_k, h, d), kv_dtype, *args)] * 2,
    )(*args)
    if g > 1:
        dk = dk.reshape(b, s_k, h_kv, g, d).sum(axis=3).astype(k.dtype)
        dv = dv.reshape(b, s_k, h_kv, g, d).sum(axis=3).astype(v.dtype)

    # dQ: grid over query blocks (× column slices); keys and values whole.
    bq, bk = cfg.dq_blocks()
    out_q = pl.BlockSpec((None, bq, None, d // n), lambda i, bi, hi: (bi, blk(i), hi, col(i)))
    dq = _backward_call(
        _dq_kernel,
        "tjx_flash_bwd_dq",
        cfg,
        (s_q // bq * n, b, h),
        _in_specs(d, bq, blk, s_k, _whole, heads, q_ids, kv_ids),
        out_q,
        out_struct(q.shape, q.dtype, *args),
    )(*args)
    return dq, dk, dv


def _with_biases(refs: tuple[Any, ...]) -> Refs:
    """The stacked backward's refs ``q, k, v, dO, lse, δ, ids, ids, q/k/v biases`` as the
    separate-array kernels take them: q, k, v reading their biases (none: unchanged)."""
    q, k, v, do, lse, delta, qid, kid, qb, kb, vb = refs[:11]
    return biased(q, qb), biased(k, kb), biased(v, vb), do, lse, delta, qid, kid


def _dkdv_qkv_kernel(*refs: Any, cfg: KernelConfig) -> None:
    """dK/dV into the key and value slots of the stacked gradient's ``[block_k, 3, d / n]``
    block (its query slot is the dQ kernel's, :func:`flash_backward_qkv`)."""
    dk, dv = dkdv_sums(_with_biases(refs), cfg)
    out = refs[11]
    out[:, K_SLOT, :] = dk.astype(out.dtype)
    out[:, V_SLOT, :] = dv.astype(out.dtype)


def _dq_qkv_kernel(*refs: Any, cfg: KernelConfig) -> None:
    """dQ into the query slot of the stacked gradient the dK/dV kernel made (``refs[11]``, the
    same buffer as the output ``refs[12]``; never read)."""
    out = refs[12]
    out[...] = dq_sums(_with_biases(refs), cfg).astype(out.dtype)


def flash_backward_qkv(
    qkv: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    q_bias: Array | None,
    k_bias: Array | None,
    v_bias: Array | None,
    out: Array,
    lse: Array,
    d_out: Array,
    cfg: KernelConfig,
) -> Array:
    """The gradient ``d_qkv`` ``[b, s, 3, h, d]`` of padded stacked flash attention
    (:func:`~tjx.kernels.flash_fwd.flash_forward_qkv`, its biases added as q, k, v are read
    again), written by the two backward kernels into ONE buffer: the dK/dV kernel makes it and
    fills the key and value slots, the dQ kernel takes it as an input aliased to its output
    (``input_output_aliases``) and fills the query slot. Nothing is stacked or concatenated
    after them; the caller's projection reads the buffer as it is (``[b·s, 3·h·d]``)."""
    b, s, _, h, d = qkv.shape
    biases = (q_bias, k_bias, v_bias)
    flat, head = slot_view(qkv)  # the tiles are read through the [b, s, 3·h, d] view
    delta, d_out = _delta(out, d_out), d_out.astype(qkv.dtype)
    args = (flat, flat, flat, d_out, lse, delta, q_ids, kv_ids, *biases)
    n = cfg.head_split_bwd
    blk, col = _grid_maps(n)
    heads = (
        functools.partial(head, Q_SLOT),
        functools.partial(head, K_SLOT),
        functools.partial(head, V_SLOT),
    )
    bias = bias_specs(biases, d, lambda x, bi, hi: hi)

    # dK, dV: grid over key blocks (× column slices); queries, dO, lse, delta whole.
    bk = cfg.block_k_bwd
    # All three slots of the key block's rows (the kernel stores the key and value ones).
    out_kv = pl.BlockSpec(
        (None, bk, 3, None, d // n), lambda j, bi, hi: (bi, blk(j), 0, hi, col(j))
    )
    d_qkv = _backward_call(
        _dkdv_qkv_kernel,
        "tjx_flash_qkv_bwd_dkdv",
        cfg,
        (s // bk * n, b, h),
        [*_in_specs(d, s, _whole, bk, blk, heads, q_ids, kv_ids), *bias],
        out_kv,
        out_struct(qkv.shape, qkv.dtype, *args),
    )(*args)

    # dQ: grid over query blocks (× column slices); keys and values whole.
    bq, bk = cfg.dq_blocks()
    out_q = pl.BlockSpec(
        (None, bq, None, None, d // n), lambda i, bi, hi: (bi, blk(i), Q_SLOT, hi, col(i))
    )
    alias = len(jax.tree.leaves(args))  # d_qkv's place among the call's (flat) operands
    return _backward_call(  # type: ignore[no-any-return]
        _dq_qkv_kernel,
        "tjx_flash_qkv_bwd_dq",
        cfg,
        (s // bq * n, b, h),
        # The aliased buffer last: never read (its block is the output's).
        [*_in_specs(d, bq, blk, s, _whole, heads, q_ids, kv_ids), *bias, out_q],
        out_q,
        out_struct(qkv.shape, qkv.dtype, *args, d_qkv),
        input_output_aliases={alias: 0},
    )(*args, d_qkv)
