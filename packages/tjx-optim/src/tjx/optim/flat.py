"""An elementwise optimizer over a few flat buffers instead of one set of kernels per leaf.

Every stage of an optax chain maps over the parameter tree, so on a GPU each stage costs a kernel
(or two: a big reduction is split in two) per leaf: gpt2_small's 148 leaves made 2,171 kernels a
step on an H100, 879 of them tiny reductions (the clip norm, the finite test, the reported norms,
~5 µs each whatever their size). PyTorch's fused and foreach AdamW answer this by updating lists
of tensors at once; here the same idea is an optax wrapper: the gradients and parameters are
concatenated into one flat vector per group (weight decay or not × dtype), the unchanged chain
runs over that tree of two leaves, and the updates are cut back into the parameters' shapes.
Concatenating costs one pass over the gradients and parameters (bytes, not launches).

Only elementwise optimizers give the same result flat as per leaf (`FLAT_OPTIMIZERS`): LAMB's
trust ratio, Adafactor's factored moments and Muon's orthogonalisation read each matrix's shape.
The gradient norm is summed in another order, so clipped updates agree to float32 rounding, not
bitwise. The parameters must be whole on each device (one device or data parallelism): a
parameter sharded over devices would be gathered to concatenate.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from tjx.optim.config import ELEMENTWISE_OPTIMIZERS

__all__ = [
    "FLAT_OPTIMIZERS",
    "FlatParams",
    "FlatState",
    "FlatLayout",
    "flat_groups",
    "to_flat_state",
    "to_per_leaf_state",
]

#: Optimizers whose update of an element reads only that element's gradient, state and value.
FLAT_OPTIMIZERS = ELEMENTWISE_OPTIMIZERS

#: ``build(mask)``: the chain to run over the groups, its weight decay masked by ``mask`` (a dict
#: of Python bools keyed like the groups).
ChainBuilder = Callable[[dict[str, bool]], optax.GradientTransformation]


class FlatState(NamedTuple):
    """The wrapped chain's state over the flat groups, and the norms of the step that made it.

    ``update_norm`` and ``param_norm`` (of the parameters after the update) are computed on the
    flat buffers, two reductions in all, so `step_report` need not map a norm over the tree.
    """

    inner: Any
    update_norm: jax.Array
    param_norm: jax.Array


class FlatLayout:
    """Where each leaf of a parameter tree lives in its group's flat buffer.

    Parameters
    ----------
    params
        The parameter tree (arrays or ``ShapeDtypeStruct``; only shapes and dtypes are read).
    decays
        A tree like ``params`` of Python bools: True where weight decay applies. Decayed and
        undecayed leaves go to separate groups, so the chain's mask is one bool per group.
    """

    def __init__(self, params: Any, decays: Any) -> None:
        leaves, self.treedef = jax.tree.flatten(params)
        flags = jax.tree.leaves(decays)
        if len(flags) != len(leaves):
            raise ValueError(f"FlatLayout: {len(flags)} decay flags for {len(leaves)} leaves")
        #: group name -> [(leaf index, start, size, shape)], leaves in tree order.
        self.groups: dict[str, list[tuple[int, int, int, tuple[int, ...]]]] = {}
        self.mask: dict[str, bool] = {}
        for i, (leaf, decay) in enumerate(zip(leaves, flags, strict=True)):
            name = f"{'decay' if decay else 'keep'}_{jnp.dtype(leaf.dtype).name}"
            members = self.groups.setdefault(name, [])
            start = members[-1][1] + members[-1][2] if members else 0
            members.append((i, start, int(np.prod(leaf.shape, dtype=np.int64)), tuple(leaf.shape)))
            self.mask[name] = bool(decay)
        self.num_leaves = len(leaves)

    def _key(self) -> tuple[Any, ...]:
        groups = tuple((name, tuple(members)) for name, members in self.groups.items())
        return (self.treedef, groups, tuple(self.mask.items()))

    def __eq__(self, other: object) -> bool:
        # Equal layouts of equal trees: a pytree's static data (`FlatParams`) compares by value,
        # so a state restored from a checkpoint has the treedef of the state it was restored onto.
        return isinstance(other, FlatLayout) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        # By value, as __eq__: a treedef holding the layout prints the same for equal layouts.
        sizes = {name: m[-1][1] + m[-1][2] for name, m in self.groups.items()}
        return f"FlatLayout({sizes}, {self.num_leaves} leaves, key {hash(self._key()):x})"

    def _same(self, treedef: Any) -> bool:
        return bool(treedef == self.treedef)

    def flatten(self, tree: Any) -> dict[str, jax.Array]:
        """The groups' flat buffers of a tree with the params' structure (one concat each)."""
        leaves, treedef = jax.tree.flatten(tree)
        if not self._same(treedef):
            raise ValueError(f"FlatLayout: a tree of another structure ({treedef}) to flatten")
        return {
            name: jnp.concatenate([jnp.ravel(leaves[i]) for i, *_ in members])
            for name, members in self.groups.items()
        }

    def unflatten(self, flat: dict[str, jax.Array]) -> Any:
        """The tree of the groups' buffers cut back into the leaves' shapes (slices: no copy
        is launched of its own; each slice fuses into what reads it)."""
        if not any(isinstance(b, jax.core.Tracer) for b in flat.values()):
            # Outside a jit each slice is a program of its own, one XLA compile per leaf at
            # every eager read (a checkpoint's save, a sample): one program cuts them all.
            return _unflatten_jit(self, flat)
        return self._cut(flat)

    def _cut(self, flat: dict[str, jax.Array]) -> Any:
        leaves: list[Any] = [None] * self.num_leaves
        for name, members in self.groups.items():
            for i, start, size, shape in members:
                leaves[i] = jax.lax.slice_in_dim(flat[name], start, start + size).reshape(shape)
        return jax.tree.unflatten(self.treedef, leaves)


_unflatten_jit = jax.jit(FlatLayout._cut, static_argnums=0)


@jax.tree_util.register_pytree_node_class
class FlatParams:
    """Parameters held as their optimizer groups' flat buffers (`FlatLayout`), not leaf by leaf.

    A train state that holds its params this way updates them with one ``p + u`` per buffer
    (`apply`) instead of one kernel per leaf (gpt2_small's 196 on an H100), and the model reads
    `tree`'s views: slices that fuse into what reads them. The pytree's children are the buffers
    (its leaves: what is donated, sharded and checkpointed underneath); the layout is static.

    Parameters
    ----------
    buffers
        ``{group: 1-d buffer}`` as `FlatLayout.flatten` makes them (arrays or
        ``jax.ShapeDtypeStruct``).
    layout
        Where each leaf lives in them.
    """

    def __init__(self, buffers: dict[str, Any], layout: FlatLayout) -> None:
        self.buffers, self.layout = buffers, layout

    def tree_flatten(self) -> tuple[tuple[dict[str, Any]], FlatLayout]:
        return (self.buffers,), self.layout

    @classmethod
    def tree_unflatten(cls, layout: FlatLayout, children: Any) -> FlatParams:
        return cls(children[0], layout)

    @classmethod
    def of(cls, params: Any, layout: FlatLayout) -> FlatParams:
        """``params`` (a tree of arrays, or of ``jax.ShapeDtypeStruct``: abstract buffers) flat."""
        leaves = jax.tree.leaves(params)
        if all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves):
            sizes = {k: m[-1][1] + m[-1][2] for k, m in layout.groups.items()}
            dtypes = {k: leaves[m[0][0]].dtype for k, m in layout.groups.items()}
            return cls({k: jax.ShapeDtypeStruct((n,), dtypes[k]) for k, n in sizes.items()}, layout)
        return cls(layout.flatten(params), layout)

    def tree(self) -> Any:
        """The per-leaf params: views (slices) of the buffers inside a jitted function;
        ``jax.ShapeDtypeStruct`` leaves (sharded as their buffer) when the buffers are abstract."""
        if not all(isinstance(b, jax.ShapeDtypeStruct) for b in self.buffers.values()):
            return self.layout.unflatten(self.buffers)
        leaves: list[Any] = [None] * self.layout.num_leaves
        for name, members in self.layout.groups.items():
            b = self.buffers[name]
            for i, _, _, shape in members:
                leaves[i] = jax.ShapeDtypeStruct(shape, b.dtype, sharding=b.sharding)
        return jax.tree.unflatten(self.layout.treedef, leaves)

    def apply(self, updates: Any) -> FlatParams:
        """``optax.apply_updates(self.tree(), updates)`` as one ``p + u`` per buffer: the same
        numbers (each element's sum, in the parameter's dtype)."""
        flat = self.layout.flatten(updates)  # of `flat_groups`' cut updates: their own buffers
        return FlatParams(
            {k: jnp.asarray(p + flat[k]).astype(p.dtype) for k, p in self.buffers.items()},
            self.layout,
        )


def _stored(x: jax.Array, dtype: Any) -> jax.Array:
    if jnp.dtype(dtype).itemsize >= 4:
        return x.astype(dtype)
    info = jnp.finfo(dtype)
    wide = x.astype(jnp.float32)
    return jax.lax.reduce_precision(wide, exponent_bits=info.nexp, mantissa_bits=info.nmant)


def _norm(flat: dict[str, jax.Array]) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in flat.values()))


def flat_groups(build: ChainBuilder, decays: Callable[[Any], Any]) -> optax.GradientTransformation:
    """Run the chain ``build(mask)`` over flat buffers of the params, grouped by decay and dtype.

    Parameters
    ----------
    build
        Makes the chain from its weight-decay mask over the groups (a dict of bools); the chain
        must be elementwise apart from global reductions (norms, finite tests), as
        `FLAT_OPTIMIZERS` with clipping, schedules and skipping are.
    decays
        ``params -> tree of bools`` (e.g. ``functools.partial(decay_mask, axes=...)``): which
        leaves decay. Read from shapes and paths only, so it is the same at init and update.

    Returns
    -------
    optax.GradientTransformation
        Updates with the structure of the params; state `FlatState`. ``update`` needs ``params``.
    """

    def layout_of(params: Any) -> tuple[FlatLayout, optax.GradientTransformation]:
        layout = FlatLayout(params, decays(params))
        return layout, build(layout.mask)

    def init(params: Any) -> FlatState:
        layout, inner = layout_of(params)
        flat = layout.flatten(params)
        zero = jnp.zeros([], jnp.float32)
        return FlatState(inner.init(flat), zero, _norm(flat))

    def update(updates: Any, state: FlatState, params: Any = None) -> tuple[Any, FlatState]:
        if params is None:
            raise ValueError("flat_groups: update needs params (the flat buffers are cut by them)")
        layout, inner = layout_of(params)
        flat_params = layout.flatten(params)
        flat_updates, inner_state = inner.update(layout.flatten(updates), state.inner, flat_params)
        # The parameters after optax.apply_updates (p + u in the parameter's dtype), flat: their
        # norm is one reduction here instead of one per leaf in the report. XLA may skip the
        # rounding to a narrow dtype inside a fusion (excess precision); reduce_precision keeps
        # the norm that of the stored parameters.
        new_params = {k: _stored(p + flat_updates[k], p.dtype) for k, p in flat_params.items()}
        new_state = FlatState(inner_state, _norm(flat_updates), _norm(new_params))
        return layout.unflatten(flat_updates), new_state

    return optax.GradientTransformation(init, update)  # type: ignore[arg-type]


def _is_flat_state(x: Any) -> bool:
    return isinstance(x, FlatState)


def to_per_leaf_state(state: Any, layout: FlatLayout) -> Any:
    """``state`` with each `FlatState` in it replaced by the state the same chain keeps per leaf.

    A checkpoint of one layout resumes in the other this way (a run moved to a mesh that splits
    the parameters cannot run flat). Each ``{group: buffer}`` slot (Adam's ``mu``, ``nu``, ...)
    is cut into the params' shapes; counts and scalars are kept; the reported norms, which the
    per-leaf chain does not keep, are dropped.

    Parameters
    ----------
    state
        An optimizer state holding `FlatState` nodes (`flat_groups`'s, maybe wrapped, as
        ``only_trainable`` wraps it).
    layout
        The layout of the params the flat chain saw (`FlatLayout` of them and their decays).

    Returns
    -------
    Any
        The state of the chain built with ``flat_update="off"``.
    """
    groups = set(layout.groups)

    def is_groups(x: Any) -> bool:
        return isinstance(x, dict) and set(x) == groups

    def cut(node: Any) -> Any:
        if not isinstance(node, FlatState):
            return node
        return jax.tree.map(
            lambda x: layout.unflatten(x) if is_groups(x) else x, node.inner, is_leaf=is_groups
        )

    return jax.tree.map(cut, state, is_leaf=_is_flat_state)


def to_flat_state(state: Any, target: Any, layout: FlatLayout, params: Any) -> Any:
    """The inverse of `to_per_leaf_state`: ``state`` (per leaf) laid out as ``target``.

    Parameters
    ----------
    state
        The per-leaf chain's state.
    target
        The flat chain's state (or its ``jax.eval_shape``): where its `FlatState` nodes are.
    layout
        The layout of the params the flat chain sees.
    params
        Those params: the `FlatState`'s ``param_norm`` is theirs (its ``update_norm`` is zero,
        as after ``init``).

    Returns
    -------
    Any
        The state of the chain built with flat buffers.

    Raises
    ------
    ValueError
        ``state`` is not the per-leaf state of ``target``'s chain.
    """

    def is_params(x: Any) -> bool:
        return not isinstance(x, jax.Array) and layout._same(jax.tree.structure(x))

    def join(node: Any, per_leaf: Any) -> Any:
        if not isinstance(node, FlatState):
            return per_leaf
        inner = jax.tree.map(
            lambda x: layout.flatten(x) if is_params(x) else x, per_leaf, is_leaf=is_params
        )
        got: Any = jax.tree.structure(inner)  # (PyTreeDef's == is untyped)
        want = jax.tree.structure(node.inner)
        if got != want:
            raise ValueError(
                f"to_flat_state: the per-leaf state does not match the flat chain's ({got} vs "
                f"{want})"
            )
        zero = jnp.zeros([], jnp.float32)
        return FlatState(inner, zero, _norm(layout.flatten(params)))

    return jax.tree.map(join, target, state, is_leaf=_is_flat_state)
