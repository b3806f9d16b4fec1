"""Group-relative policy optimisation (GRPO): group advantages, token log-probabilities, the loss.

Modules: ``config`` (`GrpoConfig`: TRL's settings), ``advantages`` (`group_advantages`),
``logprobs`` (`token_logprobs`, `token_logprobs_and_entropies`), ``losses`` (`grpo_loss`,
`GrpoOutput`: TRL's loss types, GSPO's sequence-level ratio; `GrpoTotals`, `batch_totals`,
`merge_micro_metrics`: a batch scored in micro-batches) and ``rollouts``
(`sample_groups`: G completions per prompt through ``tjx.nn.generate``, laid out as the batch
the loss scores; `greedy_completions`: one greedy completion per held-out prompt). The loop
that samples, scores (``tjx.data``'s rewards) and steps is the trainer's.
"""

from __future__ import annotations

from tjx.nn.grpo.advantages import group_advantages
from tjx.nn.grpo.config import (
    ADVANTAGE_SCALES,
    CLIPPED_LOSSES,
    GRPO_LOSSES,
    IMPORTANCE_LEVELS,
    GrpoConfig,
)
from tjx.nn.grpo.logprobs import token_logprobs, token_logprobs_and_entropies
from tjx.nn.grpo.losses import (
    GrpoOutput,
    GrpoTotals,
    batch_totals,
    grpo_loss,
    merge_micro_metrics,
)
from tjx.nn.grpo.rollouts import Rollout, greedy_completions, rollout_batch, sample_groups

__all__ = [
    "ADVANTAGE_SCALES",
    "CLIPPED_LOSSES",
    "GRPO_LOSSES",
    "IMPORTANCE_LEVELS",
    "GrpoConfig",
    "GrpoOutput",
    "GrpoTotals",
    "Rollout",
    "batch_totals",
    "greedy_completions",
    "grpo_loss",
    "group_advantages",
    "merge_micro_metrics",
    "rollout_batch",
    "sample_groups",
    "token_logprobs",
    "token_logprobs_and_entropies",
]
