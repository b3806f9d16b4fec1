"""The routed experts' computation: tokens to their experts and back, as grouped matmuls.

Two paths, both without a dense ``[tokens, experts, ...]`` one-hot product:

- **dropless** (``capacity_factor=None``): the ``t·k`` (token, choice) assignments are sorted by
  expert and run as grouped matmuls, ``jax.lax.ragged_dot`` over the expert groups; every
  assignment is computed.
- **capacity** (``capacity_factor`` set): each sequence gives an expert at most ``C =
  ceil(factor · s · k / E)`` slots (GShard/MaxText: per sequence, so the result does not depend
  on how the batch is split over devices). Slots are filled in a fixed order: every token's first
  choice (in token order), then every second choice, and so on; what does not fit is dropped
  (its share of the token's output is zero) and counted. The kept rows go into a ``[b, E, C, d]``
  buffer and one batched matmul per projection.

With expert parallelism the same functions take a ``comm`` (``tjx.parallel.ExpertComm``, duck
typed: this package may not import tjx-parallel) and run on one device's tokens inside its
``shard_map``: the dropless path sends each assignment to the device holding its expert
(``comm.exchange``, a ragged all-to-all), the capacity path sends the buffer's expert blocks
(``comm.all_to_all``); both come back the same way. ``comm.reduce_partial`` sums the partial
outputs of a hidden (``mlp``) axis split over tensor-parallel devices.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array


class ExpertWeights(NamedTuple):
    """Every routed expert's weights (a device's own experts under expert parallelism); the
    same structure holds their logical axis names (``moe.WEIGHT_NAMES``), hence ``Any``."""

    fc_in: Any  # [E, d, f]
    fc_gate: Any  # [E, d, f] (gated activations), else None
    fc_out: Any  # [E, f, d]
    b_in: Any  # [E, f] (use_bias), else None
    b_gate: Any  # [E, f]
    b_out: Any  # [E, d]


class FFN(NamedTuple):
    """How an expert's MLP computes: its activation, whether it is gated, its matmul dtype."""

    act: Callable[[Array], Array]
    gated: bool
    dtype: Any
    #: The gated unit ``glu(gate, up)`` where it is not ``act(gate) * up`` (gpt-oss's clamped
    #: SwiGLU, `tjx.nn.mlp.clamped_swiglu`); None: ``act(gate) * up``.
    glu: Callable[[Array, Array], Array] | None = None

    def gate(self, gate: Array, up: Array) -> Array:
        """The gated unit of ``gate`` and ``up`` (the projections' outputs, biases added)."""
        return self.act(gate) * up if self.glu is None else self.glu(gate, up)


def _unsort(rows: Array, order: Array) -> Array:
    """The inverse of ``rows = src[order]`` along axis 0 (``order`` a permutation)."""
    return jnp.zeros_like(rows).at[order].set(rows, unique_indices=True)


def _row_bias(bias: Array | None, experts: Array, dt: Any) -> Array | float:
    if bias is None:
        return 0.0
    return bias[jnp.clip(experts, 0, bias.shape[0] - 1)].astype(dt)


def grouped_ffn(
    x: Array, group_sizes: Array, row_experts: Array, w: ExpertWeights, ffn: FFN, comm: Any = None
) -> Array:
    """The experts' MLPs on rows sorted by expert: ``ragged_dot`` per projection.

    Parameters
    ----------
    x : Array
        ``[m, d]`` rows, those of expert 0 first, then expert 1, ...; rows past
        ``sum(group_sizes)`` belong to no expert and give zeros.
    group_sizes : Array
        int32 ``[E]`` rows per expert.
    row_experts : Array
        int32 ``[m]`` each row's expert (for the biases; rows of no expert may hold anything).
    w, ffn
        The weights and how they compute.
    comm : ExpertComm, optional
        Sums the partial outputs of a split hidden axis (tensor parallelism).

    Returns
    -------
    Array
        ``[m, d]`` in ``ffn.dtype``.
    """
    dt = ffn.dtype
    x = x.astype(dt)

    def mm(a: Array, kernel: Array) -> Array:
        return jax.lax.ragged_dot(a, kernel.astype(dt), group_sizes)

    h = mm(x, w.fc_in) + _row_bias(w.b_in, row_experts, dt)
    if ffn.gated:
        assert w.fc_gate is not None
        h = ffn.gate(mm(x, w.fc_gate) + _row_bias(w.b_gate, row_experts, dt), h)
    else:
        h = ffn.act(h)
    y = mm(h, w.fc_out)
    if comm is not None:
        y = comm.reduce_partial(y)
    if w.b_out is not None:
        # Rows of no expert stay zero (a bias would make them nonzero).
        inside = jnp.arange(x.shape[0]) < jnp.sum(group_sizes)
        y = y + jnp.where(inside[:, None], _row_bias(w.b_out, row_experts, dt), 0.0)
    return y


def batched_ffn(buf: Array, w: ExpertWeights, ffn: FFN, comm: Any = None) -> Array:
    """The experts' MLPs on a slot buffer ``[..., E, C, d]``: one batched matmul per projection."""
    dt = ffn.dtype
    buf = buf.astype(dt)

    def mm(a: Array, kernel: Array, bias: Array | None) -> Array:
        out = jnp.einsum("...ecd,edf->...ecf", a, kernel.astype(dt))
        return out if bias is None else out + bias[:, None, :].astype(dt)

    h = mm(buf, w.fc_in, w.b_in)
    if ffn.gated:
        assert w.fc_gate is not None
        h = ffn.gate(mm(buf, w.fc_gate, w.b_gate), h)
    else:
        h = ffn.act(h)
    y = mm(h, w.fc_out, None)
    if comm is not None:
        y = comm.reduce_partial(y)
    return y if w.b_out is None else y + w.b_out[:, None, :].astype(dt)


def _combine(y_assign: Array, weights: Array, dtype: Any) -> Array:
    """``Σ_k weight · output`` per token: ``[..., k, d]`` and ``[..., k]`` → ``[..., d]``."""
    acc = jnp.promote_types(weights.dtype, y_assign.dtype)
    out = jnp.einsum("...kd,...k->...d", y_assign.astype(acc), weights.astype(acc))
    return out.astype(dtype)


def _scaled_rows(rows: Array, weights: Array) -> Array:
    """Each assignment's input row times its routed weight (``router_scales_input``)."""
    acc = jnp.promote_types(rows.dtype, weights.dtype)
    return rows.astype(acc) * weights.astype(acc)[..., None]


def dropless(
    x: Array,
    experts: Array,
    weights: Array,
    w: ExpertWeights,
    ffn: FFN,
    comm: Any = None,
    scale_input: bool = False,
) -> Array:
    """Every (token, choice) assignment through its expert: sort, grouped matmuls, unsort.

    Parameters
    ----------
    x : Array
        ``[t, d]`` tokens.
    experts, weights : Array
        ``[t, k]`` the router's choices (global expert ids) and their weights.
    w : ExpertWeights
        All ``E`` experts, or a device's ``E / comm.size`` under expert parallelism.
    ffn : FFN
        Activation and dtype.
    comm : ExpertComm, optional
        Expert parallelism (see the module's docstring); None: every expert is here.
    scale_input : bool
        The weights scale each assignment's input row instead of its output.

    Returns
    -------
    Array
        ``[t, d]``: each token's weighted sum of its experts' outputs.
    """
    t, k = experts.shape
    num_local = w.fc_in.shape[0]
    size = 1 if comm is None else comm.size
    num_experts = num_local * size
    flat = experts.reshape(-1)
    order = jnp.argsort(flat, stable=True)  # assignments grouped by expert, token order inside
    sorted_experts = flat[order]
    rows = x[order // k]
    if scale_input:
        rows = _scaled_rows(rows, weights.reshape(-1)[order])
        weights = jnp.ones_like(weights)
    group_sizes = jnp.bincount(flat, length=num_experts).astype(jnp.int32)
    if size == 1:
        out = grouped_ffn(rows, group_sizes, sorted_experts, w, ffn, comm)
    else:
        out = _exchanged_ffn(rows, group_sizes, w, ffn, comm, slot=t * min(k, num_local))
    y_assign = _unsort(out, order).reshape(t, k, -1)
    return _combine(y_assign, weights, ffn.dtype)


def _exchanged_ffn(
    rows: Array, group_sizes: Array, w: ExpertWeights, ffn: FFN, comm: Any, slot: int
) -> Array:
    """The sorted assignments to the devices of their experts, through them, and back.

    Device ``j`` holds experts ``[j·E_l, (j+1)·E_l)``, so the expert-sorted rows already come in
    one block per device. Each source's block lands at ``i·slot`` of the receiving buffer
    (``slot``: the most rows one device can send another), itself sorted by local expert; the
    rows are sorted once more by local expert across sources, computed, and sent back.
    """
    size, num_local = comm.size, w.fc_in.shape[0]
    send = group_sizes.reshape(size, num_local).sum(axis=1)
    buf, recv = comm.exchange(rows, send, slot)  # [size·slot, d], int32 [size]
    every = comm.all_gather(group_sizes)  # [size (source), E]
    mine = jax.lax.dynamic_slice_in_dim(every, comm.index() * num_local, num_local, axis=1)
    offset = jnp.arange(slot, dtype=jnp.int32)
    ends = jnp.cumsum(mine, axis=1)  # per source: where each local expert's rows end
    local = jax.vmap(lambda e: jnp.searchsorted(e, offset, side="right"))(ends)
    local = jnp.where(offset[None, :] < recv[:, None], local, num_local).reshape(-1)
    order = jnp.argsort(local, stable=True)  # rows of no expert (num_local) last
    out = grouped_ffn(buf[order], mine.sum(axis=0), local[order], w, ffn, comm)
    return comm.exchange_back(_unsort(out, order), send, recv, slot, rows.shape[0])


def capacity(
    x: Array,
    experts: Array,
    weights: Array,
    w: ExpertWeights,
    ffn: FFN,
    slots: int,
    comm: Any = None,
    scale_input: bool = False,
) -> tuple[Array, Array]:
    """The capacity path: ``slots`` per expert and sequence, overflow dropped in a fixed order.

    Parameters
    ----------
    x : Array
        ``[b, s, d]`` tokens (a sequence per row: capacity is per sequence).
    experts, weights : Array
        ``[b, s, k]`` the router's choices (global ids) and weights.
    w, ffn
        The experts (a device's own under expert parallelism) and how they compute.
    slots : int
        ``C``, from ``config.expert_capacity``.
    comm : ExpertComm, optional
        Expert parallelism: the buffer's expert blocks go to their devices (all-to-all).
    scale_input : bool
        The weights scale each assignment's input row instead of its output.

    Returns
    -------
    (Array, Array)
        ``[b, s, d]`` outputs and the int32 number of dropped assignments.
    """
    b, s, k = experts.shape
    num_local = w.fc_in.shape[0]
    num_experts = num_local * (1 if comm is None else comm.size)
    # Priority order: every first choice (token order), then every second choice, ...
    pri = experts.transpose(0, 2, 1).reshape(b, k * s)
    order = jnp.argsort(pri, axis=1, stable=True)
    counts = jax.vmap(lambda e: jnp.bincount(e, length=num_experts))(pri)
    starts = jnp.cumsum(counts, axis=1) - counts
    sorted_e = jnp.take_along_axis(pri, order, axis=1)
    rank = jnp.arange(k * s) - jnp.take_along_axis(starts, sorted_e, axis=1)
    pos = jax.vmap(_unsort)(rank, order)  # each assignment's slot in its expert's queue
    keep = pos < slots
    rows = jnp.arange(b)[:, None]
    src = x[rows, jnp.arange(k * s)[None, :] % s]  # [b, k·s, d]
    if scale_input:  # assignment j = choice·s + token, as ``pri``
        src = _scaled_rows(src, weights.transpose(0, 2, 1).reshape(b, k * s))
        weights = jnp.ones_like(weights)
    buf = jnp.zeros((b, num_experts, slots, x.shape[-1]), ffn.dtype)
    buf = buf.at[rows, pri, pos].set(src.astype(ffn.dtype), mode="drop")  # pos >= C: dropped
    if comm is not None and comm.size > 1:
        out = comm.all_to_all(buf, split_axis=1, concat_axis=0)  # [size·b, E_l, C, d]
        out = batched_ffn(out, w, ffn, comm)
        out = comm.all_to_all(out, split_axis=0, concat_axis=1)  # [b, E, C, d]
    else:
        out = batched_ffn(buf, w, ffn, comm)
    y = out[rows, pri, jnp.minimum(pos, slots - 1)] * keep[..., None].astype(out.dtype)
    y_assign = y.reshape(b, k, s, -1).transpose(0, 2, 1, 3)  # [b, s, k, d]
    dropped = jnp.sum(~keep).astype(jnp.int32)
    return _combine(y_assign, weights, ffn.dtype), dropped
