"""Batches on the mesh: rows over the batch axes ``("data", "fsdp", "expert")``, sequences over
``context``.

A batch's leading dimension is split over the batch axes; with a ``context`` axis larger than 1,
its sequence dimension (1) is put in the context-balanced layout
(:mod:`tjx.parallel.context_layout`) and split over ``context``. :func:`batch_share` says which
rows each process loads.
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.parallel.context_layout import balance, check_context_split, context_ways
from tjx.parallel.mesh import CONTEXT_AXIS, batch_axes, batch_label, batch_ways

__all__ = [
    "batch_share",
    "batch_sharding",
    "host_local_to_global",
    "place_batch",
    "shard_batch",
]

T = TypeVar("T")


def batch_sharding(mesh: Mesh, ndim: int = 1) -> NamedSharding:
    """Leading dimension over the batch axes ``("data", "fsdp", "expert")``, the sequence
    (dimension 1) over ``context`` when that axis is larger than 1, the rest replicated.

    Parameters
    ----------
    mesh : Mesh
        A mesh (its batch axes: `batch_axes`; optionally ``context``).
    ndim : int
        Rank of the array (0 gives a replicated sharding).

    Returns
    -------
    NamedSharding
    """
    if ndim == 0:
        return NamedSharding(mesh, PartitionSpec())
    if ndim >= 2 and context_ways(mesh) > 1:
        return NamedSharding(mesh, PartitionSpec(batch_axes(mesh), CONTEXT_AXIS))
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh)))


def batch_share(mesh: Mesh) -> tuple[int, int]:
    """``(index, count)``: which share of every global batch this process loads.

    Processes whose devices hold the same batch rows (they differ only along ``context``,
    ``tensor`` or ``pipeline``) load the same rows: a data loader built with
    ``process_index=index, process_count=count`` gives each process what
    :func:`host_local_to_global` expects. Without a context axis spanning processes this is
    ``(jax.process_index(), jax.process_count())`` up to the order of the shares.

    Parameters
    ----------
    mesh : Mesh

    Returns
    -------
    (int, int)
        This process's share and the number of distinct shares.
    """
    names = list(mesh.axis_names)
    batch_dims = [names.index(a) for a in batch_axes(mesh)]
    rows: dict[int, set[tuple[int, ...]]] = {}
    for where, device in np.ndenumerate(mesh.devices):
        rows.setdefault(device.process_index, set()).add(tuple(where[i] for i in batch_dims))
    shares = sorted({tuple(sorted(r)) for r in rows.values()})
    mine = tuple(sorted(rows.get(jax.process_index(), set())))
    return shares.index(mine), len(shares)


def _batch_size_check(name: str, leading: int, mesh: Mesh, scale: int = 1) -> None:
    size = batch_ways(mesh)
    if (leading * scale) % size != 0:
        raise ValueError(
            f"batch leaf {name}: leading dimension {leading * scale} is not divisible by "
            f"{batch_label(mesh)} = {size} (mesh {dict(mesh.shape)})"
        )


def _sequence_layout(name: str, x: Any, mesh: Mesh) -> Any:
    """A leaf of rank >= 2 with its sequence (dimension 1) in the context-balanced layout
    (:mod:`tjx.parallel.context_layout`), after checking that it splits; others as they are."""
    ways = context_ways(mesh)
    if ways == 1 or x.ndim < 2:
        return x
    check_context_split(x.shape[1], ways, f"batch leaf {name} sequence length")
    return balance(x, ways)


def shard_batch(batch: T, mesh: Mesh) -> T:
    """Place a *global* batch (the same on every process) with its leading dim over (data, fsdp).

    Scalars are replicated. A leading dimension not divisible by the batch axes' size → ValueError.
    With a ``context`` axis larger than 1, every leaf of rank >= 2 has its sequence (dimension
    1) put in the context-balanced layout and split over ``context``; a sequence that does not
    split into ``2 × context`` chunks → ValueError. For per-process batches in multi-host runs
    use :func:`host_local_to_global`.

    Parameters
    ----------
    batch : pytree
        Arrays with the global batch as leading dimension (numpy or jax).
    mesh : Mesh

    Returns
    -------
    pytree
        Same structure, ``jax.Array``s sharded over the batch axes.
    """

    def one(path: Any, x: Any) -> Any:
        x = x if hasattr(x, "shape") else np.asarray(x)
        if x.ndim:
            _batch_size_check(jax.tree_util.keystr(path), x.shape[0], mesh)
        x = _sequence_layout(jax.tree_util.keystr(path), x, mesh)
        return jax.device_put(x, batch_sharding(mesh, x.ndim))

    return jax.tree_util.tree_map_with_path(one, batch)  # type: ignore[no-any-return]


def host_local_to_global(batch: T, mesh: Mesh) -> T:
    """Assemble global arrays from each process's own slice of the batch.

    Each process passes its local rows (``PackedLoader(process_index=..., process_count=...)``
    with :func:`batch_share`'s numbers), whole sequences; the global batch has as many times more
    rows as there are shares, laid out over the batch axes, sequences (in the
    context-balanced layout) over ``context`` (``jax.make_array_from_process_local_data``; a
    process takes from its rows the part of each sequence its devices hold).

    Parameters
    ----------
    batch : pytree
        This process's rows (numpy arrays, leading dim = local batch).
    mesh : Mesh

    Returns
    -------
    pytree
        Global ``jax.Array``s, leading dim = local batch × process count.

    Raises
    ------
    ValueError
        A scalar leaf, a global batch not divisible by the batch axes' size, or a sequence that does
        not split into ``2 × context`` chunks.
    """
    _, shares = batch_share(mesh)

    def one(path: Any, x: Any) -> Any:
        x = np.asarray(x)
        name = jax.tree_util.keystr(path)
        if x.ndim == 0:
            raise ValueError(f"batch leaf {name} is a scalar; need [B, ...]")
        _batch_size_check(name, x.shape[0], mesh, shares)
        x = _sequence_layout(name, x, mesh)
        global_shape = (x.shape[0] * shares, *x.shape[1:])
        return jax.make_array_from_process_local_data(batch_sharding(mesh, x.ndim), x, global_shape)

    return jax.tree_util.tree_map_with_path(one, batch)  # type: ignore[no-any-return]


def place_batch(batch: T, mesh: Mesh) -> T:
    """This host's batch as global arrays on the mesh, in a run of one process or of many.

    One process: :func:`shard_batch` (the host's batch is the global batch; scalars replicated).
    Several: :func:`host_local_to_global` (each process passes its own rows). A loop that feeds
    its batches through this one call runs unchanged on one host and on many.

    Parameters
    ----------
    batch : pytree
        This process's rows (numpy or jax arrays, leading dim = the batch on this process).
    mesh : Mesh

    Returns
    -------
    pytree
        Same structure, global ``jax.Array``s sharded over the batch axes.

    Raises
    ------
    ValueError
        A global batch not divisible by the batch axes' size; with several processes, a scalar leaf.
    """
    if jax.process_count() == 1:
        return shard_batch(batch, mesh)
    return host_local_to_global(batch, mesh)
