"""Forward Pallas kernel of flash attention (FlashAttention-2 style online softmax).

One program handles one ``block_q`` tile of queries of one (batch, head): it keeps the tile, a
float32 accumulator ``[block_q, head_dim]``, the running row maximum ``m`` and the running
denominator ``l``, and walks over ``block_k`` tiles of keys/values. Logits are kept in base 2
(``s · log2(e)``) so the exponentials are ``exp2``. With ``causal`` the walk stops at the diagonal
(blocks wholly above it are never loaded), and with a sliding ``window`` it starts at the first
key block the window reaches (blocks wholly outside it are never loaded either). It writes the
normalised output and the per-row log-sum-exp (base 2) that the backward pass needs; an empty row
(every key masked) gets output 0 and log-sum-exp ``+inf`` so that the backward pass recomputes
probabilities of exactly 0. With a ``softcap`` the scaled logits are soft-capped
(``cap · tanh(x / cap)``, :mod:`tjx.kernels.softcap`) before the mask, as the reference does.
:func:`flash_forward_qkv` runs the same kernel on one stacked ``qkv``
(:mod:`tjx.kernels.flash_qkv`), optionally adding the projection's biases as it reads the tiles
(:class:`BiasedRef`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

Array = jax.Array
LOG2E = math.log2(math.e)


@dataclasses.dataclass(frozen=True)
class KernelConfig:
    """Static description of one padded flash-attention call (hashable: a custom_vjp nondiff arg).

    ``q_len``/``kv_len`` are the padded lengths (multiples of the block sizes); ``kv_valid`` is the
    true key length, masked when it differs from ``kv_len`` and no segment ids carry the padding.
    ``window``: the sliding window (query ``i`` sees keys ``i - window < j``, and ``j <= i`` when
    causal, ``j < i + window`` when not); None: no window.
    """

    scale: float
    causal: bool
    has_segments: bool
    q_len: int
    kv_len: int
    kv_valid: int
    groups: int
    block_q: int
    block_k: int
    block_q_bwd: int
    block_k_bwd: int
    num_warps: int
    num_warps_bwd: int
    num_stages: int
    num_stages_bwd: int
    interpret: bool
    head_split_bwd: int = 1  #: column slices of dK/dV and dQ, one program each (see flash_bwd)
    softcap: float | None = None  #: logits soft-capped to (-softcap, softcap) (Gemma 2); None: not
    window: int | None = None
    #: The stacked kernels (`flash_forward_qkv`): a bias per slot added as q, k, v are read.
    qkv_bias: bool = False

    @property
    def reach(self) -> int | None:
        """How far past a query a key may lie and be seen: 0 causal, ``window - 1`` for a
        bidirectional window, None (any distance) otherwise."""
        if self.causal:
            return 0
        return None if self.window is None else self.window - 1

    def dq_blocks(self) -> tuple[int, int]:
        """(query, key) block rows of the dQ kernel: with a head split each backward kernel's own
        block (dQ's queries) has ``block_k_bwd`` rows and the walked one ``block_q_bwd``."""
        if self.head_split_bwd > 1:
            return self.block_k_bwd, self.block_q_bwd
        return self.block_q_bwd, self.block_k_bwd

    def compiler_params(self, backward: bool = False) -> Any:
        """Triton launch parameters of the forward or backward kernels (unused when interpreted)."""
        warps = self.num_warps_bwd if backward else self.num_warps
        stages = self.num_stages_bwd if backward else self.num_stages
        return plgpu.CompilerParams(num_warps=warps, num_stages=stages)


def out_struct(shape: tuple[int, ...], dtype: Any, *inputs: Array | None) -> jax.ShapeDtypeStruct:
    """A ``pallas_call`` output type varying over the same ``shard_map`` axes as its inputs.

    Inside ``jax.shard_map(check_vma=True)`` a ``pallas_call`` must be told over which manual mesh
    axes each output varies; an output depends on every input, so it varies over their union.
    Outside ``shard_map`` that set is empty and the plain struct is returned.
    """
    mats = [jax.typeof(x).mat for x in inputs if x is not None]
    varying = frozenset().union(*(m.varying for m in mats))
    if not varying:
        return jax.ShapeDtypeStruct(shape, dtype)
    return jax.ShapeDtypeStruct(shape, dtype, manual_axis_type=mats[0].update(varying=varying))


def block_mask(
    cfg: KernelConfig,
    q_pos: Array,
    k_pos: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    edge: bool,
    transposed: bool = False,
) -> Array | None:
    """Boolean [bq, bk] mask (True = attend) for one tile, or None when the tile is all visible.

    ``edge`` is False for tiles the caller knows to lie wholly inside the causal diagonal and the
    window, so those skip the position comparisons. ``transposed``: the [bk, bq] mask of the
    transposed tile.
    """
    mask: Array | None = None

    def conj(a: Array | None, b: Array) -> Array:
        return b if a is None else jnp.logical_and(a, b)

    def side(x: Array, key: bool) -> Array:  # a query- or key-side vector, against the tile
        return x[:, None] if key == transposed else x[None, :]

    shape = (k_pos.size, q_pos.size) if transposed else (q_pos.size, k_pos.size)
    if edge:
        rows, cols = side(q_pos, False), side(k_pos, True)
        if cfg.causal:
            mask = conj(mask, rows >= cols)
        if cfg.window is not None:
            mask = conj(mask, rows - cols < cfg.window)
            if not cfg.causal:
                mask = conj(mask, cols - rows < cfg.window)
    if not cfg.has_segments and cfg.kv_valid != cfg.kv_len:
        mask = conj(mask, jnp.broadcast_to(side(k_pos, True) < cfg.kv_valid, shape))
    if q_ids is not None and kv_ids is not None:
        same = side(q_ids, False) == side(kv_ids, True)
        mask = conj(mask, jnp.logical_and(same, side(kv_ids, True) != 0))
    return mask


def _clamp(x: Array, lo: Array, hi: Array) -> Array:
    return lax.max(lo, lax.min(x, hi))


def kv_block_range(
    cfg: KernelConfig, q_block: Array, block_q: int, block_k: int
) -> tuple[Array, Array, Array, Array]:
    """(lo, a, b, hi): the key blocks ``[lo, hi)`` a query block visits, of which ``[a, b)``
    need no position mask.

    Key blocks before ``lo`` lie wholly before every query's window, those from ``hi`` on wholly
    above the causal diagonal (or past a bidirectional window): they are skipped. Blocks in
    ``[lo, a)`` straddle the window's lower edge and ``[b, hi)`` the diagonal (or the window's
    upper edge); both take the mask. Without causal or window every block is visited unmasked.
    """
    n_kv = jnp.int32(cfg.kv_len // block_k)
    zero = jnp.int32(0)
    first_q = q_block * block_q
    last_q = first_q + block_q - 1
    if cfg.window is None:
        lo = a = zero
    else:  # keys from first_q - window + 1 on; whole blocks from last_q - window + 1 on
        lo = _clamp(lax.div(first_q - cfg.window + 1, block_k), zero, n_kv)
        a = _clamp(lax.div(last_q - cfg.window + block_k, block_k), lo, n_kv)
    reach = cfg.reach
    if reach is None:
        return lo, a, n_kv, n_kv
    hi = _clamp(lax.div(last_q + reach + block_k, block_k), a, n_kv)
    b = _clamp(lax.div(first_q + reach + 1, block_k), a, hi)
    return lo, a, b, hi


def q_block_range(
    cfg: KernelConfig, kv_block: Array, block_q: int, block_k: int
) -> tuple[Array, Array, Array, Array]:
    """(lo, a, b, hi): the query blocks ``[lo, hi)`` a key block meets, of which ``[a, b)`` need
    no position mask (the transpose of :func:`kv_block_range`).

    Query blocks before ``lo`` lie wholly above the causal diagonal (or before a bidirectional
    window), those from ``hi`` on wholly past the window: skipped. ``[lo, a)`` straddle the
    diagonal (or the window's lower edge as seen from the keys), ``[b, hi)`` the window's edge.
    """
    n_q = jnp.int32(cfg.q_len // block_q)
    zero = jnp.int32(0)
    first_k = kv_block * block_k
    last_k = first_k + block_k - 1
    reach = cfg.reach
    if reach is None:
        lo = a = zero
    else:  # queries from first_k - reach on; whole blocks from last_k - reach on
        lo = _clamp(lax.div(first_k - reach, block_q), zero, n_q)
        a = _clamp(lax.div(last_k - reach + block_q - 1, block_q), lo, n_q)
    if cfg.window is None:
        return lo, a, n_q, n_q
    hi = _clamp(lax.div(last_k + cfg.window - 1 + block_q, block_q), a, n_q)
    b = _clamp(lax.div(first_k + cfg.window, block_q), a, hi)
    return lo, a, b, hi


def walk(
    lo: Array, a: Array, b: Array, hi: Array, body: Any, carry: Any, low: bool, high: bool
) -> Any:
    """Run ``body(j, carry, edge)`` over blocks ``[lo, hi)``: masked on ``[lo, a)`` (when the
    walk has a ``low`` edge) and ``[b, hi)`` (a ``high`` one), unmasked on ``[a, b)`` (see the
    ranges above; a walk without an edge has it empty and gets no loop for it)."""
    if low and high:  # both edges in one masked loop: one copy of the masked body
        carry = lax.fori_loop(a, b, functools.partial(body, edge=False), carry)
        n_low = a - lo

        def edge(t: Array, c: Any) -> Any:
            return body(jnp.where(t < n_low, lo + t, b + t - n_low), c, edge=True)

        return lax.fori_loop(0, n_low + hi - b, edge, carry)
    if low:
        carry = lax.fori_loop(lo, a, functools.partial(body, edge=True), carry)
    carry = lax.fori_loop(a, b, functools.partial(body, edge=False), carry)
    if high:
        carry = lax.fori_loop(b, hi, functools.partial(body, edge=True), carry)
    return carry


def key_walk(cfg: KernelConfig) -> tuple[bool, bool]:
    """(low, high) edges of a walk over key blocks: the window's start, the diagonal (or a
    bidirectional window's end)."""
    return cfg.window is not None, cfg.reach is not None


def query_walk(cfg: KernelConfig) -> tuple[bool, bool]:
    """(low, high) edges of a walk over query blocks: the diagonal, the window's end."""
    return cfg.reach is not None, cfg.window is not None


# No precision is passed to the products: Triton runs float32 inputs as TF32 (10 mantissa bits,
# relative error ~1e-3), as XLA's own float32 matmuls on NVIDIA GPUs do. IEEE products
# (lax.Precision.HIGHEST) lower to FMA loops that spilled 66 KB per thread (fp32 head_dim-64
# forward on sm_90, the kernels README), so fp32 kernels are TF32 and GPU tolerances say so.
def dot_nt(a: Array, b: Array) -> Array:
    """a @ b.T with float32 accumulation (a [m, d], b [n, d])."""
    return lax.dot_general(a, b, (((1,), (1,)), ((), ())), preferred_element_type=jnp.float32)


def dot_tn(a: Array, b: Array) -> Array:
    """a.T @ b with float32 accumulation (a [m, n], b [m, d])."""
    return lax.dot_general(a, b, (((0,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def dot_nn(a: Array, b: Array) -> Array:
    """a @ b with float32 accumulation."""
    return lax.dot_general(a, b, (((1,), (0,)), ((), ())), preferred_element_type=jnp.float32)


def scores(cfg: KernelConfig, raw: Array) -> tuple[Array, Array | None]:
    """Base-2 logits of a tile's raw ``q·kᵀ`` products (scaled, then soft-capped when
    ``cfg.softcap`` is set) and ``t = tanh(scaled / cap)`` for the backward (None: no cap)."""
    if cfg.softcap is None:
        return raw * (cfg.scale * LOG2E), None
    t = jnp.tanh(raw * (cfg.scale / cfg.softcap))
    return t * (cfg.softcap * LOG2E), t


def _fwd_kernel(
    q_ref: Any,
    k_ref: Any,
    v_ref: Any,
    qid_ref: Any,
    kid_ref: Any,
    o_ref: Any,
    lse_ref: Any,
    *,
    cfg: KernelConfig,
) -> None:
    bq, bk = cfg.block_q, cfg.block_k
    i = pl.program_id(0)
    q = q_ref[...]
    head_dim = q.shape[-1]
    q_pos = i * bq + jnp.arange(bq)
    q_ids = None if qid_ref is None else qid_ref[...]

    def body(j: Array, carry: tuple[Array, Array, Array], edge: bool) -> tuple[Array, Array, Array]:
        acc, m_prev, l_prev = carry
        ks = pl.ds(j * bk, bk)
        s, _ = scores(cfg, dot_nt(q, k_ref[ks, :]))
        kv_ids = None if kid_ref is None else kid_ref[ks]
        mask = block_mask(cfg, q_pos, j * bk + jnp.arange(bk), q_ids, kv_ids, edge)
        if mask is not None:
            s = jnp.where(mask, s, -jnp.inf)
        m_next = jnp.maximum(m_prev, jnp.max(s, axis=-1))
        # Rows with nothing visible yet keep m = -inf; shift them by 0 so exp2 gives 0, not NaN.
        m_safe = jnp.where(m_next == -jnp.inf, 0.0, m_next)
        alpha = jnp.exp2(m_prev - m_safe)
        p = jnp.exp2(s - m_safe[:, None])
        l_next = alpha * l_prev + jnp.sum(p, axis=-1)
        v = v_ref[ks, :]
        acc = alpha[:, None] * acc + dot_nn(p.astype(v.dtype), v)
        return acc, m_next, l_next

    carry = (
        jnp.zeros((bq, head_dim), jnp.float32),
        jnp.full((bq,), -jnp.inf, jnp.float32),
        jnp.zeros((bq,), jnp.float32),
    )
    acc, m, denom = walk(*kv_block_range(cfg, i, bq, bk), body, carry, *key_walk(cfg))
    empty = denom == 0.0
    denom = jnp.where(empty, 1.0, denom)
    o_ref[...] = (acc / denom[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, jnp.inf, m + jnp.log2(denom))


def _forward_call(
    kernel: Callable[..., None],
    name: str,
    cfg: KernelConfig,
    in_specs: list[pl.BlockSpec | None],
    operands: tuple[Array | None, ...],
    sources: tuple[Array | None, ...],
    out_like: Any,
) -> tuple[Array, Array]:
    """One launch of a forward kernel over the grid (query block, batch row, head): ``(out``
    of ``out_like``'s shape ``[b, s_q, h, d]`` and dtype, ``lse2 [b, h, s_q])``; ``sources``
    are the arrays the call reads (for the results' varying axes, `out_struct`)."""
    b, s_q, h, d = out_like.shape
    bq = cfg.block_q
    out_specs = [
        pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, hi, 0)),
        pl.BlockSpec((None, None, bq), lambda i, bi, hi: (bi, hi, i)),
    ]
    out_shape = [
        out_struct(out_like.shape, out_like.dtype, *sources),
        out_struct((b, h, s_q), jnp.float32, *sources),
    ]
    out, lse = pl.pallas_call(
        functools.partial(kernel, cfg=cfg),
        grid=(s_q // bq, b, h),
        in_specs=in_specs,
        out_specs=out_specs,
        out_shape=out_shape,
        compiler_params=cfg.compiler_params(),
        interpret=cfg.interpret,
        name=name,
    )(*operands)
    return out, lse


def flash_forward(
    q: Array,
    k: Array,
    v: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    cfg: KernelConfig,
) -> tuple[Array, Array]:
    """Run the forward kernel on padded inputs; returns (out [b, s_q, h, d], lse2 [b, h, s_q])."""
    d, s_k = q.shape[3], k.shape[1]
    bq, g = cfg.block_q, cfg.groups
    in_specs: list[pl.BlockSpec | None] = [
        pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, hi, 0)),
        pl.BlockSpec((None, s_k, None, d), lambda i, bi, hi: (bi, 0, hi // g, 0)),
        pl.BlockSpec((None, s_k, None, d), lambda i, bi, hi: (bi, 0, hi // g, 0)),
        None if q_ids is None else pl.BlockSpec((None, bq), lambda i, bi, hi: (bi, i)),
        None if kv_ids is None else pl.BlockSpec((None, s_k), lambda i, bi, hi: (bi, 0)),
    ]
    operands = (q, k, v, q_ids, kv_ids)
    return _forward_call(_fwd_kernel, "tjx_flash_fwd", cfg, in_specs, operands, operands, q)


#: Slots of a stacked ``qkv`` ``[b, s, 3, h, d]`` (:mod:`tjx.kernels.flash_qkv`).
Q_SLOT, K_SLOT, V_SLOT = 0, 1, 2


class BiasedRef:
    """A query, key or value block ref whose loads add the slot's bias row: what a kernel body
    written for plain refs (``ref[...]``, ``ref[rows, cols]``, ``ref.shape``) reads instead of
    the projection's biased output, which is then never written. The sum is taken in float32
    and rounded to the block's dtype once, as XLA's bias add of the projection's output is."""

    def __init__(self, ref: Any, bias_ref: Any) -> None:
        self.ref, self.bias_ref = ref, bias_ref
        self.shape = ref.shape

    def __getitem__(self, index: Any) -> Array:
        x = self.ref[index]
        cols = index[-1] if isinstance(index, tuple) else slice(None)
        bias = self.bias_ref[cols]
        return (x.astype(jnp.float32) + bias.astype(jnp.float32)).astype(x.dtype)


def biased(ref: Any, bias_ref: Any) -> Any:
    """``ref`` reading ``bias_ref``'s row added (:class:`BiasedRef`), or ``ref`` itself when
    there is no bias."""
    return ref if bias_ref is None else BiasedRef(ref, bias_ref)


def bias_specs(biases: tuple[Array | None, ...], d: int, head: Any) -> list[pl.BlockSpec | None]:
    """Block specs of the slots' biases ``[h, d]``: one head's row (``head(*grid_ids)``)."""
    return [
        None if x is None else pl.BlockSpec((None, d), lambda *ids: (head(*ids), 0)) for x in biases
    ]


def _fwd_qkv_kernel(*refs: Any, cfg: KernelConfig) -> None:
    q_ref, k_ref, v_ref, qid_ref, kid_ref, qb_ref, kb_ref, vb_ref, o_ref, lse_ref = refs
    _fwd_kernel(
        biased(q_ref, qb_ref), biased(k_ref, kb_ref), biased(v_ref, vb_ref),
        qid_ref, kid_ref, o_ref, lse_ref, cfg=cfg,
    )  # fmt: skip


def slot_view(qkv: Array) -> tuple[Array, Any]:
    """``qkv`` ``[b, s, 3, h, d]`` as ``[b, s, 3·h, d]`` (a reshape XLA makes a bitcast) and
    ``head(slot, hi)``, the index of a slot's head on the merged axis. The kernels read their
    tiles through this view: blocks of the separate kernels' rank and offsets, where a fifth
    dimension cost the backward's dK/dV kernel, already at the 255-register ceiling on sm_90, a
    spill (16-bit head_dim 64, triton 3.9's ptxas)."""
    b, s, _, h, d = qkv.shape

    def head(slot: int, hi: Any) -> Any:
        return slot * h + hi

    return qkv.reshape(b, s, 3 * h, d), head


def flash_forward_qkv(
    qkv: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    q_bias: Array | None,
    k_bias: Array | None,
    v_bias: Array | None,
    cfg: KernelConfig,
) -> tuple[Array, Array]:
    """The forward kernel on one padded stacked ``qkv`` ``[b, s, 3, h, d]`` (self-attention,
    as many query as key/value heads): each program reads its query tile from slot 0 and the
    keys and values from slots 1 and 2 through its block specs, in place (no slice of ``qkv``
    is written), adding each slot's bias ``[h, d]`` (all three or none) as it reads. Returns
    (out [b, s, h, d], lse2 [b, h, s]), as :func:`flash_forward`."""
    b, s, _, h, d = qkv.shape
    bq = cfg.block_q
    biases = (q_bias, k_bias, v_bias)
    flat, head = slot_view(qkv)

    def whole(slot: int) -> pl.BlockSpec:  # one head's keys or values, every row
        return pl.BlockSpec((None, s, None, d), lambda i, bi, hi: (bi, 0, head(slot, hi), 0))

    in_specs: list[pl.BlockSpec | None] = [
        pl.BlockSpec((None, bq, None, d), lambda i, bi, hi: (bi, i, head(Q_SLOT, hi), 0)),
        whole(K_SLOT),
        whole(V_SLOT),
        None if q_ids is None else pl.BlockSpec((None, bq), lambda i, bi, hi: (bi, i)),
        None if kv_ids is None else pl.BlockSpec((None, s), lambda i, bi, hi: (bi, 0)),
        *bias_specs(biases, d, lambda i, bi, hi: hi),
    ]
    # The one array is three operands of the call (query, key, value tiles): XLA passes the
    # same buffer three times, and the kernel body is the separate-array kernel's.
    operands = (flat, flat, flat, q_ids, kv_ids, *biases)
    sources = (qkv, q_ids, kv_ids, *biases)
    out_like = jax.ShapeDtypeStruct((b, s, h, d), qkv.dtype)
    return _forward_call(
        _fwd_qkv_kernel, "tjx_flash_qkv_fwd", cfg, in_specs, operands, sources, out_like
    )
