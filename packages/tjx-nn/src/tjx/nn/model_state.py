"""A model's non-parameter state (the ``rest`` of ``nnx.split(model, nnx.Param, ...)``: RNG
streams' keys and counters): fresh dropout keys per step, and concrete stand-ins for an abstract
one.

A training step closes over ``rest`` and draws its dropout masks from it. Folding the step number
into every key (:func:`reseed`) gives each step its own masks with nothing to save: a resumed run
draws the same masks as an uninterrupted one. A model built abstractly (``nnx.eval_shape``, no
parameter materialised) has ``ShapeDtypeStruct`` leaves there; :func:`concrete_state` makes them
real (a fixed key, zero counters) so the model can be merged with restored or abstract params.

A model with delayed float8 scaling also keeps `tjx.nn.fp8.Fp8Meta` variables there (the
scales and amax histories, one ``fp8_meta`` per float8 `Dense`), state a train step must carry
and advance: :func:`split_fp8_meta` takes them out of ``rest`` (as a pure dict, a checkpoint's
kind of tree), :func:`join_fp8_meta` puts them beside the params for the step to merge and
differentiate (their cotangents are the step's amaxes), and :func:`part_fp8_meta` parts the
result again.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.fp8 import Fp8Meta

__all__ = [
    "concrete_state",
    "is_key",
    "join_fp8_meta",
    "part_fp8_meta",
    "reseed",
    "split_fp8_meta",
]

#: The `Dense` attribute that holds a float8 product's delayed-scaling state.
FP8_META = "fp8_meta"


def is_key(x: Any) -> bool:
    """Whether ``x`` is a typed PRNG key array (``jax.random.key``, not a raw uint32 key).

    Parameters
    ----------
    x : Any

    Returns
    -------
    bool
    """
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def reseed(rest: Any, step: jax.Array | int) -> Any:
    """Every PRNG key of ``rest`` folded with ``step``; every other leaf unchanged.

    Parameters
    ----------
    rest : pytree
        A model's non-parameter state (``nnx.State`` or any pytree).
    step : int or int32 scalar array
        The step (traceable: works inside ``jax.jit``).

    Returns
    -------
    pytree
        Same structure; each key is ``jax.random.fold_in(key, step)``.
    """
    return jax.tree.map(lambda x: jax.random.fold_in(x, step) if is_key(x) else x, rest)


def concrete_state(rest: Any, seed: int = 0) -> Any:
    """Concrete stand-ins for the abstract leaves of ``rest``: ``jax.random.key(seed)`` for a key,
    zeros for anything else; leaves that are already concrete are kept.

    For a model built with ``nnx.eval_shape`` whose RNG streams are not used (evaluation,
    compiling a step to read its memory), or are reseeded per step anyway (:func:`reseed`).

    Parameters
    ----------
    rest : pytree
        The non-parameter state of an abstract model (``jax.ShapeDtypeStruct`` leaves).
    seed : int
        The key given to every abstract key leaf.

    Returns
    -------
    pytree
        Same structure, concrete arrays.
    """

    def one(x: Any) -> Any:
        if not isinstance(x, jax.ShapeDtypeStruct):
            return x
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key(seed)
        return jnp.zeros(x.shape, x.dtype)

    return jax.tree.map(one, rest)


def split_fp8_meta(rest: nnx.State) -> tuple[nnx.State, dict[str, Any] | None]:
    """``rest`` without its `Fp8Meta` variables, and those as a pure dict (None: it has none,
    and ``rest`` is returned as it is).

    Parameters
    ----------
    rest : nnx.State
        A model's non-parameter state (``nnx.split(model, nnx.Param, ...)``'s last).

    Returns
    -------
    tuple
        ``(others, meta)``: ``nnx.merge(graphdef, params, meta, others)`` is the model.
    """
    meta, others = nnx.split_state(rest, Fp8Meta, ...)
    if not jax.tree.leaves(meta):
        return rest, None
    return others, nnx.to_pure_dict(meta)


def join_fp8_meta(params: dict[str, Any], meta: dict[str, Any] | None) -> dict[str, Any]:
    """The nested dict of ``params`` with ``meta`` (`split_fp8_meta`'s) beside them, one tree
    ``nnx.merge`` takes as one state; ``params`` itself when ``meta`` is None.

    Parameters
    ----------
    params : dict
        ``nnx.to_pure_dict`` of a model's params (or a tree like it: gradients, masks).
    meta : dict or None
        A tree of ``fp8_meta`` leaves at paths of ``params``' modules.

    Returns
    -------
    dict
        A new nested dict (``params``' own dicts are not changed).
    """
    if meta is None:
        return params

    def join(p: Any, m: Any) -> Any:
        if not isinstance(m, dict):
            return m
        out = dict(p) if isinstance(p, dict) else {}
        for k, v in m.items():
            out[k] = join(out.get(k), v)
        return out

    return join(params, meta)  # type: ignore[no-any-return]


def part_fp8_meta(tree: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """`join_fp8_meta`'s inverse: ``(params-like tree, meta-like tree)`` of a joined tree (its
    gradients, say), the ``fp8_meta`` leaves on the second side.

    Parameters
    ----------
    tree : dict
        A nested dict whose ``fp8_meta`` entries are the float8 state's.

    Returns
    -------
    tuple of dict
        Neither side keeps a module left empty.
    """
    params: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for k, v in tree.items():
        if k == FP8_META:
            meta[k] = v
        elif isinstance(v, dict):
            p, m = part_fp8_meta(v)
            if p or not m:
                params[k] = p
            if m:
                meta[k] = m
        else:
            params[k] = v
    return params, meta
