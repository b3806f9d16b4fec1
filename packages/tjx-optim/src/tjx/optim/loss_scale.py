"""Dynamic loss scaling for fp16 training, with its state inside the optimizer state.

optax has no loss scaling (it lives in the separate ``jmp`` library, which tjx-optim may not
depend on), so this is a small ``GradientTransformation``: it divides the incoming (scaled)
gradients by the current scale and updates the scale from their finiteness. The non-finite
skip that follows it in ``build_optimizer``'s chain drops the overflowed step itself.

Trainer usage::

    loss_for_grad = scale_loss(loss, opt_state)       # inside the differentiated function
    updates, opt_state = tx.update(grads, opt_state, params)   # unscales and adapts the scale
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from tjx.optim.config import OptimizerConfig
from tjx.optim.transforms import find_state

__all__ = [
    "DynamicLossScaleState",
    "all_finite",
    "check_precision",
    "dynamic_loss_scale",
    "find_loss_scale_state",
    "loss_scale_value",
    "scale_loss",
    "unscale_grads",
]


class DynamicLossScaleState(NamedTuple):
    """``scale``: current loss scale (f32); ``good_steps``: finite steps since the last change."""

    scale: jax.Array
    good_steps: jax.Array


def all_finite(tree: Any) -> jax.Array:
    """Scalar bool: every element of every leaf is finite (per leaf, so no norm overflow)."""
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _mul(tree: Any, factor: jax.Array) -> Any:
    # Multiply in float32 (an fp16 1/scale would be subnormal), then return to each leaf's dtype.
    return jax.tree.map(lambda g: (g.astype(jnp.float32) * factor).astype(g.dtype), tree)


def dynamic_loss_scale(
    init_scale: float = 2.0**15,
    growth_interval: int = 2000,
    factor: float = 2.0,
    min_scale: float = 1.0,
    max_scale: float = 2.0**24,
) -> optax.GradientTransformation:
    """Unscale gradients by the current loss scale and adapt it.

    On a step whose unscaled gradients are all finite, ``good_steps`` grows; after
    ``growth_interval`` such steps in a row the scale is multiplied by ``factor`` (not above
    ``max_scale``). On a non-finite step the scale is divided by ``factor`` (not below
    ``min_scale``) and ``good_steps`` restarts at 0.

    Parameters
    ----------
    init_scale, growth_interval, factor, min_scale, max_scale
        As described above. ``max_scale`` keeps the float32 scale finite: uncapped, a run whose
        gradients never overflow (bf16/f32, or a small loss) doubles it up to ``inf``, after
        which ``inf / factor`` stays ``inf`` and every later step would be skipped.

    Returns
    -------
    optax.GradientTransformation
        State: ``DynamicLossScaleState``. Outputs the unscaled gradients (possibly non-finite).
    """
    if not 0.0 < min_scale <= init_scale <= max_scale < float("inf"):
        raise ValueError(
            f"loss scales must satisfy 0 < min_scale <= init_scale <= max_scale < inf; got "
            f"min_scale={min_scale}, init_scale={init_scale}, max_scale={max_scale}"
        )
    if factor <= 1.0:
        raise ValueError(f"factor={factor}; allowed values: a number > 1")

    def init(params: Any) -> DynamicLossScaleState:
        del params
        return DynamicLossScaleState(
            scale=jnp.asarray(init_scale, jnp.float32), good_steps=jnp.zeros([], jnp.int32)
        )

    def update(
        updates: Any, state: DynamicLossScaleState, params: Any = None
    ) -> tuple[Any, DynamicLossScaleState]:
        del params
        inv = 1.0 / state.scale
        grads = _mul(updates, inv)
        finite = all_finite(grads)
        good = jnp.where(finite, state.good_steps + 1, 0)
        grow = good >= growth_interval
        scale = jnp.where(
            finite,
            jnp.where(grow, jnp.minimum(state.scale * factor, max_scale), state.scale),
            jnp.maximum(state.scale / factor, min_scale),
        )
        good = jnp.where(grow, 0, good).astype(jnp.int32)
        return grads, DynamicLossScaleState(scale=scale.astype(jnp.float32), good_steps=good)

    return optax.GradientTransformation(init, update)


def check_precision(config: OptimizerConfig, *, param_dtype: Any, compute_dtype: Any) -> None:
    """Refuse a model precision that ``config``'s chain cannot train.

    * float16 parameters: their gradients arrive in float16 too, where a scaled gradient
      overflows and an update below float16's resolution is lost; this chain's loss scaling
      assumes float32 (or bfloat16) parameters.
    * float16 compute without ``loss_scale="dynamic"``: small float16 gradients flush to zero.

    Parameters
    ----------
    config : OptimizerConfig
        The gradient-processing chain.
    param_dtype, compute_dtype : dtype or str
        The model's parameter and compute dtypes (e.g. ``"float32"``, ``jnp.bfloat16``).

    Raises
    ------
    ValueError
        Naming ``param_dtype``/``compute_dtype`` and ``OptimizerConfig.loss_scale``.
    """
    if jnp.dtype(param_dtype) == jnp.float16:
        raise ValueError(
            "param_dtype=float16: float16 parameters are not supported (scaled gradients "
            "overflow, small updates vanish); allowed values: float32 or bfloat16"
        )
    if jnp.dtype(compute_dtype) == jnp.float16 and config.loss_scale != "dynamic":
        raise ValueError(
            f"compute_dtype=float16 needs OptimizerConfig.loss_scale='dynamic' (got "
            f"{config.loss_scale!r}): small float16 gradients flush to zero without it"
        )


def find_loss_scale_state(opt_state: Any) -> DynamicLossScaleState | None:
    """The ``DynamicLossScaleState`` inside ``opt_state`` (any nesting), or None."""
    return find_state(opt_state, DynamicLossScaleState)


def loss_scale_value(opt_state: Any) -> jax.Array:
    """The current loss scale (f32 scalar); 1.0 when the chain has no loss scaling."""
    state = find_loss_scale_state(opt_state)
    return jnp.asarray(1.0, jnp.float32) if state is None else state.scale


def scale_loss(loss: jax.Array, opt_state: Any) -> jax.Array:
    """``loss * scale`` (in the loss's dtype): differentiate this instead of ``loss``."""
    return loss * loss_scale_value(opt_state).astype(loss.dtype)


def unscale_grads(grads: Any, opt_state: Any) -> Any:
    """``grads / scale``, for inspecting gradients outside the chain (the chain unscales itself)."""
    inv = 1.0 / loss_scale_value(opt_state)
    return _mul(grads, inv)
