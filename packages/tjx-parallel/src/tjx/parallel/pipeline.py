"""Pipeline parallelism: a stack of layers split over the ``pipeline`` mesh axis, run as a
schedule of microbatches under ``shard_map`` with activations and cotangents sent by ``ppermute``.

The model is given as functions, so this package stays model-agnostic:

- ``layer_fn(layer_params, h, side) -> h``: one layer; ``layer_params`` is one slice of the
  stacked params (leading ``layers`` dim removed), ``side`` this microbatch's side inputs
  (positions, segment ids, ...), read by every stage without being sent;
- ``head_fn(head_params, h, head_side) -> (loss, aux)``: after the last layer (final norm,
  unembedding, loss), run on the last stage; the step's loss is the *sum* over microbatches, so
  weight each microbatch's loss (e.g. by its share of the tokens) to get a mean.

What runs before the stack (the embedding) stays outside, in ordinary SPMD code: its output ``x``
goes in, its cotangent comes back. Stage ``k`` holds layers ``[k·L/S, (k+1)·L/S)`` -- the
stacked params' leading dim sharded over ``pipeline``, a reshape, not a rewrite of the model.

Gradients: the returned loss is a ``jax.custom_vjp`` whose forward pass runs the whole schedule
(forwards and backwards, GPipe or 1F1B) and keeps the gradients as residuals, so ``jax.grad`` of
any function of it works as usual; a call that is not differentiated runs forwards only. Each
backward recomputes its stage's forward from the stage input kept in a buffer (remat per stage),
so a stage holds ``Schedule.slots`` microbatch inputs: ``M`` under GPipe, ``S`` under 1F1B.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from tjx.parallel.schedule import (
    BACKWARD,
    FORWARD,
    SCHEDULES,
    Schedule,
    forward_schedule,
    make_schedule,
)

__all__ = ["PIPELINE_AXIS", "check_pipeline", "microbatch", "pipeline_loss", "unmicrobatch"]

#: The mesh axis that holds the stages.
PIPELINE_AXIS = "pipeline"

Array = jax.Array
LayerFn = Callable[[Any, Array, Any], Array]
HeadFn = Callable[[Any, Array, Any], tuple[Array, Any]]


def check_pipeline(
    *,
    num_layers: int,
    stages: int,
    batch_size: int,
    microbatches: int,
    batch_ways: int = 1,
    schedule: str = "gpipe",
) -> None:
    """Raise a one-line ``ValueError`` for a pipeline that cannot run.

    Parameters
    ----------
    num_layers : int
        Layers in the stack; ``stages`` must divide it (each stage gets a whole share).
    stages : int
        Pipeline stages ``S``.
    batch_size : int
        Rows per step; ``microbatches`` must divide it.
    microbatches : int
        Microbatches ``M`` per step.
    batch_ways : int
        Devices the batch is split over inside a stage (data × fsdp × expert): each
        microbatch's rows must split evenly over them.
    schedule : str
        One of :data:`~tjx.parallel.schedule.SCHEDULES`.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"pipeline schedule must be one of {SCHEDULES}; got {schedule!r}")
    if stages < 1 or microbatches < 1:
        raise ValueError(
            f"pipeline stages ({stages}) and microbatches ({microbatches}) must be >= 1"
        )
    if num_layers % stages:
        raise ValueError(
            f"the pipeline's {stages} stages must divide the {num_layers} layers (each stage "
            "holds an equal run of consecutive layers)"
        )
    if batch_size % microbatches:
        raise ValueError(f"{microbatches} microbatches must divide the batch of {batch_size} rows")
    per_micro = batch_size // microbatches
    if per_micro % batch_ways:
        raise ValueError(
            f"a microbatch of {per_micro} rows (batch {batch_size} / {microbatches} microbatches) "
            f"must be divisible by the data×fsdp×expert mesh size ({batch_ways})"
        )


def microbatch(tree: Any, microbatches: int) -> Any:
    """``[B, ...]`` leaves → ``[M, B/M, ...]``; microbatch ``i`` takes rows ``i, i+M, i+2M, ...``.

    Interleaved rows keep each microbatch spread over the data/fsdp devices that hold
    consecutive blocks of the batch, so no rows move between devices.
    """

    def one(a: Array) -> Array:
        b = a.shape[0]
        return a.reshape(b // microbatches, microbatches, *a.shape[1:]).swapaxes(0, 1)

    return jax.tree.map(one, tree)


def unmicrobatch(tree: Any) -> Any:
    """Inverse of :func:`microbatch`."""
    return jax.tree.map(lambda a: a.swapaxes(0, 1).reshape(-1, *a.shape[2:]), tree)


def _index(tree: Any, i: Array) -> Any:
    return jax.tree.map(lambda a: lax.dynamic_index_in_dim(a, i, keepdims=False), tree)


def _set(buf: Array, i: Array, value: Array, keep: Array) -> Array:
    """``buf[i] = value`` unless ``keep`` (the slot's old value stays)."""
    old = lax.dynamic_index_in_dim(buf, i, keepdims=False)
    return lax.dynamic_update_index_in_dim(buf, jnp.where(keep, old, value), i, 0)


def _zeros32(tree: Any) -> Any:
    return jax.tree.map(lambda a: jnp.zeros(a.shape, jnp.float32), tree)


def _add(acc: Any, new: Any) -> Any:
    return jax.tree.map(lambda a, b: a + b.astype(a.dtype), acc, new)


def _run(
    sched: Schedule,
    layer_fn: LayerFn,
    head_fn: HeadFn,
    axis: str,
    with_grad: bool,
    stage_params: Any,
    head_params: Any,
    x_mb: Array,
    side_mb: Any,
    head_side_mb: Any,
) -> tuple[Any, ...]:
    """One stage's view of the step (inside ``shard_map`` over ``axis``)."""
    n, k = sched.stages, sched.slots
    s = lax.axis_index(axis)
    is_first, is_last = s == 0, s == n - 1
    act = jnp.zeros(x_mb.shape[1:], x_mb.dtype)

    def stage_apply(p: Any, h: Array, side: Any) -> Array:
        def body(h: Array, p_i: Any) -> tuple[Array, None]:
            return layer_fn(p_i, h, side), None

        return lax.scan(body, h, p)[0]

    def head_loss(p: Any, hp: Any, h: Array, side: Any, hside: Any) -> tuple[Array, Any]:
        loss, aux = head_fn(hp, stage_apply(p, h, side), hside)
        return loss.astype(jnp.float32), aux

    aux0 = jax.tree.map(
        lambda a: jnp.zeros(a.shape, a.dtype),
        jax.eval_shape(head_fn, head_params, act, _index(head_side_mb, jnp.int32(0)))[1],
    )
    gp0, gh0 = _zeros32(stage_params), _zeros32(head_params)
    nothing = (act, act, gp0, gh0, jnp.float32(0), aux0)

    def tick(carry: tuple[Any, ...], row: tuple[Array, ...]) -> tuple[tuple[Any, ...], None]:
        stash, cots, gacc, hacc, dx, loss, aux = carry
        ops, mbs, recv_f, recv_b = (lax.dynamic_index_in_dim(r, s, keepdims=False) for r in row)
        i = mbs
        slot = i % k
        side, hside = _index(side_mb, i), _index(head_side_mb, i)
        # Stage 0 reads its input from the batch; the others from what arrived.
        h_in = jnp.where(is_first, _index(x_mb, i), _index(stash, slot))

        def idle() -> tuple[Any, ...]:
            return nothing

        def fwd() -> tuple[Any, ...]:
            return (stage_apply(stage_params, h_in, side), *nothing[1:])

        def fwd_loss() -> tuple[Any, ...]:
            loss_i, aux_i = head_loss(stage_params, head_params, h_in, side, hside)
            return (*nothing[:4], loss_i, aux_i)

        def bwd() -> tuple[Any, ...]:
            _, vjp = jax.vjp(lambda p, h: stage_apply(p, h, side), stage_params, h_in)
            dp, dh = vjp(_index(cots, slot))
            return (act, dh, dp, gh0, jnp.float32(0), aux0)

        def bwd_loss() -> tuple[Any, ...]:
            f = lambda p, hp, h: head_loss(p, hp, h, side, hside)
            loss_i, vjp, aux_i = jax.vjp(f, stage_params, head_params, h_in, has_aux=True)
            dp, dhp, dh = vjp(jnp.ones_like(loss_i))
            return (act, dh, dp, dhp, loss_i, aux_i)

        if with_grad:
            # 0 idle, 1 forward, 2 backward, 3 backward through the head (last stage)
            branch = jnp.where(ops == BACKWARD, jnp.where(is_last, 3, 2), ops)
            branches = [idle, fwd, bwd, bwd_loss]
        else:
            branch = jnp.where((ops == FORWARD) & is_last, 2, ops)
            branches = [idle, fwd, fwd_loss]
        send_f, send_b, dp, dhp, loss_i, aux_i = lax.switch(branch, branches)
        gacc, hacc, loss, aux = _add(gacc, dp), _add(hacc, dhp), loss + loss_i, _add(aux, aux_i)
        if with_grad:
            dx = _set(dx, i, send_b, ~((ops == BACKWARD) & is_first))
        if n > 1:  # neighbours only: s → s+1 forward, s → s-1 backward
            got_f = lax.ppermute(send_f, axis, [(j, j + 1) for j in range(n - 1)])
            stash = _set(stash, recv_f % k, got_f, recv_f < 0)
            if with_grad:
                got_b = lax.ppermute(send_b, axis, [(j + 1, j) for j in range(n - 1)])
                cots = _set(cots, recv_b % k, got_b, recv_b < 0)
        return (stash, cots, gacc, hacc, dx, loss, aux), None

    buf = jnp.zeros((k, *act.shape), act.dtype)
    dx0 = jnp.zeros_like(x_mb) if with_grad else jnp.zeros((1, *act.shape), act.dtype)
    rows = tuple(jnp.asarray(a) for a in (sched.ops, sched.mb, sched.recv_fwd, sched.recv_bwd))
    carry = (buf, buf if with_grad else buf[:1], gp0, gh0, dx0, jnp.float32(0), aux0)
    stash, cots, gacc, hacc, dx, loss, aux = lax.scan(tick, carry, rows)[0]
    loss, aux = lax.psum(loss, axis), lax.psum(aux, axis)
    if not with_grad:
        return loss, aux
    # The head's and the input's gradients live on one stage (zeros elsewhere): sum to share.
    hacc, dx = _psum_wide(hacc, axis), _psum_wide(dx, axis)
    cast = lambda g, p: jax.tree.map(lambda a, b: a.astype(b.dtype), g, p)
    return loss, aux, cast(gacc, stage_params), cast(hacc, head_params), dx


def _psum_wide(tree: Any, axis: str) -> Any:
    """``psum`` with bf16/fp16 leaves summed as float32 and cast back.

    Only one stage holds a non-zero term here, so the sum is exact either way; the cast is for
    XLA:CPU, whose all-reduce promotion pass aborts the process on a bf16 all-reduce that
    shard_map's lowering wraps in a sharding annotation ("Invalid binary instruction opcode
    copy", jax 0.10) — a bf16 pipelined train step could not even compile on a CPU.
    """

    def one(a: jax.Array) -> jax.Array:
        narrow = jnp.issubdtype(a.dtype, jnp.floating) and jnp.finfo(a.dtype).bits < 32
        return (
            lax.psum(a.astype(jnp.float32), axis).astype(a.dtype) if narrow else lax.psum(a, axis)
        )

    return jax.tree.map(one, tree)


def pipeline_loss(
    layer_fn: LayerFn,
    head_fn: HeadFn,
    mesh: Mesh,
    *,
    microbatches: int,
    schedule: str = "gpipe",
    axis: str = PIPELINE_AXIS,
) -> Callable[[Any, Any, Array, Any, Any], tuple[Array, Any]]:
    """A pipelined ``loss(stage_params, head_params, x, side, head_side) -> (loss, aux)``.

    Parameters
    ----------
    layer_fn : callable
        ``(layer_params, h, side) -> h`` for one layer (``h`` ``[B/M, ...]``).
    head_fn : callable
        ``(head_params, h, head_side) -> (loss, aux)`` on the last stage; ``aux`` is a pytree
        of arrays (counts, sums) summed over microbatches and not differentiated.
    mesh : jax.sharding.Mesh
        Has ``axis``; the other axes (data, fsdp, expert, tensor) stay under XLA's automatic
        partitioning
        inside each stage.
    microbatches : int
        ``M`` per step (``M >= S`` keeps the bubble below one half).
    schedule : str
        ``"gpipe"`` or ``"1f1b"`` (same gradients; 1F1B holds ``S`` microbatch inputs per stage
        instead of ``M``).
    axis : str
        The stage axis of ``mesh``.

    Returns
    -------
    callable
        ``stage_params`` (leading dim = layers, sharded over ``axis``), ``head_params``, ``x``
        ``[B, ...]`` (the stack's input), ``side`` and ``head_side`` (pytrees of ``[B, ...]``
        arrays) → ``(loss summed over microbatches, aux summed)``. Differentiable in the first
        three; a shape that does not split raises :class:`ValueError` naming it.
    """
    stages = int(mesh.shape[axis])
    train = make_schedule(schedule, stages, microbatches)
    forward = forward_schedule(stages, microbatches)

    def mapped(sched: Schedule, with_grad: bool) -> Callable[..., Any]:
        run = functools.partial(_run, sched, layer_fn, head_fn, axis, with_grad)
        out_specs: tuple[Any, ...] = (PartitionSpec(), PartitionSpec())
        if with_grad:
            out_specs += (PartitionSpec(axis), PartitionSpec(), PartitionSpec())
        # jit: a shard_map with automatic axes left (data, fsdp, expert, tensor) runs only compiled,
        # so an eager call (outside the caller's jit) needs it too.
        return jax.jit(
            jax.shard_map(
                run,
                mesh=mesh,
                in_specs=(PartitionSpec(axis), *[PartitionSpec()] * 4),
                out_specs=out_specs,
                axis_names={axis},
                check_vma=False,
            )
        )

    @jax.custom_vjp
    def loss_mb(sp: Any, hp: Any, x_mb: Array, side_mb: Any, hside_mb: Any) -> tuple[Array, Any]:
        return mapped(forward, False)(sp, hp, x_mb, side_mb, hside_mb)  # type: ignore[no-any-return]

    def loss_fwd(sp: Any, hp: Any, x_mb: Array, side_mb: Any, hside_mb: Any) -> Any:
        loss, aux, gs, gh, dx = mapped(train, True)(sp, hp, x_mb, side_mb, hside_mb)
        return (loss, aux), (gs, gh, dx)

    def loss_bwd(res: Any, g: Any) -> tuple[Any, ...]:
        g_loss = g[0]  # aux (counts) carries no gradient
        scale = lambda t: jax.tree.map(lambda a: (a * g_loss).astype(a.dtype), t)
        gs, gh, dx = res
        return scale(gs), scale(gh), scale(dx), None, None

    loss_mb.defvjp(loss_fwd, loss_bwd)

    def loss(sp: Any, hp: Any, x: Array, side: Any, head_side: Any) -> tuple[Array, Any]:
        leaves = jax.tree.leaves(sp)
        chex.assert_equal_shape_prefix(leaves, 1)
        check_pipeline(
            num_layers=int(leaves[0].shape[0]),
            stages=stages,
            batch_size=int(x.shape[0]),
            microbatches=microbatches,
            schedule=schedule,
        )
        chex.assert_equal_shape_prefix([x, *jax.tree.leaves((side, head_side))], 1)
        split = functools.partial(microbatch, microbatches=microbatches)
        return loss_mb(sp, hp, split(x), split(side), split(head_side))  # type: ignore[no-any-return]

    return loss
