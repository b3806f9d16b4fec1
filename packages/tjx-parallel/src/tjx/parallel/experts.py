"""Expert parallelism: an MoE layer's experts split over the ``expert`` mesh axis, the tokens'
assignments sent to the devices of their experts by all-to-all and back.

This package knows meshes and logical axes, not models: `expert_parallel` returns an
`ExpertParallel` whose `ExpertParallel.run` takes the model's per-device expert computation
(tjx-nn's ``moe_dispatch.dropless`` / ``capacity``) and runs it under ``shard_map`` over the
whole mesh, one device's tokens and its own experts at a time, handing it an `ExpertComm` for
the collectives. tjx-nn finds it through ``tjx.nn.expert_parallel_scope(ep)``.

Inside the ``shard_map``:

- tokens ``[b, s, ...]`` are split as the rules split ``batch`` (``data``, ``fsdp``, ``expert``:
  outside MoE layers the expert axis is data parallel) and ``length``;
- expert weights ``[experts, ...]`` are split over ``expert`` (logical ``experts``) and their
  hidden axis as the rules split ``mlp`` (tensor parallelism: the partial outputs are summed,
  `ExpertComm.reduce_partial`); their ``embed`` axis is whole (an FSDP-split weight is gathered
  at the ``shard_map``'s edge, as MaxText's "mlp_no_fsdp" does);
- `ExpertComm.exchange` sends each device's expert-sorted rows to the expert's device: a
  ``ragged_all_to_all`` (only the real rows move; GPU and TPU), or, where XLA has none (CPU:
  "UNIMPLEMENTED: ragged-all-to-all"), an ``all_to_all`` of fixed ``slot``-row blocks. Both
  leave source ``i``'s rows at ``i·slot`` of the receiving buffer, so the computation after it is
  the same; the capacity path's ``[b, E, C, d]`` buffer moves by `ExpertComm.all_to_all`.

Why ``shard_map`` and not sharding constraints: the dropless exchange is ragged (how many rows go
where is data), which no sharding of a fixed-shape array expresses; written out, both paths say
exactly which collectives run (tests-integration's test_expert_parallel.py reads them from the
compiled program).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh, PartitionSpec

from tjx.parallel.axis_rules import AxisRules

__all__ = [
    "EXPERT_AXIS",
    "TRANSPORTS",
    "ExpertComm",
    "ExpertParallel",
    "check_expert_split",
    "expert_parallel",
]

#: The mesh axis experts are split over.
EXPERT_AXIS = "expert"
#: How `ExpertComm.exchange` moves rows: ``auto`` (``ragged`` unless the mesh's devices are
#: CPUs, which have no ragged all-to-all), ``ragged`` or ``padded``.
TRANSPORTS = ("auto", "ragged", "padded")

Array = jax.Array


def check_expert_split(num_experts: int, mesh: Mesh, *, section: str = "MeshConfig") -> None:
    """Raise a one-line ``ValueError`` unless the ``expert`` axis of ``mesh`` divides the
    model's ``num_experts`` (each device must hold an equal share of whole experts; 0, a model
    without experts, passes). The message names the field as ``section.expert`` (an app's key)."""
    size = int(dict(mesh.shape).get(EXPERT_AXIS, 1))
    if num_experts % size:
        raise ValueError(
            f"{section}.expert: {size} devices do not divide the model's num_experts "
            f"({num_experts}); allowed: a divisor of {num_experts}"
        )


@dataclasses.dataclass(frozen=True)
class ExpertComm:
    """The collectives of one MoE layer's experts, inside `ExpertParallel.run`'s ``shard_map``.

    Attributes
    ----------
    axis : str
        The expert mesh axis.
    size : int
        Its size (devices holding a share of the experts).
    partial : tuple of str
        Mesh axes splitting the experts' hidden (``mlp``) axis: outputs are partial sums there.
    transport : str
        ``"ragged"`` or ``"padded"`` (see the module's docstring).
    """

    axis: str
    size: int
    partial: tuple[str, ...] = ()
    transport: str = "padded"

    def index(self) -> Array:
        """This device's position on the expert axis (it holds experts ``[i·E_l, (i+1)·E_l)``)."""
        return lax.axis_index(self.axis)

    def all_gather(self, x: Array) -> Array:
        """``[size, ...]``: ``x`` of every device of the expert axis."""
        return lax.all_gather(x, self.axis)

    def all_to_all(self, x: Array, *, split_axis: int, concat_axis: int) -> Array:
        """Block ``j`` of ``x`` along ``split_axis`` to device ``j``; received blocks joined along
        ``concat_axis`` in source order (``lax.all_to_all``, tiled)."""
        return lax.all_to_all(x, self.axis, split_axis, concat_axis, tiled=True)

    def reduce_partial(self, y: Array) -> Array:
        """Sum the partial outputs of a hidden axis split over ``partial`` (identity if none)."""
        return lax.psum(y, self.partial) if self.partial else y

    def exchange(self, rows: Array, send: Array, slot: int) -> tuple[Array, Array]:
        """Send ``rows`` ``[m, d]`` in consecutive blocks: ``send[j]`` rows to device ``j``.

        Parameters
        ----------
        rows : Array
            ``[m, d]``, the rows for device 0 first, then device 1, ...
        send : Array
            int32 ``[size]`` (summing to ``m``).
        slot : int
            The most rows one device sends another (the receiving buffer's block).

        Returns
        -------
        (Array, Array)
            The received ``[size·slot, d]`` (source ``i``'s rows at ``i·slot``, zeros after
            them) and the int32 ``[size]`` counts received from each source.
        """
        send = send.astype(jnp.int32)
        offsets = jnp.cumsum(send) - send
        recv = self.all_to_all(send, split_axis=0, concat_axis=0)
        if self.transport == "ragged":
            out = jnp.zeros((self.size * slot, rows.shape[-1]), rows.dtype)
            at = jnp.full((self.size,), self.index() * slot, jnp.int32)
            return (
                lax.ragged_all_to_all(rows, out, offsets, send, at, recv, axis_name=self.axis),
                recv,
            )
        r = jnp.arange(slot, dtype=jnp.int32)
        valid = r[None, :] < send[:, None]
        source = _take(rows, offsets[:, None] + r[None, :])  # [size, slot, d]
        blocks = jnp.where(valid[..., None], source, jnp.zeros((), rows.dtype))
        got = self.all_to_all(blocks, split_axis=0, concat_axis=0)
        return got.reshape(self.size * slot, rows.shape[-1]), recv

    def exchange_back(self, buf: Array, send: Array, recv: Array, slot: int, m: int) -> Array:
        """The inverse of `exchange`: ``buf`` ``[size·slot, d]`` (rows for source ``i`` at
        ``i·slot``, ``recv[i]`` of them) back to the ``[m, d]`` rows each source sent."""
        send, recv = send.astype(jnp.int32), recv.astype(jnp.int32)
        offsets = jnp.cumsum(send) - send
        if self.transport == "ragged":
            theirs = self.all_to_all(offsets, split_axis=0, concat_axis=0)  # where i's rows began
            out = jnp.zeros((m, buf.shape[-1]), buf.dtype)
            starts = jnp.arange(self.size, dtype=jnp.int32) * slot
            return lax.ragged_all_to_all(buf, out, starts, recv, theirs, send, axis_name=self.axis)
        back = self.all_to_all(buf.reshape(self.size, slot, -1), split_axis=0, concat_axis=0)
        p = jnp.arange(m, dtype=jnp.int32)
        dest = jnp.searchsorted(jnp.cumsum(send), p, side="right")
        dest = jnp.minimum(dest, self.size - 1)
        return back[dest, jnp.clip(p - offsets[dest], 0, slot - 1)]


def _is_names(x: Any) -> bool:
    """A tuple of logical axis names (a leaf of ``w_names``, not a NamedTuple of them)."""
    return isinstance(x, tuple) and all(n is None or isinstance(n, str) for n in x)


def _take(rows: Array, index: Array) -> Array:
    """``rows[index]`` with indices clipped into range (an empty ``rows`` gives zeros)."""
    if rows.shape[0] == 0:
        return jnp.zeros((*index.shape, rows.shape[-1]), rows.dtype)
    return rows[jnp.clip(index, 0, rows.shape[0] - 1)]


@dataclasses.dataclass(frozen=True)
class ExpertParallel:
    """Runs an MoE layer's experts over a mesh (see the module's docstring; `expert_parallel`)."""

    mesh: Mesh
    rules: AxisRules
    transport: str = "auto"

    def comm(self, w_specs: Any) -> ExpertComm:
        """The `ExpertComm` for weights laid out by ``w_specs`` (mesh PartitionSpecs)."""
        size = int(dict(self.mesh.shape).get(EXPERT_AXIS, 1))
        partial: set[str] = set()
        for spec in jax.tree.leaves(w_specs, is_leaf=lambda x: isinstance(x, PartitionSpec)):
            for entry in list(spec)[1:]:
                partial.update(
                    () if entry is None else (entry,) if isinstance(entry, str) else entry
                )
        transport = self.transport
        if transport == "auto":
            platform = self.mesh.devices.flat[0].platform
            transport = "padded" if platform == "cpu" else "ragged"
        return ExpertComm(EXPERT_AXIS, size, tuple(sorted(partial)), transport)

    def run(
        self,
        fn: Callable[..., tuple[Array, Array]],
        x: Array,
        experts: Array,
        weights: Array,
        w: Any,
        w_names: Any,
    ) -> tuple[Array, Array]:
        """``fn(x, experts, weights, w, comm) -> (y, dropped)`` on each device's share.

        Parameters
        ----------
        fn : callable
            The per-device computation: local tokens ``[b_l, s_l, d]``, their choices and
            weights ``[b_l, s_l, k]``, this device's experts ``w`` and the `ExpertComm`; returns
            the outputs ``[b_l, s_l, d]`` and an int32 count of dropped assignments.
        x, experts, weights : Array
            ``[b, s, d]`` tokens and the router's ``[b, s, k]`` choices (global expert ids) and
            weights.
        w : pytree
            Every expert's weights, each with a leading ``experts`` axis (None leaves: absent).
        w_names : pytree
            Like ``w``: each weight's logical axis names (``("experts", "embed", "mlp")``, ...).

        Returns
        -------
        (Array, Array)
            ``[b, s, d]`` outputs and the dropped count summed over the devices.

        Raises
        ------
        ValueError
            The expert axis does not divide the experts (`check_expert_split`), or the hidden
            axis is split over an axis the tokens are split over too.
        """
        mesh, rules = self.mesh, self.rules
        num_experts = int(jax.tree.leaves(w)[0].shape[0])
        check_expert_split(num_experts, mesh)
        tokens = rules.to_mesh_spec(PartitionSpec("batch", "length"), mesh, x.shape[:2])
        tokens = PartitionSpec(*tokens, *[None] * (2 - len(tokens)))
        token_axes = {
            a for e in tokens if e is not None for a in ((e,) if isinstance(e, str) else e)
        }
        inner = rules.replace(embed=None)  # gathered at the edge: the experts read whole rows
        w_specs = jax.tree.map(
            lambda names, a: inner.to_mesh_spec(PartitionSpec(*names), mesh, a.shape),
            w_names,
            w,
            is_leaf=_is_names,
        )
        comm = self.comm(w_specs)
        clash = token_axes.intersection(comm.partial)
        if clash:
            raise ValueError(
                f"expert parallelism: the experts' hidden axis is split over {sorted(clash)}, "
                "which splits the tokens too; map logical 'mlp' to the tensor axis only"
            )

        def local(x: Array, experts: Array, weights: Array, w: Any) -> tuple[Array, Array]:
            y, dropped = fn(x, experts, weights, w, comm)
            return y, lax.psum(dropped, tuple(sorted(token_axes))) if token_axes else dropped

        mapped = jax.shard_map(
            local,
            mesh=mesh,
            in_specs=(
                PartitionSpec(*tokens, None),
                PartitionSpec(*tokens, None),
                PartitionSpec(*tokens, None),
                w_specs,
            ),
            out_specs=(PartitionSpec(*tokens, None), PartitionSpec()),
        )
        return mapped(x, experts, weights, w)  # type: ignore[no-any-return]


def expert_parallel(mesh: Mesh, rules: AxisRules, *, transport: str = "auto") -> ExpertParallel:
    """What ``tjx.nn.expert_parallel_scope`` takes: MoE experts run over ``mesh``'s ``expert``
    axis (logical names mapped by ``rules``).

    Parameters
    ----------
    mesh : Mesh
        A mesh with an ``expert`` axis (`make_mesh`'s; size 1: every device holds every expert,
        the exchange is skipped).
    rules : AxisRules
        The run's logical-axis rules (``experts`` → ``expert``: every preset).
    transport : str
        One of `TRANSPORTS`.

    Returns
    -------
    ExpertParallel
    """
    if transport not in TRANSPORTS:
        raise ValueError(
            f"expert_parallel: transport must be one of {TRANSPORTS}; got {transport!r}"
        )
    if rules.mesh_axes("experts") not in ((EXPERT_AXIS,), ()):
        raise ValueError(
            f"expert_parallel: the rules map 'experts' to {rules.mesh_axes('experts')}; "
            f"expert parallelism needs {EXPERT_AXIS!r}"
        )
    return ExpertParallel(mesh, rules, transport)
