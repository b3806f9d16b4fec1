"""``step_report``: what one optimizer step did, read from the chain's state (no host sync)."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from tjx.optim.flat import FlatState
from tjx.optim.loss_scale import find_loss_scale_state
from tjx.optim.transforms import ClipStatsState, ScheduleStatsState, find_state

__all__ = ["step_report"]


def _norm(tree: Any) -> jax.Array:
    return optax.tree.norm(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree))


def step_report(opt_state: Any, grads: Any, updates: Any, params: Any) -> dict[str, jax.Array]:
    """Scalars describing the step that produced ``opt_state`` and ``updates``.

    Parameters
    ----------
    opt_state
        The state returned by ``tx.update`` of a ``build_optimizer`` chain (or any chain holding
        its stages).
    grads
        The gradients given to ``tx.update`` (used only when the chain records no norm).
    updates
        The updates ``tx.update`` returned.
    params
        The parameters (pass the new ones, after ``optax.apply_updates``).

    Returns
    -------
    dict[str, jax.Array]
        ``learning_rate`` (of the last applied update; NaN when the chain records none),
        ``grad_norm`` (global norm before clipping, after loss unscaling), ``update_norm``,
        ``param_norm``, ``clipped`` (bool), ``skipped`` (bool: this step's gradients were
        non-finite and the update was dropped), ``skipped_total`` (int32: all skipped steps), and
        ``loss_scale`` when the chain has dynamic loss scaling. All are device scalars.
    """
    clip = find_state(opt_state, ClipStatsState)
    sched = find_state(opt_state, ScheduleStatsState)
    finite = find_state(opt_state, optax.ApplyIfFiniteState)
    flat = find_state(opt_state, FlatState)  # norms taken on the flat buffers: 2 reductions
    # The flat buffers hold the leaves the flat chain saw: inside `only_trainable` (LoRA) only the
    # trainable ones, whose norm is not the params'. Their update norm is the whole one (a
    # frozen leaf's update is zero), their param norm only when the flat chain is the chain.
    whole = opt_state if isinstance(opt_state, FlatState) else None
    report: dict[str, jax.Array] = {
        "learning_rate": (
            sched.learning_rate if sched is not None else jnp.asarray(jnp.nan, jnp.float32)
        ),
        "grad_norm": clip.grad_norm if clip is not None else _norm(grads),
        "update_norm": flat.update_norm if flat is not None else _norm(updates),
        "param_norm": whole.param_norm if whole is not None else _norm(params),
        "clipped": clip.clipped if clip is not None else jnp.zeros([], jnp.bool_),
        "skipped": (
            jnp.logical_not(finite.last_finite) if finite is not None else jnp.zeros([], jnp.bool_)
        ),
        "skipped_total": (
            jnp.asarray(finite.total_notfinite, jnp.int32)
            if finite is not None
            else jnp.zeros([], jnp.int32)
        ),
    }
    scale = find_loss_scale_state(opt_state)
    if scale is not None:
        report["loss_scale"] = scale.scale
    return report
