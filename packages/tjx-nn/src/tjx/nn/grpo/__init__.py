"""Group-relative policy optimisation (GRPO): group advantages, token log-probabilities, the loss.

Modules: ``losses`` (`GrpoConfig`, `group_advantages`, `token_logprobs`,
`token_logprobs_and_entropies`, `grpo_loss`, `GrpoOutput`: TRL's loss types, GSPO's
sequence-level ratio) and ``rollouts`` (`sample_groups`: G completions per prompt through
``tjx.nn.generate``, laid out as the batch the loss scores; `greedy_completions`: one greedy
completion per held-out prompt). The loop that samples, scores (``tjx.data``'s rewards) and
steps is the trainer's.
"""

from __future__ import annotations

from tjx.nn.grpo.losses import (
    ADVANTAGE_SCALES,
    CLIPPED_LOSSES,
    GRPO_LOSSES,
    IMPORTANCE_LEVELS,
    GrpoConfig,
    GrpoOutput,
    group_advantages,
    grpo_loss,
    token_logprobs,
    token_logprobs_and_entropies,
)
from tjx.nn.grpo.rollouts import Rollout, greedy_completions, rollout_batch, sample_groups

__all__ = [
    "ADVANTAGE_SCALES",
    "CLIPPED_LOSSES",
    "GRPO_LOSSES",
    "IMPORTANCE_LEVELS",
    "GrpoConfig",
    "GrpoOutput",
    "Rollout",
    "greedy_completions",
    "grpo_loss",
    "group_advantages",
    "rollout_batch",
    "sample_groups",
    "token_logprobs",
    "token_logprobs_and_entropies",
]
