"""SPMD partitioning of the flash kernels: each device runs the kernel on its own shard.

A ``pallas_call`` lowers to one opaque custom call (Triton on a GPU), which XLA's SPMD partitioner
cannot split: under ``jit`` with batch- or head-sharded inputs it would gather q/k/v and run the
whole kernel on every device. :func:`partitioned_forward` and :func:`partitioned_backward` wrap the
kernel calls in :func:`jax.experimental.custom_partitioning.custom_partitioning` (the mechanism
jax's own cuDNN attention uses), which tells the partitioner how to split them:

* batch and heads stay sharded (attention is independent per (batch row, head));
* a head shard keeps whole GQA groups: q heads and kv heads are sharded over the same mesh axes,
  so local query head ``i`` still uses local kv head ``i // groups`` and the kernel config (block
  sizes, lengths, groups) is the same on every shard. When the head-sharding axes do not divide
  ``kv_heads`` (e.g. MQA under tensor parallelism), heads are replicated instead (correct; the
  work is then repeated over those axes);
* sequence and head_dim are replicated inside the kernel (each query attends to every key): an
  input sharded along them is gathered first.

The sharding is described twice, as jax requires: a Shardy ``sharding_rule`` for propagation
(Shardy is the default partitioner of the jax this repo pins, 0.10) and a GSPMD callback
(``infer_sharding_from_operands``) for runs with ``jax_use_shardy_partitioner=False``. In either
case the final word is ``partition``, which fixes the operand and result shardings (the
partitioner reshards operands to match) and returns the per-shard computation: the unchanged
kernel call on local shapes. On one device, or outside ``jit`` on one device, jax lowers the
wrapped function directly, so nothing changes there.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap
from jax.experimental.custom_partitioning import (
    ArrayMapping,
    CompoundFactor,
    SdyShardingRule,
    custom_partitioning,
)
from jax.sharding import Mesh, NamedSharding, PartitionSpec, Sharding

from tjx.kernels.flash_bwd import flash_backward, flash_backward_qkv
from tjx.kernels.flash_fwd import KernelConfig, flash_forward, flash_forward_qkv

Array = jax.Array
#: A mesh-axis entry of a PartitionSpec: None, one axis name, or a tuple of names.
AxisEntry = str | tuple[str, ...] | None
Shardings = tuple[NamedSharding | None, ...]


def _axes(entry: Any) -> tuple[str, ...]:
    """The mesh axes of one PartitionSpec entry, as a tuple."""
    if entry is None:
        return ()
    if isinstance(entry, tuple | list):
        return tuple(entry)
    return (entry,)


def _starts(sharding: Sharding, mesh: Mesh, shape: tuple[int, ...], dim: int) -> np.ndarray:
    """Where each device's block of dimension ``dim`` starts, laid out as ``mesh.devices``."""
    blocks = sharding.devices_indices_map(shape)
    return np.vectorize(lambda d: blocks[d][dim].start or 0, otypes=[np.int64])(mesh.devices)


def _dim_entry(mesh: Mesh, arg: Any, dim: int) -> tuple[str, ...]:
    """Mesh axes of dimension ``dim`` of an operand (``()`` when replicated or unknown).

    The partitioner hands the callbacks its own (HLO) shardings, which jax cannot always read as
    a PartitionSpec (`custom_partitioning`'s ``decode_shardings`` asserts on them), so they are
    read here from the device -> block map, a public method of every sharding. A dimension split
    over *part* of a mesh axis (a Shardy sub-axis: a micro-batch of the rows of a batch sharded
    over ``fsdp``, say ``fsdp:(1)4`` after ``[16] -> [2, 8]``, replicated over the other half)
    names that whole axis: the kernel then runs on whole axes, and the partitioner reshards the
    operand to that layout (a collective-permute) rather than the lowering failing.
    """
    sharding = getattr(arg, "sharding", None)
    if isinstance(sharding, NamedSharding):
        spec = tuple(sharding.spec)
        return _axes(spec[dim]) if dim < len(spec) else ()
    if not isinstance(sharding, Sharding) or mesh.empty or sharding.is_fully_replicated:
        return ()
    shape = tuple(arg.shape)
    starts = _starts(sharding, mesh, shape, dim)
    names = list(mesh.axis_names)
    moved = tuple(  # the axes along which the block start changes
        a for i, a in enumerate(names) if mesh.shape[a] > 1 and np.ptp(starts, axis=i).any()
    )
    for order in itertools.permutations(moved):  # the exact spec, when whole axes express it
        exact = NamedSharding(mesh, PartitionSpec(*([None] * dim), _entry(order)))
        if np.array_equal(_starts(exact, mesh, shape, dim), starts):
            return order
    return moved


def _size(mesh: Mesh, axes: tuple[str, ...]) -> int:
    return math.prod(mesh.shape[a] for a in axes)


def _entry(axes: tuple[str, ...]) -> AxisEntry:
    """The PartitionSpec entry for ``axes`` (None when empty, a name when single)."""
    if not axes:
        return None
    return axes[0] if len(axes) == 1 else axes


def kernel_layout(mesh: Mesh, q: Any, k: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(batch axes, head axes) the kernel runs under, chosen from the operands' shardings.

    ``q`` decides (the other operands are resharded to match); an axis is kept only when it
    evenly divides the dimension (and, for heads, ``kv_heads``, so every shard holds whole GQA
    groups) and is not used twice.
    """
    return _batch_and_heads(mesh, q, 2, k.shape[2])


def _batch_and_heads(
    mesh: Mesh, x: Any, head_dim: int, heads: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(batch axes, head axes) of ``x``'s sharding of dimension 0 and ``head_dim``: each kept
    only when its size evenly divides the batch (the ``heads``) and not used twice."""
    batch = _dim_entry(mesh, x, 0)
    if not batch or x.shape[0] % _size(mesh, batch):
        batch = ()
    axes = tuple(a for a in _dim_entry(mesh, x, head_dim) if a not in batch)
    if not axes or heads % _size(mesh, axes):
        axes = ()
    return batch, axes


def _specs(
    mesh: Mesh, batch: tuple[str, ...], heads: tuple[str, ...]
) -> tuple[NamedSharding, NamedSharding, NamedSharding]:
    """(q/k/v/out [b, s, h, d], ids [b, s], lse [b, h, s]) shardings of the kernel's operands."""
    b, h = _entry(batch), _entry(heads)
    return (
        NamedSharding(mesh, PartitionSpec(b, None, h, None)),
        NamedSharding(mesh, PartitionSpec(b, None)),
        NamedSharding(mesh, PartitionSpec(b, h, None)),
    )


def _ids(sharding: NamedSharding, cfg: KernelConfig) -> NamedSharding | None:
    # Without segment ids the operands are None (empty pytree leaves): so are their shardings.
    return sharding if cfg.has_segments else None


# --------------------------------------------------------------------------------------------
# Shardy rules. Factors: b batch, s query length, t key length, n kv heads, d head_dim, and for q's
# heads either the compound (n g) (g = GQA group), so that a sharding of q's heads carries over to
# k's heads (the major factor n) and never splits a group, or, when that could make Shardy split a
# mesh axis into sub-axes (which jax cannot hand to `partition` as a NamedSharding), an independent
# factor h (partition then aligns k's heads with q's). s, t and d must be replicated (listed in the
# order the factors first appear: Shardy wants special factors sorted).


def _heads(groups: int, mesh: Mesh, kv_heads: int) -> str | CompoundFactor:
    """q's heads factor: n without GQA, (n g) when no mesh axis can split n, else h."""
    if groups == 1:
        return "n"
    # Any set of whole mesh axes divides n when the mesh size does: Shardy never needs sub-axes.
    # (A factor of size 1, as n is under MQA, may not sit in a compound factor either.)
    if kv_heads > 1 and not mesh.empty and kv_heads % mesh.size == 0:
        return CompoundFactor("n", "g")
    return "h"


def _rule(
    cfg: KernelConfig,
    h: str | CompoundFactor,
    extra: list[ArrayMapping],
    results: list[ArrayMapping],
) -> SdyShardingRule:
    kv = ArrayMapping("b", "t", "n", "d")
    operands = [ArrayMapping("b", "s", h, "d"), kv, kv]
    if cfg.has_segments:
        operands += [ArrayMapping("b", "s"), ArrayMapping("b", "t")]
    operands += extra
    replicated = ("s", "d", "t")
    if isinstance(h, CompoundFactor):  # g appears only inside (n g): Shardy needs its size
        return SdyShardingRule(
            tuple(operands), tuple(results), need_replication_factors=replicated, g=cfg.groups
        )
    return SdyShardingRule(tuple(operands), tuple(results), need_replication_factors=replicated)


def _fwd_rule(cfg: KernelConfig, mesh: Mesh, operands: Any, results: Any) -> SdyShardingRule:
    del results
    h = _heads(cfg.groups, mesh, operands[1].shape[2])
    return _rule(cfg, h, [], [ArrayMapping("b", "s", h, "d"), ArrayMapping("b", h, "s")])


def _bwd_rule(cfg: KernelConfig, mesh: Mesh, operands: Any, results: Any) -> SdyShardingRule:
    del results
    h = _heads(cfg.groups, mesh, operands[1].shape[2])
    q_like, lse = ArrayMapping("b", "s", h, "d"), ArrayMapping("b", h, "s")
    kv_like = ArrayMapping("b", "t", "n", "d")
    return _rule(cfg, h, [q_like, lse, q_like], [q_like, kv_like, kv_like])


# --------------------------------------------------------------------------------------------
# GSPMD callbacks and the partition functions shared by both partitioners.


def _fwd_infer(cfg: KernelConfig, mesh: Mesh, args: Any, result: Any) -> Shardings:
    del cfg, result
    qkv, _, lse = _specs(mesh, *kernel_layout(mesh, args[0], args[1]))
    return qkv, lse


def _fwd_partition(
    cfg: KernelConfig, mesh: Mesh, args: Any, result: Any
) -> tuple[Mesh, Callable[..., tuple[Array, Array]], Shardings, Shardings]:
    del result
    qkv, ids, lse = _specs(mesh, *kernel_layout(mesh, args[0], args[1]))
    # The per-shard computation is the unchanged kernel call: the config holds only sizes every
    # shard shares (padded lengths, head_dim, GQA group size, blocks), never batch or head counts.
    local = functools.partial(flash_forward, cfg=cfg)
    arg_shardings = (qkv, qkv, qkv, _ids(ids, cfg), _ids(ids, cfg))
    return mesh, local, (qkv, lse), arg_shardings


def _bwd_infer(cfg: KernelConfig, mesh: Mesh, args: Any, result: Any) -> Shardings:
    del cfg, result
    qkv, _, _ = _specs(mesh, *kernel_layout(mesh, args[0], args[1]))
    return qkv, qkv, qkv


def _bwd_partition(
    cfg: KernelConfig, mesh: Mesh, args: Any, result: Any
) -> tuple[Mesh, Callable[..., tuple[Array, Array, Array]], Shardings, Shardings]:
    del result
    qkv, ids, lse = _specs(mesh, *kernel_layout(mesh, args[0], args[1]))
    local = functools.partial(flash_backward, cfg=cfg)
    # d_out often arrives replicated (the cotangent of a sum is a broadcast): every operand is
    # forced to the kernel layout, so the partitioner slices it rather than the kernel seeing
    # mismatched local shapes.
    arg_shardings = (qkv, qkv, qkv, _ids(ids, cfg), _ids(ids, cfg), qkv, lse, qkv)
    return mesh, local, (qkv, qkv, qkv), arg_shardings


def _partitioned(
    kernel: Callable[..., Any],
    static_argnums: tuple[int, ...],
    partition: Callable[..., Any],
    infer: Callable[..., Any],
    rule: Callable[..., SdyShardingRule],
) -> Any:
    """``kernel`` (its `KernelConfig`, if any, among ``static_argnums``) split by the
    partitioner with these callbacks."""
    cp = custom_partitioning(kernel, static_argnums=static_argnums)
    # decode_shardings=False: the callbacks read the partitioner's shardings themselves
    # (`_dim_entry`); jax's decoding into a NamedSharding fails on a sub-axis sharding before
    # they are called.
    cp.def_partition(
        partition=partition,
        infer_sharding_from_operands=infer,
        sharding_rule=rule,
        decode_shardings=False,
    )
    return cp


_forward_cp = _partitioned(flash_forward, (5,), _fwd_partition, _fwd_infer, _fwd_rule)
_backward_cp = _partitioned(flash_backward, (8,), _bwd_partition, _bwd_infer, _bwd_rule)


# --------------------------------------------------------------------------------------------
# The stacked kernels (:mod:`tjx.kernels.flash_qkv`): one ``qkv`` [b, s, 3, h, d] operand whose
# heads are axis 3 and whose slot axis (j) and sequence stay whole; the gradient takes its
# layout. As many query as key/value heads: the heads factor is n throughout.


def _qkv_layout(mesh: Mesh, qkv: Any) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(batch axes, head axes) of a stacked call, from ``qkv``'s sharding (as `kernel_layout`)."""
    return _batch_and_heads(mesh, qkv, 3, qkv.shape[3])


class _QkvSpecs(NamedTuple):
    """The stacked kernels' operand shardings."""

    qkv: NamedSharding  # [b, s, 3, h, d]
    out: NamedSharding  # [b, s, h, d]
    ids: NamedSharding  # [b, s]
    lse: NamedSharding  # [b, h, s]
    bias: NamedSharding  # [h, d]


def _qkv_specs(mesh: Mesh, qkv: Any) -> _QkvSpecs:
    batch, heads = _qkv_layout(mesh, qkv)
    b, h = _entry(batch), _entry(heads)
    out, ids, lse = _specs(mesh, batch, heads)
    qkv_spec = NamedSharding(mesh, PartitionSpec(b, None, None, h, None))
    return _QkvSpecs(qkv_spec, out, ids, lse, NamedSharding(mesh, PartitionSpec(h, None)))


def _qkv_inputs(cfg: KernelConfig, specs: _QkvSpecs) -> Shardings:
    """Shardings of ``qkv, q_ids, kv_ids, q_bias, k_bias, v_bias`` (None where absent)."""
    bias = specs.bias if cfg.qkv_bias else None
    return (specs.qkv, _ids(specs.ids, cfg), _ids(specs.ids, cfg), bias, bias, bias)


def _qkv_rule(
    cfg: KernelConfig, extra: list[ArrayMapping], results: list[ArrayMapping]
) -> SdyShardingRule:
    operands = [ArrayMapping("b", "s", "j", "n", "d")]
    if cfg.has_segments:
        operands += [ArrayMapping("b", "s"), ArrayMapping("b", "s")]
    if cfg.qkv_bias:
        operands += [ArrayMapping("n", "d")] * 3
    operands += extra
    return SdyShardingRule(
        tuple(operands), tuple(results), need_replication_factors=("s", "j", "d")
    )


def _qkv_fwd_rule(cfg: KernelConfig, mesh: Mesh, operands: Any, results: Any) -> SdyShardingRule:
    del mesh, operands, results
    return _qkv_rule(cfg, [], [ArrayMapping("b", "s", "n", "d"), ArrayMapping("b", "n", "s")])


def _qkv_bwd_rule(cfg: KernelConfig, mesh: Mesh, operands: Any, results: Any) -> SdyShardingRule:
    del mesh, operands, results
    out = ArrayMapping("b", "s", "n", "d")
    extra = [out, ArrayMapping("b", "n", "s"), out]
    return _qkv_rule(cfg, extra, [ArrayMapping("b", "s", "j", "n", "d")])


def _qkv_fwd_infer(cfg: KernelConfig, mesh: Mesh, args: Any, result: Any) -> Shardings:
    del cfg, result
    specs = _qkv_specs(mesh, args[0])
    return specs.out, specs.lse


def _qkv_fwd_partition(
    cfg: KernelConfig, mesh: Mesh, args: Any, result: Any
) -> tuple[Mesh, Callable[..., tuple[Array, Array]], Shardings, Shardings]:
    del result
    specs = _qkv_specs(mesh, args[0])
    local = functools.partial(flash_forward_qkv, cfg=cfg)
    return mesh, local, (specs.out, specs.lse), _qkv_inputs(cfg, specs)


def _qkv_bwd_infer(cfg: KernelConfig, mesh: Mesh, args: Any, result: Any) -> NamedSharding:
    del cfg, result
    return _qkv_specs(mesh, args[0]).qkv


def _qkv_bwd_partition(
    cfg: KernelConfig, mesh: Mesh, args: Any, result: Any
) -> tuple[Mesh, Callable[..., Array], NamedSharding, Shardings]:
    del result
    specs = _qkv_specs(mesh, args[0])
    local = functools.partial(flash_backward_qkv, cfg=cfg)
    # d_out is forced to the kernel layout too (see `_bwd_partition`).
    args_out = (*_qkv_inputs(cfg, specs), specs.out, specs.lse, specs.out)
    return mesh, local, specs.qkv, args_out


_forward_qkv_cp = _partitioned(
    flash_forward_qkv, (6,), _qkv_fwd_partition, _qkv_fwd_infer, _qkv_fwd_rule
)
_backward_qkv_cp = _partitioned(
    flash_backward_qkv, (9,), _qkv_bwd_partition, _qkv_bwd_infer, _qkv_bwd_rule
)

#: The partitioned kernel calls, by (stacked, backward).
_KERNELS = {
    (False, False): _forward_cp,
    (False, True): _backward_cp,
    (True, False): _forward_qkv_cp,
    (True, True): _backward_qkv_cp,
}


@functools.cache
def _batchable(
    backward: bool, cfg: KernelConfig, stacked: bool = False
) -> Callable[..., tuple[Array, ...]]:
    """The partitioned kernel call for one config, with a vmap rule.

    ``custom_partitioning`` has no batching rule (``pallas_call`` has one), so ``jax.vmap`` of
    ``flash_attention`` would fail. Every operand and result of the kernels leads with the batch
    axis and batch rows are independent, so a vmapped axis folds into the batch: broadcast the
    unbatched operands, merge the two leading axes, run the kernel, split them again.
    ``stacked``: the kernels of one ``qkv`` operand (whose backward has one result).
    """
    kernel = _KERNELS[stacked, backward]

    @custom_vmap
    def call(*args: Array | None) -> tuple[Array, ...]:
        result = kernel(*args, cfg)
        return (result,) if stacked and backward else tuple(result)

    @call.def_vmap
    def rule(
        axis_size: int, in_batched: list[bool | None], *args: Array | None
    ) -> tuple[tuple[Array, ...], tuple[bool, ...]]:
        if stacked and cfg.qkv_bias and any(in_batched[3:6]):
            return _per_example_biases(backward, cfg, axis_size, in_batched, args)
        flat = [
            (
                None
                if x is None
                else (
                    x
                    if stacked and 3 <= i < 6 and not batched  # a slot's bias: no batch axis
                    else (x if batched else jnp.broadcast_to(x, (axis_size, *x.shape))).reshape(
                        (-1, *x.shape[1 + bool(batched) :])
                    )
                )
            )
            for i, (x, batched) in enumerate(zip(args, in_batched, strict=True))
        ]
        outs = call(*flat)  # through ``call`` again, so nested vmaps fold in turn
        return tuple(o.reshape((axis_size, -1, *o.shape[1:])) for o in outs), (True,) * len(outs)

    return call


def partitioned_forward(
    q: Array, k: Array, v: Array, q_ids: Array | None, kv_ids: Array | None, cfg: KernelConfig
) -> tuple[Array, Array]:
    """:func:`~tjx.kernels.flash_fwd.flash_forward` that SPMD partitions over batch and heads.

    Same arguments and results as ``flash_forward`` (padded inputs; ``(out, lse)``).
    """
    out, lse = _batchable(False, cfg)(q, k, v, q_ids, kv_ids)
    return out, lse


def partitioned_backward(
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
    """:func:`~tjx.kernels.flash_bwd.flash_backward` that SPMD partitions over batch and heads.

    Same arguments and results as ``flash_backward``; ``(dq, dk, dv)``.
    """
    dq, dk, dv = _batchable(True, cfg)(q, k, v, q_ids, kv_ids, out, lse, d_out)
    return dq, dk, dv


def _per_example_biases(
    backward: bool,
    cfg: KernelConfig,
    axis_size: int,
    in_batched: list[bool | None],
    args: tuple[Array | None, ...],
) -> tuple[tuple[Array, ...], tuple[bool, ...]]:
    """The stacked kernels vmapped over their biases too (a vmap over models): each example's
    biases added to its ``qkv`` first (a biased copy, which the kernels otherwise spare), then
    the kernels without biases, vmapped as usual."""

    def batched(x: Array, flag: bool | None) -> Array:
        return x if flag else jnp.broadcast_to(x, (axis_size, *x.shape))

    qkv = batched(args[0], in_batched[0])  # type: ignore[arg-type]
    bias = jnp.stack(
        [batched(x, f) for x, f in zip(args[3:6], in_batched[3:6], strict=True)],  # type: ignore[arg-type]
        axis=1,
    )  # [V, 3, h, d]
    with_bias = (qkv.astype(jnp.float32) + bias[:, None, None]).astype(qkv.dtype)
    plain = _batchable(backward, dataclasses.replace(cfg, qkv_bias=False), True)
    new = (with_bias, *args[1:3], None, None, None, *args[6:])
    axes = (0, *(0 if f else None for f in in_batched[1:3]), None, None, None)
    axes += tuple(0 if f else None for f in in_batched[6:])
    outs = jax.vmap(plain, in_axes=axes)(*new)
    return tuple(outs), (True,) * len(outs)


def partitioned_forward_qkv(
    qkv: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    biases: tuple[Array, Array, Array] | None,
    cfg: KernelConfig,
) -> tuple[Array, Array]:
    """:func:`~tjx.kernels.flash_fwd.flash_forward_qkv` that SPMD partitions over batch and
    heads; ``(out, lse)``. ``biases``: the slots' ``[h, d]`` biases (``cfg.qkv_bias``)."""
    qb, kb, vb = (None, None, None) if biases is None else biases
    out, lse = _batchable(False, cfg, True)(qkv, q_ids, kv_ids, qb, kb, vb)
    return out, lse


def partitioned_backward_qkv(
    qkv: Array,
    q_ids: Array | None,
    kv_ids: Array | None,
    biases: tuple[Array, Array, Array] | None,
    out: Array,
    lse: Array,
    d_out: Array,
    cfg: KernelConfig,
) -> Array:
    """:func:`~tjx.kernels.flash_bwd.flash_backward_qkv` that SPMD partitions over batch and
    heads; ``d_qkv`` in ``qkv``'s layout."""
    qb, kb, vb = (None, None, None) if biases is None else biases
    (d_qkv,) = _batchable(True, cfg, True)(qkv, q_ids, kv_ids, qb, kb, vb, out, lse, d_out)
    return d_qkv


# --------------------------------------------------------------------------------------------
# One layout for the operands of jax's cuDNN attention.
#
# jax's cuDNN attention (`jax.nn.dot_product_attention(implementation="cudnn")`, jax 0.10.2) is a
# custom_partitioning op too, but its Shardy rule gives every operand but q its own independent
# factors (``_fwd_shardy_rule``/``_bwd_shardy_rule`` in ``jax/_src/cudnn/
# fused_attention_stablehlo.py``: k, v, the lengths and offsets are ``…n`` placeholders), so
# Shardy may hand it k and v sharded unlike q (under FSDP: q and k over ``fsdp``, v replicated),
# and its partition callback then refuses them (``_check_qkv_bias_mask_spec``: "Query, key and
# value should have same sharding"); it also keeps the batch-leading lengths/offsets as they
# arrive, which the per-shard call needs split like q. `aligned` is an identity op with the flash
# kernels' rule (q, k, v share the batch and kv-head factors, sequence and head_dim replicated;
# every other operand shares the batch factor) whose partition puts every operand on the layout
# of `kernel_layout`: what it returns reaches the cuDNN call in one layout.


def _align_rule(mesh: Mesh, operands: Any, results: Any) -> SdyShardingRule:
    del results
    q, k = operands[0], operands[1]
    h = _heads(q.shape[2] // k.shape[2], mesh, k.shape[2])
    kv = ArrayMapping("b", "t", "n", "d")
    mappings = [ArrayMapping("b", "s", h, "d"), kv, kv]
    # Other operands: batch first, their own (replicated) factors after it.
    for i, x in enumerate(operands[3:]):
        mappings.append(ArrayMapping("b", *(f"x{i}_{j}" for j in range(1, len(x.shape)))))
    extra = tuple(f"x{i}_{j}" for i, x in enumerate(operands[3:]) for j in range(1, len(x.shape)))
    factors = ("s", "d", "t", *extra)
    if isinstance(h, CompoundFactor):
        groups = q.shape[2] // k.shape[2]
        return SdyShardingRule(
            tuple(mappings), tuple(mappings), need_replication_factors=factors, g=groups
        )
    return SdyShardingRule(tuple(mappings), tuple(mappings), need_replication_factors=factors)


def _align_shardings(mesh: Mesh, args: Any) -> Shardings:
    batch, heads = kernel_layout(mesh, args[0], args[1])
    qkv, _, _ = _specs(mesh, batch, heads)
    rows = [NamedSharding(mesh, PartitionSpec(_entry(batch))) for _ in args[3:]]
    return (qkv, qkv, qkv, *rows)


def _align_infer(mesh: Mesh, args: Any, result: Any) -> Shardings:
    del result
    return _align_shardings(mesh, args)


def _align_partition(
    mesh: Mesh, args: Any, result: Any
) -> tuple[Mesh, Callable[..., tuple[Array, ...]], Shardings, Shardings]:
    del result
    shardings = _align_shardings(mesh, args)
    return mesh, lambda *xs: tuple(xs), shardings, shardings


def _identity(*xs: Array) -> tuple[Array, ...]:
    return tuple(xs)


_align_cp = _partitioned(_identity, (), _align_partition, _align_infer, _align_rule)


@jax.custom_vjp
def _align(*xs: Array) -> tuple[Array, ...]:
    return tuple(_align_cp(*xs))


def _align_fwd(*xs: Array) -> tuple[tuple[Array, ...], None]:
    return _align(*xs), None


def _align_bwd(_: None, cts: tuple[Array, ...]) -> tuple[Array | None, ...]:
    # An identity's cotangents are the output's (custom_partitioning has no autodiff rule); the
    # cuDNN backward call takes q, k, v as its residuals, already aligned.
    return tuple(cts)


_align.defvjp(_align_fwd, _align_bwd)


def aligned(q: Array, k: Array, v: Array, *rows: Array) -> tuple[Array, ...]:
    """``(q, k, v, *rows)`` unchanged, in the layout the flash kernels run under.

    For jax's cuDNN attention, whose SPMD partitioning needs q, k and v sharded alike (see the
    comment above). ``q`` ``[b, s, h, d]``, ``k``/``v`` ``[b, t, h_kv, d]``; each of ``rows``
    (segment ids, lengths) leads with the batch. On one device, an identity.
    """
    return tuple(_align(q, k, v, *rows))
