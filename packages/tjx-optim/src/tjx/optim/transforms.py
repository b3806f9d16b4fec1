"""Small stateful transforms that make the chain inspectable by ``step_report``.

optax's ``clip_by_global_norm`` is stateless and its learning-rate scaling keeps only a count, so
the gradient norm before clipping, whether clipping fired and the learning rate used are not
recoverable from an optax state. These transforms do the same work and keep those numbers.
"""

from __future__ import annotations

from typing import Any, NamedTuple, TypeVar

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "INT32_MAX",
    "ClipStatsState",
    "ScheduleStatsState",
    "clip_by_global_norm_with_stats",
    "find_state",
    "scale_by_schedule_with_stats",
    "skip_nonfinite",
]

INT32_MAX = 2**31 - 1

T = TypeVar("T")


def find_state(opt_state: Any, kind: type[T]) -> T | None:
    """The first sub-state of type ``kind`` anywhere inside ``opt_state`` (any nesting), or None."""
    is_kind = lambda x: isinstance(x, kind)
    found = [x for x in jax.tree.leaves(opt_state, is_leaf=is_kind) if is_kind(x)]
    return found[0] if found else None


class ClipStatsState(NamedTuple):
    """``grad_norm``: global norm of the last incoming gradients (before clipping);
    ``clipped``: whether the last step was clipped."""

    grad_norm: jax.Array
    clipped: jax.Array


class ScheduleStatsState(NamedTuple):
    """``steps``: updates applied so far; ``learning_rate``: the rate of the last applied update."""

    steps: jax.Array
    learning_rate: jax.Array


def clip_by_global_norm_with_stats(max_norm: float | None) -> optax.GradientTransformation:
    """``optax.clip_by_global_norm`` that also records the pre-clip norm and whether it clipped.

    Parameters
    ----------
    max_norm
        Clip threshold; ``None`` records the norm without clipping.

    Returns
    -------
    optax.GradientTransformation
        State: ``ClipStatsState``. The norm is computed in float32.
    """

    def init(params: Any) -> ClipStatsState:
        del params
        return ClipStatsState(jnp.zeros([], jnp.float32), jnp.zeros([], jnp.bool_))

    def update(updates: Any, state: ClipStatsState, params: Any = None) -> tuple[Any, Any]:
        del params, state
        norm = optax.tree.norm(jax.tree.map(lambda g: g.astype(jnp.float32), updates))
        if max_norm is None:
            return updates, ClipStatsState(norm, jnp.zeros([], jnp.bool_))
        clipped = norm > max_norm
        # Same rule as optax.clip_by_global_norm: g * max_norm / max(norm, max_norm).
        factor = max_norm / jnp.maximum(norm, max_norm)
        updates = jax.tree.map(lambda g: (g * factor).astype(g.dtype), updates)
        return updates, ClipStatsState(norm, clipped)

    return optax.GradientTransformation(init, update)


def scale_by_schedule_with_stats(schedule: optax.ScalarOrSchedule) -> optax.GradientTransformation:
    """Multiply updates by ``schedule(steps)`` (or a constant) and record the rate used.

    The optimizers in ``build_optimizer`` end with ``learning_rate=1`` (they already point
    downhill), so this is the only place the rate enters; that keeps one number to report even
    for Muon's two-optimizer partition.
    """

    def rate(count: jax.Array) -> jax.Array:
        value = schedule(count) if callable(schedule) else schedule
        return jnp.asarray(value, jnp.float32)

    def init(params: Any) -> ScheduleStatsState:
        del params
        return ScheduleStatsState(jnp.zeros([], jnp.int32), rate(jnp.zeros([], jnp.int32)))

    def update(
        updates: Any, state: ScheduleStatsState, params: Any = None
    ) -> tuple[Any, ScheduleStatsState]:
        del params
        lr = rate(state.steps)
        updates = jax.tree.map(lambda u: (u * lr).astype(u.dtype), updates)
        return updates, ScheduleStatsState(optax.safe_increment(state.steps), lr)

    return optax.GradientTransformation(init, update)


def skip_nonfinite(inner: optax.GradientTransformation) -> optax.GradientTransformation:
    """Skip steps with NaN/Inf gradients: zero updates, ``inner``'s state unchanged, counted.

    This is ``optax.apply_if_finite`` with ``max_consecutive_errors`` at the int32 maximum:
    optax's wrapper gives up after that many bad steps in a row and applies the bad update,
    which would write NaN into the parameters; we never want that. Its state
    (``optax.ApplyIfFiniteState``) holds ``last_finite`` and ``total_notfinite``, which
    ``step_report`` reads as ``skipped`` and ``skipped_total``.
    """
    return optax.apply_if_finite(inner, max_consecutive_errors=INT32_MAX)
