"""Shardings for params and optimizer state from logical-axis rules (batches: `batches`, whose
names are re-exported here).

Trees here are plain pytrees or pytrees of *variable-like* leaves: objects with ``get_metadata()``
and ``replace(value)`` such as ``flax.nnx.Variable`` (flax is not imported; the duck type is
enough). A variable's logical names are its value when that is a ``PartitionSpec`` (what
``nnx.get_partition_spec`` returns), else its ``out_sharding`` metadata (what
``nnx.with_partitioning`` sets); an unannotated array is replicated.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.parallel.axis_rules import AxisRules
from tjx.parallel.batches import (
    batch_sharding,
    batch_share,
    host_local_to_global,
    place_batch,
    shard_batch,
)

__all__ = [
    "batch_share",
    "batch_sharding",
    "host_local_to_global",
    "logical_specs",
    "logical_to_sharding",
    "on_mesh",
    "place_batch",
    "shard_batch",
    "init_scope",
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


#: XLA options of `shard_init`'s program, by platform. A GPU: no multi-output fusion, which
#: would merge the draws of every weight of one shape into a few huge kernels (they read the
#: same counters, one iota): the trainer's gpt2_small start compiled for an H100 took 55 s of
#: CPU, 33 of them ptxas, against 13.5 s without it (deviceless, jax 0.10.2's CUDA plugin,
#: 2026-11-28); it merges kernels only, each element's arithmetic stays. (A CPU's LLVM level 1
#: would compile tiny's start in 2.1 s of CPU instead of 3.5, but it vectorizes reductions
#: otherwise: a norm the optimizer's init takes then differs from the eager one in a last bit.)
INIT_OPTIONS: dict[str, dict[str, Any]] = {
    "gpu": {"xla_disable_hlo_passes": "multi_output_fusion"},
}
_GPU_PLATFORMS = ("gpu", "cuda", "rocm")


def init_settings(mesh: Mesh) -> tuple[dict[str, Any], bool]:
    """How `shard_init` compiles on ``mesh``'s devices (real or abstract): `INIT_OPTIONS`' XLA
    options, and whether the draws' Threefry hash is JAX's GPU kernel (one GPU: the trainer's
    gpt2_small start for an H100 13.5 → 4.8 s of CPU to compile, the hash no longer expanded
    into each draw's fusion; the same bits; 327 instead of 282 MiB of temporaries beside 1.4 GiB
    of state). Several GPUs keep XLA's own hash, which their partitioner splits (a kernel would
    draw each array whole on every device)."""
    platform = mesh.devices.flat[0].platform
    key = "gpu" if platform in _GPU_PLATFORMS else platform
    kernel = key == "gpu" and mesh.devices.size == 1
    return dict(INIT_OPTIONS.get(key, {})), kernel


#: JAX's switch that lowers the Threefry hash to its GPU kernel (jax 0.10 has it).
THREEFRY_KERNEL_SWITCH = "jax_threefry_gpu_kernel_lowering"


@contextlib.contextmanager
def _threefry_kernel(on: bool) -> Iterator[None]:
    """JAX's `THREEFRY_KERNEL_SWITCH` set to ``on`` inside (what programs traced and lowered
    there draw with), as it was after; a JAX without the switch draws with XLA's hash."""
    name = THREEFRY_KERNEL_SWITCH
    before = bool(getattr(jax.config, name, False))
    if on == before or not hasattr(jax.config, name):
        yield
        return
    jax.config.update(name, on)
    try:
        yield
    finally:
        jax.config.update(name, before)


@contextlib.contextmanager
def init_scope(mesh: Mesh) -> Iterator[None]:
    """What `shard_init` traces and compiles under: ``jax.set_mesh(mesh)`` (flax's eager
    sharding reads the mesh there) and `init_settings`' Threefry kernel switch. A trace of the
    same function made here (``jax.eval_shape``, to read what it builds) is the one `shard_init`
    then reuses: the function is traced once."""
    with jax.set_mesh(mesh), _threefry_kernel(init_settings(mesh)[1]):
        yield


def shard_init(
    create_fn: Callable[..., T],
    mesh: Mesh,
    rules: AxisRules,
    *args: Any,
    param_specs: Any | None = None,
    donate: bool = False,
) -> T:
    """Create params (or an nnx Module, or a whole train state) with one compiled program,
    directly sharded — never whole on one device.

    ``jax.eval_shape(create_fn, *args)`` gives the abstract result without allocating; its
    logical specs become NamedShardings (:func:`state_shardings`); ``jax.jit(create_fn,
    out_shardings=...)(*args)`` then materialises every array on its own shards, on any mesh
    (one device too: one program instead of one per initializer and shape). With
    ``jax_threefry_partitionable`` (JAX's default) the draws are the ones ``create_fn()`` makes
    eagerly; an initializer that scales its draw (``normal(0.02)``) must keep XLA from folding
    that scale into the draw's own (tjx.nn's initializers do) to be equal bit for bit. The
    program is compiled for a short compile (`init_settings`).

    Parameters
    ----------
    create_fn : callable
        Returns a pytree: a param dict, an ``nnx.Module`` (a pytree in flax 0.12), a train
        state. It runs traced, in `init_scope` (under ``jax.set_mesh(mesh)``). flax's eager
        sharding (on by default in flax 0.12) also needs the logical → mesh rules: either call
        ``shard_init`` inside ``nnx.logical_axis_rules(rules.flax_rules())`` or build the module
        under ``nnx.use_eager_sharding(False)`` (the shardings are applied here either way).
    mesh : Mesh
    rules : AxisRules
    *args
        ``create_fn``'s arguments (arrays: e.g. weights read from a checkpoint, placed on the
        mesh already, that the result holds).
    param_specs : pytree, optional
        The params' logical specs, for a result whose params are a plain pytree (a train state):
        see :func:`state_shardings`.
    donate : bool
        The arguments' buffers are given to the program, which reuses them for arrays of their
        shape (weights read from a checkpoint: no second copy of them at once); the arguments
        cannot be read after.

    Returns
    -------
    The result of ``create_fn(*args)``, its arrays sharded per the rules.
    """
    options = init_settings(mesh)[0]
    donated = tuple(range(len(args))) if donate else ()
    with init_scope(mesh), warnings.catch_warnings():
        # A donated array the result holds otherwise (concatenated, cast) is freed, not reused:
        # JAX warns of it, and nothing is wrong.
        warnings.filterwarnings("ignore", message="Some donated buffers were not usable")
        abstract = jax.eval_shape(create_fn, *args)
        shardings = state_shardings(abstract, mesh, rules, param_specs=param_specs)
        init = jax.jit(
            create_fn,
            out_shardings=shardings,
            compiler_options=options or None,
            donate_argnums=donated,
        )
        return init(*args)  # type: ignore[no-any-return]


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
