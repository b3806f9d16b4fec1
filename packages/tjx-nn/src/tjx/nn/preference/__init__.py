"""Preference optimisation (DPO, IPO): the losses, their jit-ready steps, what a run cannot apply.

Modules: ``config`` (`PreferenceConfig`, config-only), ``losses`` (`sequence_logprobs`,
`dpo_loss`, `preference_loss`, held-out means), ``steps`` (`preference_loss_fn`,
`preference_sums_fn`: pure functions of the params for ``jax.jit``) and ``rules``
(`check_preference_run`). Before tjx-nn 0.20 these were ``tjx.nn.preference`` (now ``losses``)
and ``tjx.nn.preference_<name>``. Since 0.25 the old paths no longer import and the package serves
only the names below (another name of the old module: import it from ``losses``).
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
