"""A model's non-parameter state (the ``rest`` of ``nnx.split(model, nnx.Param, ...)``: RNG
streams' keys and counters): fresh dropout keys per step, and concrete stand-ins for an abstract
one.

A training step closes over ``rest`` and draws its dropout masks from it. Folding the step number
into every key (:func:`reseed`) gives each step its own masks with nothing to save: a resumed run
draws the same masks as an uninterrupted one. A model built abstractly (``nnx.eval_shape``, no
parameter materialised) has ``ShapeDtypeStruct`` leaves there; :func:`concrete_state` makes them
real (a fixed key, zero counters) so the model can be merged with restored or abstract params.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["concrete_state", "is_key", "reseed"]


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
