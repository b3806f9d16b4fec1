"""Optimizer state born sharded like its params (ZeRO under FSDP), never whole on one device."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
from jax.sharding import Mesh

from tjx.parallel.axis_rules import AxisRules
from tjx.parallel.sharding import state_shardings

__all__ = ["shard_opt_init"]

S = TypeVar("S")


def shard_opt_init(
    init_fn: Callable[[Any], S],
    params: Any,
    mesh: Mesh,
    rules: AxisRules,
    *,
    param_specs: Any | None = None,
) -> S:
    """``init_fn(params)`` with every slot that mirrors the params sharded like them.

    ``jax.eval_shape(init_fn, params)`` gives the state's shapes without allocating;
    :func:`~tjx.parallel.state_shardings` gives each slot with the params' structure (optax
    ``mu``/``nu``, momentum, ...) the params' shardings and replicates the rest (step counts,
    scalars); ``jax.jit(init_fn, out_shardings=...)`` then creates each array on its own shards.
    Initialising outside jit would first build every slot whole on one device, which is what
    FSDP is there to avoid.

    Parameters
    ----------
    init_fn : callable
        ``params -> state``, e.g. an optax ``GradientTransformation``'s ``init``.
    params : pytree
        The params (any placement; sharded ones are read where they are).
    mesh : Mesh
    rules : AxisRules
    param_specs : pytree, optional
        The params' logical specs (``nnx.get_partition_spec(params)`` as a plain tree, or a tree
        of ``PartitionSpec``); needed when ``params`` is a plain pytree, whose arrays carry no
        names (see :func:`~tjx.parallel.state_shardings`).

    Returns
    -------
    pytree
        The state ``init_fn`` returns, each array a ``jax.Array`` sharded over ``mesh``.
    """
    abstract = jax.eval_shape(init_fn, params)
    shardings = state_shardings(abstract, mesh, rules, param_specs=param_specs)
    return jax.jit(init_fn, out_shardings=shardings)(params)  # type: ignore[no-any-return]
