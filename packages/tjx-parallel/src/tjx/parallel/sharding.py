"""Shardings for params and optimizer state from logical-axis rules (batches: `batches`, whose
names are re-exported here).

Trees here are plain pytrees or pytrees of *variable-like* leaves: objects with ``get_metadata()``
and ``replace(value)`` such as ``flax.nnx.Variable`` (flax is not imported; the duck type is
enough). A variable's logical names are its value when that is a ``PartitionSpec`` (what
``nnx.get_partition_spec`` returns), else its ``out_sharding`` metadata (what
``nnx.with_partitioning`` sets); an unannotated array is replicated.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.parallel.batches import (
    batch_sharding,
    batch_share,
    host_local_to_global,
    place_batch,
    shard_batch,
)
from tjx.parallel.rules import AxisRules

__all__ = [
    "batch_share",
    "batch_sharding",
    "host_local_to_global",
    "logical_specs",
    "logical_to_sharding",
    "on_mesh",
    "place_batch",
    "shard_batch",
    "shard_init",
    "state_shardings",
    "with_logical_constraint",
]

T = TypeVar("T")
_METADATA_KEYS = ("out_sharding", "sharding_names", "sharding")


def _is_spec(x: Any) -> bool:
    return isinstance(x, PartitionSpec)


def _is_variable(x: Any) -> bool:
    return callable(getattr(x, "get_metadata", None)) and callable(getattr(x, "replace", None))


def _is_spec_or_variable(x: Any) -> bool:
    return _is_spec(x) or _is_variable(x)


def _value(variable: Any) -> Any:
    getter = getattr(variable, "get_value", None)  # flax 0.12 deprecates `.value`
    return getter() if callable(getter) else variable.value


def _leaf_spec(x: Any) -> PartitionSpec:
    """Logical PartitionSpec of one leaf (a spec, a variable-like, or an array)."""
    if _is_spec(x):
        return x
    if _is_variable(x):
        value = _value(x)
        if _is_spec(value):
            return value
        metadata = x.get_metadata()
        for key in _METADATA_KEYS:
            names = metadata.get(key)
            if names:
                return names if _is_spec(names) else PartitionSpec(*names)
    return PartitionSpec()


def _leaf_shape(x: Any) -> tuple[int, ...] | None:
    if _is_variable(x):
        x = _value(x)
    shape = getattr(x, "shape", None)
    return None if shape is None else tuple(shape)


def _rewrap(old: Any, new: Any) -> Any:
    """Put ``new`` where ``old`` was, keeping a variable wrapper (and its metadata) if any."""
    return old.replace(new) if _is_variable(old) else new


def logical_specs(tree: Any) -> Any:
    """The logical PartitionSpec of every leaf of ``tree`` (variable wrappers kept).

    Parameters
    ----------
    tree : pytree
        Arrays, ``ShapeDtypeStruct``s (from ``jax.eval_shape``), PartitionSpecs or variable-likes.

    Returns
    -------
    pytree
        Same structure, each leaf replaced by its logical ``PartitionSpec`` (``P()`` if none).
    """
    return jax.tree.map(lambda x: _rewrap(x, _leaf_spec(x)), tree, is_leaf=_is_spec_or_variable)


def logical_to_sharding(
    specs: Any, mesh: Mesh, rules: AxisRules, *, shapes: Any | None = None
) -> Any:
    """Map a tree of logical PartitionSpecs to a tree of :class:`NamedSharding` on ``mesh``.

    Parameters
    ----------
    specs : pytree
        Leaves are PartitionSpecs of logical names, e.g. ``nnx.get_partition_spec(nnx.state(m))``
        (whose variables hold specs; the wrappers are kept, like ``nnx.get_named_sharding``).
    mesh : Mesh
    rules : AxisRules
    shapes : pytree, optional
        Same structure with arrays / ``ShapeDtypeStruct``s; enables the divisibility check (a
        non-divisible dimension is replicated with a warning, or raises if ``rules.strict``).
    """

    def one(spec: PartitionSpec, shape: tuple[int, ...] | None) -> NamedSharding:
        return NamedSharding(mesh, rules.to_mesh_spec(spec, mesh, shape))

    if shapes is None:
        return jax.tree.map(lambda s: one(s, None), specs, is_leaf=_is_spec)
    return jax.tree.map(lambda s, x: one(s, _leaf_shape(x)), specs, shapes, is_leaf=_is_spec)


def _shard_leaf(x: Any, spec: PartitionSpec, mesh: Mesh, rules: AxisRules) -> Any:
    return _rewrap(x, NamedSharding(mesh, rules.to_mesh_spec(spec, mesh, _leaf_shape(x))))


def state_shardings(
    tree: Any, mesh: Mesh, rules: AxisRules, *, param_specs: Any | None = None
) -> Any:
    """Shardings for a whole training state: params, optimizer state, step, RNG ….

    Parameters
    ----------
    tree : pytree
        Concrete or abstract (``jax.eval_shape``) state.
    mesh : Mesh
    rules : AxisRules
    param_specs : pytree, optional
        Logical specs of the params (``nnx.get_partition_spec(params)`` or a plain tree of
        PartitionSpecs). Every subtree of ``tree`` with the params' structure and ranks — the
        params themselves and optimizer-state slots that mirror them (optax ``mu``/``nu``,
        momentum, …) — gets the params' shardings, so optimizer state is sharded like its params
        (ZeRO-3 under FSDP). Needed for plain pytrees; for flax ``nnx.State`` it is optional,
        because optax's ``tree.map`` over params keeps each variable's metadata in ``mu``/``nu``.

    Returns
    -------
    pytree
        Same structure as ``tree`` with a :class:`NamedSharding` per array (inside the variable
        wrappers). Leaves matched by neither (step counters, factored or scalar statistics) are
        sharded by their own metadata, else replicated.
    """
    match: Callable[[Any], bool] = lambda x: False
    ref_leaves: list[PartitionSpec] = []
    if param_specs is not None:
        collapsed = jax.tree.map(_leaf_spec, param_specs, is_leaf=_is_spec_or_variable)
        ref_def: Any = jax.tree.structure(collapsed, is_leaf=_is_spec)
        ref_leaves = jax.tree.leaves(collapsed, is_leaf=_is_spec)

        def match(x: Any) -> bool:
            if _is_spec(x) or jax.tree.structure(x, is_leaf=_is_variable) != ref_def:
                return False
            shapes = [_leaf_shape(v) for v in jax.tree.leaves(x, is_leaf=_is_variable)]
            return all(
                s is not None and len(s) >= len(p) for s, p in zip(shapes, ref_leaves, strict=False)
            )

    def one(x: Any) -> Any:
        if match(x):
            leaves, treedef = jax.tree.flatten(x, is_leaf=_is_variable)
            shards = [
                _shard_leaf(v, p, mesh, rules) for v, p in zip(leaves, ref_leaves, strict=False)
            ]
            return jax.tree.unflatten(treedef, shards)
        return _shard_leaf(x, _leaf_spec(x), mesh, rules)

    return jax.tree.map(one, tree, is_leaf=lambda x: _is_variable(x) or match(x))


def shard_init(create_fn: Callable[[], T], mesh: Mesh, rules: AxisRules) -> T:
    """Create params (or an nnx Module) directly sharded — never whole on one device.

    ``jax.eval_shape(create_fn)`` gives the abstract result without allocating; its logical
    specs become NamedShardings (:func:`state_shardings`); ``jax.jit(create_fn,
    out_shardings=...)`` then materialises every array on its own shards. On a mesh of one
    device ``create_fn`` runs eagerly instead (no whole-model program to compile: XLA's GPU
    compiler takes minutes over one), its result placed with the same shardings; the numbers
    are the same draws, up to the last bits of a fused multiply-add.

    Parameters
    ----------
    create_fn : callable
        No-argument function returning a pytree: a param dict, or an ``nnx.Module`` (a pytree in
        flax 0.12). It runs under ``jax.set_mesh(mesh)``. flax's eager sharding (on by default
        in flax 0.12) also needs the logical → mesh rules: either call ``shard_init`` inside
        ``nnx.logical_axis_rules(rules.flax_rules())`` or build the module under
        ``nnx.use_eager_sharding(False)`` (the shardings are applied here either way).
    mesh : Mesh
    rules : AxisRules

    Returns
    -------
    The result of ``create_fn()``, its arrays sharded per the rules.
    """
    with jax.set_mesh(mesh):  # flax's eager sharding reads the mesh from here
        abstract = jax.eval_shape(create_fn)
        shardings = state_shardings(abstract, mesh, rules)
        if mesh.devices.size == 1:
            # One device: nothing to keep off a single device, so the arrays are made eagerly
            # (each initializer a small program, cached by shape) and placed. One jitted
            # program of a whole model's initializers is what XLA's GPU compiler takes minutes
            # over: it fuses the random-number generation of all same-shaped weights into a few
            # huge kernels (gpt2_small 107 s, gpt2_medium over 200 s on an H100; eagerly 6.5 s).
            return jax.device_put(create_fn(), shardings)  # type: ignore[no-any-return]
        return jax.jit(create_fn, out_shardings=shardings)()  # type: ignore[no-any-return]


def on_mesh(tree: T, mesh: Mesh) -> T:
    """Every leaf of ``tree`` on ``mesh``: a leaf already sharded over ``mesh`` stays as it is,
    every other one (a step counter, a scalar that jit left on one device, a host array) is
    replicated over it.

    A jitted step whose inputs live on two device sets fails to compile; this puts a whole train
    state on the one device set of the mesh, without moving what is already placed.

    Parameters
    ----------
    tree : pytree
        Arrays (jax or numpy) and scalars.
    mesh : Mesh

    Returns
    -------
    pytree
        Same structure, every leaf a ``jax.Array`` with a ``NamedSharding`` over ``mesh``.
    """
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x: Any) -> Any:
        sharding = getattr(x, "sharding", None)
        if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
            return x
        return jax.device_put(x, replicated)

    return jax.tree.map(one, tree)  # type: ignore[no-any-return]


def with_logical_constraint(
    x: jax.Array, logical: PartitionSpec, mesh: Mesh, rules: AxisRules
) -> jax.Array:
    """``jax.lax.with_sharding_constraint`` with logical names, e.g. ``P("batch", "length",
    "embed")`` for activations inside a jitted step.

    Parameters
    ----------
    x : Array
        An array inside ``jit``.
    logical : PartitionSpec
        Logical names per dimension.
    mesh : Mesh
    rules : AxisRules

    Returns
    -------
    Array
        ``x`` with the sharding constraint.
    """
    spec = rules.to_mesh_spec(logical, mesh, x.shape)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))
