"""Parameter creation with logical axis names.

Every parameter of tjx.nn is made here, so every ``nnx.Param`` carries its logical axis names in
flax's ``out_sharding`` metadata (flax 0.12 renamed ``sharding``/``sharding_names`` to it).
``eager_sharding=False`` keeps the names as metadata only: no mesh is needed at construction, and
``nnx.get_partition_spec(nnx.state(model))`` returns ``PartitionSpec('embed', 'mlp')`` and so on,
which tjx-parallel maps to mesh axes.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

# One tuple for tjx-nn and tjx-parallel (re-exported as tjx.nn.LOGICAL_AXES).
from tjx.core.axes import LOGICAL_AXES
from tjx.core.fields import setting

Initializer = Callable[..., jax.Array]


@dataclass(frozen=True, kw_only=True)
class InitConfig:
    """How a model's weights are drawn (``model.init``): N(0, ``std``), the residual branches'
    output projections by ``1 / sqrt(2 layers)`` more with ``scaled_residual`` (GPT-2's); the
    model config fills a None with its family's.

    A bad value raises ``ValueError`` at construction naming ``InitConfig.<field>``.
    """

    std: float = setting(0.02, help="std of the initial weights")
    scaled_residual: bool | None = setting(
        None, help="residual output init / sqrt(2 layers); None: the family's (GPT-2: true)"
    )

    def __post_init__(self) -> None:
        if not self.std > 0:
            raise ValueError(f"InitConfig.std must be > 0; got {self.std!r}")


#: The init section's old flat keys in a model section → their key in ``init``.
FLAT_INIT_KEYS = {"init_std": "std", "scaled_residual_init": "scaled_residual"}


def is_stacked(var: nnx.Variable) -> bool:
    """Whether ``var`` is stacked over layers: a scanned stack's parameter, whose first logical
    axis is ``layers`` (a leading axis of one slice per layer)."""
    names = var.get_metadata().get("out_sharding")
    return names is not None and len(names) > 0 and names[0] == "layers"


def normal(std: float) -> Initializer:
    """Normal initializer with standard deviation ``std``: jax's ``initializers.normal``, whose
    numbers are the same made eagerly or inside one jitted program (bit for bit).

    Inside a jitted program XLA would fold the draw's own scale (``√2``, the last step of
    ``jax.random.normal``) and ``std`` into one constant, rounding once where the eager product
    rounds twice; an ``optimization_barrier`` between the draw and the product keeps them apart.
    A second one hides the key, a constant there: each draw of a shape is then the same kernel
    on another key (a GPU compiles it once, not once per weight).
    """

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        if not isinstance(key, jax.core.Tracer):  # eagerly there is no program to fold across
            return jax.random.normal(key, shape, dtype) * jnp.array(std, dtype)
        draw = jax.random.normal(jax.lax.optimization_barrier(key), shape, dtype)
        return jax.lax.optimization_barrier(draw) * jnp.array(std, dtype)

    return init


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
