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

#: Logical axis names used by tjx models (tjx-parallel maps these to mesh axes). tjx-parallel
#: may not import tjx-nn, so it holds the same tuple; tests-integration's test_logical_axes.py
#: keeps the two equal.
LOGICAL_AXES = (
    "batch",
    "length",
    "embed",
    "mlp",
    "heads",
    "kv_heads",
    "head_dim",
    "vocab",
    "layers",
    "norm",
    # A classifier's labels (ViT head, BERT classifier): named so that an optimizer reading
    # the axes tells a readout from a hidden matrix; every strategy replicates it.
    "classes",
    # An MoE layer's routed experts: the leading axis of the stacked expert weights (a stack of
    # matrices, like `layers`); tjx-parallel maps it to the `expert` mesh axis.
    "experts",
    # A LoRA adapter's rank (A is [in, lora_rank], B [lora_rank, out]): named so that B of an
    # output projection ([lora_rank, embed]) never reads as an embedding table; replicated.
    "lora_rank",
)

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
