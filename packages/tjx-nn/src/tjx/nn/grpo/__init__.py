"""Group-relative policy optimisation (GRPO): group advantages, token log-probabilities, the loss.

Modules: ``losses`` (`GrpoConfig`, `group_advantages`, `token_logprobs`, `grpo_loss`,
`GrpoOutput`). The rollouts come from ``tjx.nn.generate``; the loop that samples, scores and
steps is the trainer's.
"""

from __future__ import annotations

from tjx.nn.grpo.losses import (
    ADVANTAGE_SCALES,
    GRPO_LOSSES,
    GrpoConfig,
    GrpoOutput,
    group_advantages,
    grpo_loss,
    token_logprobs,
)

__all__ = [
    "ADVANTAGE_SCALES",
    "GRPO_LOSSES",
    "GrpoConfig",
    "GrpoOutput",
    "grpo_loss",
    "group_advantages",
    "token_logprobs",
]
