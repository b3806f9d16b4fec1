"""The gated delta rule's sequential part as two Pallas kernels (Triton on a GPU).

`tjx.kernels.gated_delta` splits the chunked rule into what is parallel over chunks (the WY
inverse, ``W``, ``Ũ``, the masked ``Q Kᵀ ⊙ M``: XLA's batched products) and what is sequential
across chunks. This module is the sequential part, as flash-linear-attention does it
(``chunk_gated_delta_rule_fwd_h`` and ``chunk_bwd_dh``; the algorithm, not its code): one program
per (batch row, head, ``B_v`` columns of the state) walks the chunks keeping its slice of the
state ``S`` ``[d_k, B_v]`` on chip (the state's columns are independent: column ``v`` of every
update reads only column ``v``), so the state never goes to memory between chunks except as the
one copy per chunk the backward needs.

``tjx_gdelta_fwd_h``, per chunk ``c`` (``S`` the state before it, ``γ`` its decay to the end):

    S_c ← S  (stored),   U = Ũ - W S  (stored: the chunk's new values),   S ← γ S + Keᵀ U

with ``Ke = K ⊙ γ_C/γ``. XLA then forms every chunk's output at once,
``O = (diag(γ) Q) S_c + (Q Kᵀ ⊙ M) U``.

``tjx_gdelta_bwd_dh`` runs the same recurrence backwards for the state's cotangent. With ``dS``
the cotangent of the state after chunk ``c`` (the final state's cotangent after the last):

    dS_c ← dS  (stored),   dU = (Q Kᵀ ⊙ M)ᵀ dO + Ke dS  (stored),
    dS ← γ dS + (diag(γ) Q)ᵀ dO - Wᵀ dU

(``(Q Kᵀ ⊙ M)ᵀ dO`` is XLA's, batched, before the kernel). The rest of the core's gradient is
batched over chunks in XLA: ``dŨ = dU``, ``dW = -dU S_cᵀ``, ``d(diag(γ) Q) = dO S_cᵀ``,
``dKe = U dS_cᵀ``, ``dγ_C = Σ S_c ⊙ dS_c``, ``d(Q Kᵀ ⊙ M) = dO Uᵀ``; autodiff carries them
through the chunk set-up to ``q, k, v, g, β``.

Sizes: the chunk, ``d_k`` and ``d_v`` are zero-padded to powers of two ≥ 16 (Triton's dot takes
no dimension under 16): a padded row of ``W``, ``Ũ`` and ``Ke`` is zero, so its new value is zero
and it adds nothing to the state; padded state rows and columns stay zero. Products accumulate
in float32 (TF32 on a GPU for float32 operands, as XLA's own float32 products there), float64 in
the interpreter for float64 inputs; the per-chunk states are stored in that dtype.

Under a sharded ``jit`` both kernels partition over batch rows and heads (``custom_partitioning``,
as `tjx.kernels.partition` does for the flash kernels), and ``vmap`` folds into the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap
from jax.experimental import pallas as pl
from jax.experimental.custom_partitioning import (
    ArrayMapping,
    SdyShardingRule,
    custom_partitioning,
)
from jax.experimental.pallas import triton as plgpu
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.kernels.flash_fwd import out_struct
from tjx.kernels.partition import _batch_and_heads, _entry

Array = jax.Array

#: The kernels' ``pallas_call`` names (what a compiled program's custom calls say; `costs`).
FWD_KERNEL = "tjx_gdelta_fwd_h"
BWD_KERNEL = "tjx_gdelta_bwd_dh"
#: Columns of the state per program, at most (flash-linear-attention tunes between 32 and 64).
BLOCK_V = 64
#: Warps per program: at 4, ptxas spilled the backward's registers (104 B at C = 64, 2.9 KB at
#: C = 128, d_k = d_v = 128); at 8 neither kernel spills with the launches `launch` picks.
NUM_WARPS = 8
_MIN = 16  # Triton's dot takes no dimension under 16
#: The largest ``[C, d_k]`` tile (bytes) a program double-buffers (2 Triton pipeline stages) with
#: `BLOCK_V` columns; above it, 1 stage and half the columns. Checked for sm_90 (the abstract
#: H100's compile, jaxlib's Triton, refuses a launch that does not fit its 227 KiB of shared
#: memory; the PyPI triton 3.9 wheel's ptxas counts registers and spills,
#: ``benchmarks/triton_compile_check.py``'s method): C = 64, d_k = 128 float32 with 2 stages and 64
#: columns, 0 spills; C = 128 with 2 stages asked 240-272 KiB (refused), with 1 stage and 32
#: columns 0 spills. d_k = 256 still spills (96 B forward, 928 B backward at C = 64).
_TWO_STAGES = 64 * 128 * 4


def padded(n: int) -> int:
    """The power of two ≥ max(n, 16) a kernel dimension is padded to."""
    return max(_MIN, 1 << max(0, (n - 1).bit_length()))


def launch(c: int, dk: int, dv: int, itemsize: int) -> tuple[int, int]:
    """(state columns per program, Triton pipeline stages) for padded ``C``, ``d_k``, ``d_v``
    and the work dtype's item size (the shared-memory and register bounds above)."""
    small = c * dk * itemsize <= _TWO_STAGES
    return min(BLOCK_V if small else BLOCK_V // 2, dv), 2 if small else 1


def _dot(a: Array, b: Array, dims: tuple[int, int]) -> Array:
    """``a`` · ``b`` contracting ``dims`` (a's, b's), accumulated in the operands' work dtype."""
    acc = jnp.promote_types(a.dtype, jnp.float32)
    return lax.dot_general(a, b, (((dims[0],), (dims[1],)), ((), ())), preferred_element_type=acc)


def _fwd_h_kernel(
    w_ref: Any,
    u_ref: Any,
    ke_ref: Any,
    decay_ref: Any,
    s0_ref: Any,
    h_ref: Any,
    vnew_ref: Any,
    final_ref: Any,
    *,
    chunks: int,
    c: int,
    dk: int,
) -> None:
    def body(j: Array, s: Array) -> Array:
        rows, keys = pl.ds(j * c, c), pl.ds(j * dk, dk)
        h_ref[keys, :] = s.astype(h_ref.dtype)
        u = u_ref[rows, :] - _dot(w_ref[rows, :], s, (1, 0))  # [c, B_v]
        vnew_ref[rows, :] = u.astype(vnew_ref.dtype)
        # γ_C per state row (a [d_k] vector load, not a scalar one: the same value in each row)
        return decay_ref[keys][:, None] * s + _dot(ke_ref[rows, :], u, (0, 0))

    final_ref[...] = lax.fori_loop(0, chunks, body, s0_ref[...]).astype(final_ref.dtype)


def _bwd_dh_kernel(
    qd_ref: Any,
    w_ref: Any,
    ke_ref: Any,
    do_ref: Any,
    dua_ref: Any,
    decay_ref: Any,
    dfinal_ref: Any,
    dh_ref: Any,
    du_ref: Any,
    ds0_ref: Any,
    *,
    chunks: int,
    c: int,
    dk: int,
) -> None:
    def body(t: Array, ds: Array) -> Array:
        j = chunks - 1 - t
        rows, keys = pl.ds(j * c, c), pl.ds(j * dk, dk)
        dh_ref[keys, :] = ds.astype(dh_ref.dtype)
        du = dua_ref[rows, :] + _dot(ke_ref[rows, :], ds, (1, 0))  # [c, B_v]
        du_ref[rows, :] = du.astype(du_ref.dtype)
        ds = decay_ref[keys][:, None] * ds + _dot(qd_ref[rows, :], do_ref[rows, :], (0, 0))
        return ds - _dot(w_ref[rows, :], du, (0, 0))

    ds0_ref[...] = lax.fori_loop(0, chunks, body, dfinal_ref[...]).astype(ds0_ref.dtype)


def _specs(chunks: int, c: int, dk: int, bv: int) -> dict[str, pl.BlockSpec]:
    """Block specs by operand kind over the grid (v block, batch row, head)."""
    return {
        "keys": pl.BlockSpec((None, None, chunks * c, dk), lambda vi, bi, hi: (bi, hi, 0, 0)),
        "values": pl.BlockSpec((None, None, chunks * c, bv), lambda vi, bi, hi: (bi, hi, 0, vi)),
        "states": pl.BlockSpec((None, None, chunks * dk, bv), lambda vi, bi, hi: (bi, hi, 0, vi)),
        "decay": pl.BlockSpec((None, None, chunks * dk), lambda vi, bi, hi: (bi, hi, 0)),
        "state": pl.BlockSpec((None, None, dk, bv), lambda vi, bi, hi: (bi, hi, 0, vi)),
    }


#: The forward kernel's operands by kind (``w, u_tilde, ke, decay, s0``).
_FWD_OPERANDS = ("keys", "values", "keys", "decay", "state")
#: The backward kernel's operands by kind (``qd, w, ke, d_out, du_local, decay, d_final``).
_BWD_OPERANDS = ("keys", "keys", "keys", "values", "values", "decay", "state")


def _params(stages: int) -> Any:
    return plgpu.CompilerParams(num_warps=NUM_WARPS, num_stages=stages)


def _chunk_scan(
    kernel: Callable[..., None],
    name: str,
    kinds: tuple[str, ...],
    ins: tuple[Array, ...],
    dv: int,
    interpret: bool,
) -> tuple[Array, Array, Array]:
    """One launch of a chunk-scan kernel over the grid (v block, batch row, head): operands
    ``ins`` of ``kinds`` (the first a ``"keys"`` one, the last the state in its dtype); the
    results by kind ``"states"``, ``"values"``, ``"state"``, in that dtype."""
    b, h, rows, dk = ins[0].shape
    chunks = ins[kinds.index("decay")].shape[-1] // dk
    c = rows // chunks
    dt = ins[-1].dtype
    bv, stages = launch(c, dk, dv, jnp.dtype(dt).itemsize)
    sp = _specs(chunks, c, dk, bv)
    return tuple(  # type: ignore[return-value]
        pl.pallas_call(
            functools.partial(kernel, chunks=chunks, c=c, dk=dk),
            grid=(dv // bv, b, h),
            in_specs=[sp[kind] for kind in kinds],
            out_specs=[sp["states"], sp["values"], sp["state"]],
            out_shape=[
                out_struct((b, h, chunks * dk, dv), dt, *ins),
                out_struct((b, h, rows, dv), dt, *ins),
                out_struct((b, h, dk, dv), dt, *ins),
            ],
            compiler_params=_params(stages),
            interpret=interpret,
            name=name,
        )(*ins)
    )


def forward_states(
    w: Array, u_tilde: Array, ke: Array, decay: Array, s0: Array, interpret: bool
) -> tuple[Array, Array, Array]:
    """``tjx_gdelta_fwd_h`` on padded, flattened chunks.

    Parameters
    ----------
    w, ke : Array
        ``[b, h, n·C, d_k]``.
    u_tilde : Array
        ``[b, h, n·C, d_v]``.
    decay : Array
        ``[b, h, n·d_k]``: each chunk's ``γ_C`` repeated over the state's rows.
    s0 : Array
        ``[b, h, d_k, d_v]``.

    Returns
    -------
    (Array, Array, Array)
        The state before each chunk ``[b, h, n·d_k, d_v]``, the new values ``U``
        ``[b, h, n·C, d_v]`` and the final state ``[b, h, d_k, d_v]``.
    """
    ins = (w, u_tilde, ke, decay, s0)
    return _chunk_scan(_fwd_h_kernel, FWD_KERNEL, _FWD_OPERANDS, ins, u_tilde.shape[-1], interpret)


def backward_states(
    qd: Array,
    w: Array,
    ke: Array,
    d_out: Array,
    du_local: Array,
    decay: Array,
    d_final: Array,
    interpret: bool,
) -> tuple[Array, Array, Array]:
    """``tjx_gdelta_bwd_dh`` on padded, flattened chunks (shapes as `forward_states`';
    ``d_out`` and ``du_local = (Q Kᵀ ⊙ M)ᵀ dO`` ``[b, h, n·C, d_v]``).

    Returns
    -------
    (Array, Array, Array)
        The cotangent of the state after each chunk ``[b, h, n·d_k, d_v]``, ``dU``
        ``[b, h, n·C, d_v]`` and the initial state's cotangent ``[b, h, d_k, d_v]``.
    """
    ins = (qd, w, ke, d_out, du_local, decay, d_final)
    return _chunk_scan(_bwd_dh_kernel, BWD_KERNEL, _BWD_OPERANDS, ins, d_out.shape[-1], interpret)


# --------------------------------------------------------------------------------------------
# SPMD partitioning and vmap, as the flash kernels' (`tjx.kernels.partition`): a ``pallas_call``
# is one opaque custom call that XLA's partitioner would gather whole onto every device. Every
# operand and result of both kernels is ``[b, h, ...]`` and (batch row, head) pairs are
# independent, so each device runs the unchanged kernel on its own rows and heads; the trailing
# dimensions (chunks, d_k, d_v) are replicated (gathered first if sharded).


def _kernel_sharding(mesh: Mesh, x: Any) -> NamedSharding:
    """``[b, h, ...]`` sharded as ``x``'s batch and head dimensions are, where the axes divide
    them (``x`` decides; the partitioner reshards the other operands to match)."""
    batch, heads = _batch_and_heads(mesh, x, 1, x.shape[1])
    return NamedSharding(mesh, PartitionSpec(_entry(batch), _entry(heads)))


def _sdy_rule(interpret: bool, mesh: Mesh, operands: Any, results: Any) -> SdyShardingRule:
    """Batch ``b`` and heads ``h`` shared by every operand and result; the rest replicated
    (factors of their own, listed in the order they appear: Shardy wants them sorted)."""
    del interpret, mesh
    rest: list[str] = []

    def mapping(x: Any) -> ArrayMapping:
        names = [f"r{len(rest) + i}" for i in range(len(x.shape) - 2)]
        rest.extend(names)
        return ArrayMapping("b", "h", *names)

    ops = tuple(mapping(x) for x in operands)
    outs = tuple(mapping(x) for x in results)
    return SdyShardingRule(ops, outs, need_replication_factors=tuple(rest))


def _infer(interpret: bool, mesh: Mesh, args: Any, result: Any) -> tuple[NamedSharding, ...]:
    del interpret
    return (_kernel_sharding(mesh, args[0]),) * len(result)


def _partition(kernel: Any) -> Any:
    def partition(interpret: bool, mesh: Mesh, args: Any, result: Any) -> Any:
        sharding = _kernel_sharding(mesh, args[0])
        local = functools.partial(kernel, interpret=interpret)
        # Every operand is forced to the kernel's layout (a cotangent often arrives replicated).
        return mesh, local, (sharding,) * len(result), (sharding,) * len(args)

    return partition


def _partitioned(kernel: Any, arity: int) -> Any:
    """``kernel`` (`forward_states` or `backward_states`, ``arity`` arguments, ``interpret``
    last) partitioned and vmappable."""
    cp = custom_partitioning(kernel, static_argnums=(arity - 1,))
    # decode_shardings=False: `_dim_entry` reads the partitioner's own shardings (sub-axes too).
    cp.def_partition(
        partition=_partition(kernel),
        infer_sharding_from_operands=_infer,
        sharding_rule=_sdy_rule,
        decode_shardings=False,
    )

    @functools.cache
    def batchable(interpret: bool) -> Any:
        @custom_vmap
        def call(*args: Array) -> tuple[Array, ...]:
            return tuple(cp(*args, interpret))

        @call.def_vmap
        def rule(
            axis_size: int, in_batched: list[bool], *args: Array
        ) -> tuple[tuple[Array, ...], tuple[bool, ...]]:
            # custom_partitioning has no batching rule: a vmapped axis folds into the batch.
            flat = [
                (x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))).reshape(
                    (-1, *x.shape[1 + bool(batched) :])
                )
                for x, batched in zip(args, in_batched, strict=True)
            ]
            outs = call(*flat)
            return tuple(o.reshape((axis_size, -1, *o.shape[1:])) for o in outs), (True,) * 3

        return call

    def run(*args: Any) -> tuple[Array, ...]:
        return tuple(batchable(bool(args[-1]))(*args[:-1]))

    return run


_forward_partitioned = _partitioned(forward_states, 6)
_backward_partitioned = _partitioned(backward_states, 8)


def _pad_to(x: Array, sizes: dict[int, int]) -> Array:
    """``x`` zero-padded at the end of each axis in ``sizes`` to that size."""
    pads = [(0, sizes.get(i, n) - n) for i, n in enumerate(x.shape)]
    return jnp.pad(x, pads) if any(p for _, p in pads) else x


class _Padded:
    """The core's chunked operands padded for the kernels and flattened to ``[b, h, n·C, d]``."""

    def __init__(self, c: int, dk: int, dv: int) -> None:
        self.c, self.dk, self.dv = c, dk, dv
        self.cp, self.dkp, self.dvp = padded(c), padded(dk), padded(dv)

    def rows(self, x: Array, d: int) -> Array:
        """``[b, h, n, C, d]`` → ``[b, h, n·C', d']``."""
        b, h, n = x.shape[:3]
        return _pad_to(x, {3: self.cp, 4: d}).reshape(b, h, n * self.cp, d)

    def keys(self, x: Array) -> Array:
        return self.rows(x, self.dkp)

    def values(self, x: Array) -> Array:
        return self.rows(x, self.dvp)

    def state(self, x: Array) -> Array:
        return _pad_to(x, {2: self.dkp, 3: self.dvp})

    def decay(self, last: Array) -> Array:
        """``[b, h, n]`` → ``[b, h, n·d_k']``."""
        b, h, n = last.shape
        return jnp.broadcast_to(last[..., None], (b, h, n, self.dkp)).reshape(b, h, n * self.dkp)

    def unrows(self, x: Array) -> Array:
        """``[b, h, n·C', d_v']`` → ``[b, h, n, C, d_v]``."""
        b, h = x.shape[:2]
        return x.reshape(b, h, -1, self.cp, self.dvp)[..., : self.c, : self.dv]

    def unstates(self, x: Array) -> Array:
        """``[b, h, n·d_k', d_v']`` → ``[b, h, n, d_k, d_v]``."""
        b, h = x.shape[:2]
        return x.reshape(b, h, -1, self.dkp, self.dvp)[..., : self.dk, : self.dv]

    def unstate(self, x: Array) -> Array:
        return x[..., : self.dk, : self.dv]


Core = tuple[Array, Array]


def _forward(
    u_tilde: Array, w: Array, qk: Array, qd: Array, ke: Array, last: Array, s0: Array,
    interpret: bool,
) -> tuple[Core, tuple[Array, ...]]:  # fmt: skip
    p = _Padded(qk.shape[-1], w.shape[-1], u_tilde.shape[-1])
    states, vnew, final = _forward_partitioned(
        p.keys(w), p.values(u_tilde), p.keys(ke), p.decay(last), p.state(s0), interpret
    )
    states, vnew = p.unstates(states), p.unrows(vnew)
    out = jnp.einsum("bhnck,bhnkv->bhncv", qd, states) + jnp.einsum("bhnij,bhnjv->bhniv", qk, vnew)
    return (out, p.unstate(final)), (w, qk, qd, ke, last, states, vnew)


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def pallas_core(
    u_tilde: Array, w: Array, qk: Array, qd: Array, ke: Array, last: Array, s0: Array,
    interpret: bool,
) -> Core:  # fmt: skip
    """The chunked rule's sequential part (`tjx.kernels.gated_delta`'s ``scan`` core) by the
    kernels: outputs ``[b, h, n, C, d_v]`` and the final state, from ``Ũ`` ``[b, h, n, C, d_v]``,
    ``W``, ``diag(γ) Q``, ``Ke`` ``[b, h, n, C, d_k]``, ``Q Kᵀ ⊙ M`` ``[b, h, n, C, C]``,
    ``γ_C`` ``[b, h, n]`` and the initial state ``[b, h, d_k, d_v]``."""
    return _forward(u_tilde, w, qk, qd, ke, last, s0, interpret)[0]


def _core_fwd(
    u_tilde: Array, w: Array, qk: Array, qd: Array, ke: Array, last: Array, s0: Array,
    interpret: bool,
) -> tuple[Core, tuple[Array, ...]]:  # fmt: skip
    return _forward(u_tilde, w, qk, qd, ke, last, s0, interpret)


def _core_bwd(interpret: bool, res: tuple[Array, ...], cts: Core) -> tuple[Array, ...]:
    w, qk, qd, ke, last, states, vnew = res
    d_out, d_final = cts
    p = _Padded(qk.shape[-1], w.shape[-1], vnew.shape[-1])
    du_local = jnp.einsum("bhnij,bhniv->bhnjv", qk, d_out)
    d_after, du, ds0 = _backward_partitioned(
        p.keys(qd), p.keys(w), p.keys(ke), p.values(d_out), p.values(du_local), p.decay(last),
        p.state(d_final.astype(states.dtype)), interpret,
    )  # fmt: skip
    d_after, du = p.unstates(d_after), p.unrows(du)
    d_w = -jnp.einsum("bhncv,bhnkv->bhnck", du, states)
    d_qd = jnp.einsum("bhncv,bhnkv->bhnck", d_out, states)
    d_ke = jnp.einsum("bhncv,bhnkv->bhnck", vnew, d_after)
    d_qk = jnp.einsum("bhniv,bhnjv->bhnij", d_out, vnew)
    d_last = jnp.sum(states * d_after, axis=(-2, -1))
    return du, d_w, d_qk, d_qd, d_ke, d_last, p.unstate(ds0)


pallas_core.defvjp(_core_fwd, _core_bwd)
