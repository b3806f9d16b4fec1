"""Parameter creation with logical axis names.

Every parameter of tjx.nn is made here, so every ``nnx.Param`` carries its logical axis names in
flax's ``out_sharding`` metadata (flax 0.12 renamed ``sharding``/``sharding_names`` to it).
``eager_sharding=False`` keeps the names as metadata only: no mesh is needed at construction, and
``nnx.get_partition_spec(nnx.state(model))`` returns ``PartitionSpec('embed', 'mlp')`` and so on,
which tjx-parallel maps to mesh axes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# One tuple for tjx-nn and tjx-parallel (re-exported as tjx.nn.LOGICAL_AXES).
from tjx.core.axes import LOGICAL_AXES

Initializer = Callable[..., jax.Array]


def normal(std: float) -> Initializer:
    """Normal initializer with standard deviation ``std``."""
    return jax.nn.initializers.normal(stddev=std)


def zeros() -> Initializer:
    """Zeros initializer."""
    return jax.nn.initializers.zeros


def ones() -> Initializer:
    """Ones initializer."""
    return jax.nn.initializers.ones


def make_param(
    rngs: nnx.Rngs,
    init: Initializer,
    shape: Sequence[int],
    names: Sequence[str | None],
    dtype: Any = jnp.float32,
) -> nnx.Param:
    """Create an ``nnx.Param`` of ``shape`` annotated with logical axis ``names``.

    Parameters
    ----------
    rngs : nnx.Rngs
        Key source (the ``params`` stream).
    init : callable
        ``init(key, shape, dtype) -> Array``.
    shape : sequence of int
        Parameter shape.
    names : sequence of str or None
        One logical axis name per dimension (from ``LOGICAL_AXES``; ``None`` = replicated).
    dtype : dtype
        Storage dtype (the policy's ``param_dtype``).
    """
    if len(names) != len(shape):
        raise ValueError(f"names {tuple(names)} must have one entry per dim of shape {shape}")
    for name in names:
        if name is not None and name not in LOGICAL_AXES:
            raise ValueError(f"unknown logical axis {name!r}; allowed: {LOGICAL_AXES}")
    value = init(rngs.params(), tuple(shape), dtype)
    return nnx.Param(value, out_sharding=tuple(names), eager_sharding=False)
