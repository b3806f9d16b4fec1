"""Preference optimisation (DPO, IPO): the losses, their jit-ready steps, what a run cannot apply.

Modules: ``config`` (`PreferenceConfig`, config-only), ``losses`` (`sequence_logprobs`,
`dpo_loss`, `preference_loss`, held-out means), ``steps`` (`preference_loss_fn`,
`preference_sums_fn`: pure functions of the params for ``jax.jit``) and ``rules``
(`check_preference_run`). The package serves the names below; any other name of its modules is
imported from the module (``losses``'s from ``tjx.nn.preference.losses``).
"""

from __future__ import annotations

from tjx.nn.preference.losses import (
    PREFERENCE_LOSSES,
    PreferenceConfig,
    PreferenceOutput,
    dpo_loss,
    heldout_preference,
    preference_loss,
    preference_means,
    sequence_logprobs,
)
from tjx.nn.preference.rules import check_preference_run
from tjx.nn.preference.steps import preference_loss_fn, preference_step_metrics, preference_sums_fn

__all__ = [
    "PREFERENCE_LOSSES",
    "PreferenceConfig",
    "PreferenceOutput",
    "check_preference_run",
    "dpo_loss",
    "heldout_preference",
    "preference_loss",
    "preference_loss_fn",
    "preference_means",
    "preference_step_metrics",
    "preference_sums_fn",
    "sequence_logprobs",
]
