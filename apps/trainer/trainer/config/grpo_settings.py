"""The ``grpo`` section's own keys: how the trainer's GRPO loop samples and scores (tjx.nn's
`GrpoConfig`, the section's other keys, is the loss). Kept apart from trainer/step/grpo.py, which
loads JAX: the command line reads these before any package is imported."""

# `setting()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from tjx.core.config.schema import Entry
from tjx.core.fields import setting

#: ``grpo.old_logps``: where π_old's log-probabilities come from (`GrpoRollout.old_from_decode`).
OLD_LOGPS = ("auto", "decode", "recompute")


@dataclass(frozen=True)
class GrpoRollout:
    """The rollout of a GRPO run (``data.format: prompts``): G sampled completions per prompt,
    scored by named rewards, reused for μ optimizer steps."""

    group_size: int = setting(
        8, min=2, help="G: completions sampled per prompt (TRL's num_generations)"
    )
    iterations: int = setting(
        1, min=1, help="μ: optimizer steps on each rollout batch (TRL's num_iterations)"
    )
    temperature: float = setting(1.0, gt=0.0, help="the rollout's sampling temperature")
    top_p: float | None = setting(None, gt=0.0, max=1.0, help="nucleus sampling; null: off")
    max_new_tokens: int = setting(
        16, min=1, help="tokens a completion may have (TRL's max_completion_length)"
    )
    rewards: list[str] = setting(
        list,
        factory=True,
        help="reward functions by name (tjx.data.REWARDS: exact_answer, format, length)",
    )
    reward_weights: list[float] | None = setting(
        None, help="one weight per reward (the reward is their weighted sum); null: 1 each"
    )
    overlap: int = setting(
        0,
        min=0,
        max=1,
        resumable=True,
        help="steps the rollout's weights may lag the update's (the staleness bound): 0 "
        "samples, then updates; 1 samples step t+1's rollout with step t's weights on "
        "grpo.sampler_devices while step t's update runs",
    )
    sampler_devices: int = setting(
        0,
        min=0,
        resumable=True,
        help="with grpo.overlap=1: the run's last N devices sample; the trainer's mesh is the rest",
    )
    old_logps: str = setting(
        "auto",
        choices=OLD_LOGPS,
        resumable=True,
        help="π_old's log-probabilities (read with grpo.overlap=1 or grpo.iterations>1): decode "
        "takes them from the sampler's own decode steps; recompute scores the rollout again "
        "in a forward pass; auto: decode when overlapped, else recompute",
    )
    mask_truncated_completions: bool = setting(
        False,
        help="leave completions that reach max_new_tokens without ending out of the loss "
        "(DAPO; TRL's mask_truncated_completions)",
    )

    @property
    def old_from_decode(self) -> bool:
        """Whether the update's π_old log-probabilities (``old_logps``, scored with overlap or
        μ > 1) are the ones the sampler's decode computed while sampling (trainer.step.grpo's
        `Rollouts`), not a second forward pass over the rollout: ``grpo.old_logps``, whose
        ``auto`` takes the decode's where the run overlaps (there the pass would run on the
        sampler's devices, in the rollout's time; sequential, it keeps the ratio of a rollout's
        first update exactly 1)."""
        if self.iterations == 1 and not self.overlap:
            return False  # μ = 1 sequential: π_old is the policy itself, nothing scored
        return self.old_logps == "decode" or (self.old_logps == "auto" and bool(self.overlap))


def is_grpo(data: Any) -> bool:
    """Whether a run of ``data`` (the config's data section) trains with GRPO (prompt data)."""
    return bool(data.format == "prompts")


def prompt_section(data: Any, rollout: GrpoRollout) -> Any:
    """The data section as the prompt loader reads it: ``data.batch_size`` counts completions
    (TRL's), so a batch holds ``batch_size / group_size`` prompts."""
    return dataclasses.replace(data, batch_size=data.batch_size // rollout.group_size)


def own_keys() -> dict[str, Entry]:
    """`GrpoRollout`'s fields as the schema's own keys of the ``grpo`` section."""
    hints = typing.get_type_hints(GrpoRollout)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(GrpoRollout)}
