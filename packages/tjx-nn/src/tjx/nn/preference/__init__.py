"""Preference optimisation (DPO, IPO): the losses, their jit-ready steps, what a run cannot apply.

Modules: ``losses`` (`sequence_logprobs`, `dpo_loss`, `preference_loss`, `PreferenceConfig`,
held-out means), ``steps`` (`preference_loss_fn`, `preference_sums_fn`: pure functions of the
params for ``jax.jit``) and ``rules`` (`check_preference_run`). Before tjx-nn 0.20 these were
``tjx.nn.preference`` (now ``losses``) and ``tjx.nn.preference_<name>``.
"""

from __future__ import annotations

from typing import Any

from tjx.nn.moved import former_name
from tjx.nn.preference import losses
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


def __getattr__(name: str) -> Any:
    # The other names the module tjx.nn.preference held before 0.20 (for one release).
    return former_name(__name__, losses, name)
