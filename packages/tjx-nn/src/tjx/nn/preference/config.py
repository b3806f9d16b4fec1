"""DPO's settings: `PreferenceConfig` (the trainer's ``preference:``) and the losses it may name
(`PREFERENCE_LOSSES`). A config-only module: reading a config builds no model code. The losses
themselves are `tjx.nn.preference.losses`'.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from tjx.core.config.values import choice
from tjx.core.fields import setting

__all__ = ["PREFERENCE_LOSSES", "PreferenceConfig"]

#: The preference losses by name.
PREFERENCE_LOSSES = ("sigmoid", "ipo")


@dataclass(frozen=True)
class PreferenceConfig:
    """How preference pairs train (`preference_loss`'s settings; the trainer's ``preference:``)."""

    beta: float = setting(
        0.1, gt=0, help="β: how strongly the policy is held to the reference (TRL's beta)"
    )
    loss_type: str = setting(
        "sigmoid",
        choices=PREFERENCE_LOSSES,
        help="sigmoid (DPO) or ipo (IPO, per-token log-ratios)",
    )
    #: The defaults, built once: what a config without ``preference`` settings runs with.
    DEFAULTS: ClassVar[PreferenceConfig]

    def __post_init__(self) -> None:
        beta = self.beta
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not beta > 0:
            raise ValueError(f"PreferenceConfig.beta must be a number > 0; got {beta!r}")
        choice("PreferenceConfig", "loss_type", self.loss_type, PREFERENCE_LOSSES)


PreferenceConfig.DEFAULTS = PreferenceConfig()
