"""GRPO's baseline: each completion's reward less its group's mean (`group_advantages`)."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from tjx.core.config.values import choice
from tjx.nn.grpo.config import ADVANTAGE_SCALES

__all__ = ["STD_EPS", "group_advantages"]

Array = jax.Array

#: Added to the standard deviation before dividing by it (TRL's constant): a group whose rewards
#: are all equal gets advantages of 0, not a division by 0.
STD_EPS = 1e-4


def group_advantages(rewards: Array, group_size: int, *, scale: str = "group") -> Array:
    """Each completion's reward less its group's mean, scaled as ``scale`` says.

    Parameters
    ----------
    rewards : Array
        float ``[prompts * group_size]``: the completions of one prompt are consecutive (TRL's
        ``repeat_interleave`` order).
    group_size : int
        ``G``, completions per prompt (≥ 2: one completion has no baseline but itself).
    scale : str
        ``"group"``: divide by the group's standard deviation + 1e-4; ``"batch"``: by the whole
        batch's; ``"none"``: do not divide.

    Returns
    -------
    Array
        float32 ``[prompts * group_size]``.
    """
    choice("group_advantages", "scale", scale, ADVANTAGE_SCALES)
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_advantages: {rewards.shape[0]} rewards do not split into groups of "
            f"{group_size} (a group needs 2 completions or more)"
        )
    chex.assert_rank(rewards, 1)
    r = rewards.astype(jnp.float32)
    groups = r.reshape(-1, group_size)
    advantages = (groups - groups.mean(axis=1, keepdims=True)).reshape(-1)
    if scale == "group":
        std = jnp.repeat(jnp.std(groups, axis=1, ddof=1), group_size)
    elif scale == "batch":
        std = jnp.std(r, ddof=1) if r.shape[0] > 1 else jnp.zeros(())
    else:
        return advantages
    return advantages / (std + STD_EPS)
