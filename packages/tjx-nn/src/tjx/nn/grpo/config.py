"""GRPO's settings: `GrpoConfig` (TRL ``GRPOConfig``'s names and defaults) and the values its
choices take (`GRPO_LOSSES`, `CLIPPED_LOSSES`, `IMPORTANCE_LEVELS`, `ADVANTAGE_SCALES`).

The formulas they select are `tjx.nn.grpo.losses`'.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from tjx.core.config.values import choice
from tjx.core.fields import setting

__all__ = [
    "ADVANTAGE_SCALES",
    "CLIPPED_LOSSES",
    "GRPO_LOSSES",
    "IMPORTANCE_LEVELS",
    "GrpoConfig",
]

#: The per-token losses and their aggregations (TRL's ``loss_type`` of the same names).
GRPO_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
#: The losses with PPO's clipped objective: ``delta`` caps them, ``clip_ratio/*`` is logged.
CLIPPED_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
#: Where the importance ratio is taken (TRL's ``importance_sampling_level``): per token, or one
#: per completion (GSPO).
IMPORTANCE_LEVELS = ("token", "sequence")
#: What the advantages are divided by (TRL's ``scale_rewards``).
ADVANTAGE_SCALES = ("group", "batch", "none")
#: The loss types each family of settings applies to (a value changed for another one would do
#: nothing: refused, not ignored).
_ONLY_FOR = {
    "delta": CLIPPED_LOSSES,
    "sapo_temperature_pos": ("sapo",),
    "sapo_temperature_neg": ("sapo",),
    "vespo_k_pos": ("vespo",),
    "vespo_lambda_pos": ("vespo",),
    "vespo_k_neg": ("vespo",),
    "vespo_lambda_neg": ("vespo",),
}


@dataclass(frozen=True)
class GrpoConfig:
    """How GRPO turns rewards into a loss (`group_advantages`' and `grpo_loss`'s settings, TRL
    ``GRPOConfig``'s names and defaults)."""

    beta: float = setting(
        0.0,
        min=0,
        help="β: the weight of the per-token KL to the reference policy (0: no reference pass)",
    )
    epsilon: float = setting(
        0.2, gt=0, help="ε_low: the ratio is clipped below at 1 - ε (TRL's epsilon)"
    )
    epsilon_high: float | None = setting(
        None,
        gt=0,
        help="ε_high: clipped above at 1 + ε_high (DAPO: 0.28); cispo: the cap on the ratio "
        "itself (ScaleRL: 5.0); null: ε",
    )
    loss_type: str = setting(
        "dapo",
        choices=GRPO_LOSSES,
        help="the per-token loss and its aggregation: grpo, bnpo, dr_grpo, dapo, cispo, sapo, "
        "luspo or vespo (TRL's loss_type)",
    )
    kl_correction: bool = setting(
        True,
        help="multiply the per-token KL by the policy ratio (the unbiased reverse-KL gradient, "
        "DeepSeek-V3.2; TRL's use_bias_correction_kl)",
    )
    scale_rewards: str = setting(
        "group",
        choices=ADVANTAGE_SCALES,
        help="divide the advantages by the group's or the batch's reward std, or none",
    )
    importance_sampling_level: str = setting(
        "token",
        choices=IMPORTANCE_LEVELS,
        help="token: a ratio per token; sequence: one per completion, exp of its tokens' mean "
        "log-ratio (GSPO, with a small epsilon: 3e-4 / 4e-4)",
    )
    delta: float | None = setting(
        None,
        gt=1,
        help="two-sided clipping (INTELLECT-2): the ratio is also capped at δ (> 1 + ε_high) in "
        "the clipped losses; null: off",
    )
    top_entropy_quantile: float = setting(
        1.0,
        min=0,
        max=1,
        help="ρ: only the tokens in the batch's top-ρ entropy quantile carry the policy loss "
        "(Beyond the 80/20 rule: 0.2); 1: all",
    )
    entropy_coef: float = setting(
        0.0, min=0, help="the entropy bonus: minus this times the token mean entropy; 0: off"
    )
    off_policy_mask_threshold: float | None = setting(
        None,
        gt=0,
        help="drop a completion with a negative advantage whose mean log π_old - log π exceeds "
        "it (DeepSeek-V3.2's off-policy mask, e.g. 0.5); null: off",
    )
    sapo_temperature_pos: float = setting(
        1.0, gt=0, help="sapo: the gate's temperature τ for a positive advantage"
    )
    sapo_temperature_neg: float = setting(
        1.05, gt=0, help="sapo: τ for a zero or negative advantage"
    )
    vespo_k_pos: float = setting(2.0, min=0, help="vespo: the power k for A >= 0")
    vespo_lambda_pos: float = setting(3.0, gt=0, help="vespo: the decay λ for A >= 0")
    vespo_k_neg: float = setting(3.0, min=0, help="vespo: the power k for A < 0")
    vespo_lambda_neg: float = setting(2.0, gt=0, help="vespo: the decay λ for A < 0")
    #: The defaults, built once: what a config without ``grpo`` loss settings runs with.
    DEFAULTS: ClassVar[GrpoConfig]

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # the numbers' bounds, from their metadata
            _check_number(f, getattr(self, f.name))
        choice("GrpoConfig", "loss_type", self.loss_type, GRPO_LOSSES)
        choice("GrpoConfig", "scale_rewards", self.scale_rewards, ADVANTAGE_SCALES)
        level = self.importance_sampling_level
        choice("GrpoConfig", "importance_sampling_level", level, IMPORTANCE_LEVELS)
        loss = self.loss_type
        for name, losses in _ONLY_FOR.items():
            value, default = getattr(self, name), _default(name)
            if value != default and loss not in losses:
                raise ValueError(
                    f"GrpoConfig.{name}: applies to loss_type {' or '.join(losses)}, not "
                    f"{loss}; drop it or change GrpoConfig.loss_type"
                )
        if loss == "luspo" and level != "sequence":
            raise ValueError(
                "GrpoConfig.importance_sampling_level: luspo weights GSPO's sequence ratio by "
                "the completion's length; set GrpoConfig.importance_sampling_level to sequence"
            )
        if loss == "vespo" and level != "token":
            raise ValueError(
                "GrpoConfig.importance_sampling_level: vespo takes its own sequence weight from "
                "the token ratios; set GrpoConfig.importance_sampling_level to token"
            )
        if loss == "cispo" and self.epsilon_high is None:
            raise ValueError(
                "GrpoConfig.epsilon_high: cispo caps the ratio itself at ε_high (ScaleRL: 5.0), "
                "not at 1 + ε; set GrpoConfig.epsilon_high"
            )
        if self.delta is not None and not self.delta > 1 + self.clip_high:
            raise ValueError(
                f"GrpoConfig.delta: {self.delta} must be > 1 + ε_high ({1 + self.clip_high:g}): "
                "a cap inside the clip range cuts the ratios PPO keeps; raise it or set null"
            )

    @property
    def clip_high(self) -> float:
        """ε_high, which defaults to ε."""
        return float(self.epsilon if self.epsilon_high is None else self.epsilon_high)

    @property
    def needs_entropies(self) -> bool:
        """Whether `grpo_loss` needs the policy's token entropies (the entropy mask or bonus)."""
        return self.top_entropy_quantile < 1.0 or self.entropy_coef > 0


def _default(name: str) -> object:
    return GrpoConfig.__dataclass_fields__[name].default


def _check_number(f: dataclasses.Field[object], value: object) -> None:
    """A numeric field of `GrpoConfig` is a finite number within its metadata's bounds (None
    where its default is None), else a ValueError naming it."""
    bounds = {k: f.metadata[k] for k in ("min", "gt", "max") if k in f.metadata}
    if not bounds or (value is None and f.default is None):
        return
    rule = ", ".join(f"{'>=' if k == 'min' else '>' if k == 'gt' else '<='} {v}"
                     for k, v in bounds.items())  # fmt: skip
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(float(value))  # type: ignore[arg-type]
    if ok:
        v = float(value)  # type: ignore[arg-type]
        ok = (
            v >= bounds.get("min", -math.inf)
            and v > bounds.get("gt", -math.inf)
            and v <= bounds.get("max", math.inf)
        )
    if not ok:
        null = " or null" if f.default is None else ""
        raise ValueError(f"GrpoConfig.{f.name} must be a number {rule}{null}; got {value!r}")


GrpoConfig.DEFAULTS = GrpoConfig()
