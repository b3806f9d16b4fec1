"""LoRA's settings: `LoraConfig` (which projections get adapters, their shape) and the roles a
target may name (`LORA_ROLES`). A config-only module: reading a config builds no model code.
The adapters themselves are `tjx.nn.lora`'s.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from tjx.core.config.values import positive, rate
from tjx.core.fields import setting

__all__ = ["LORA_ROLES", "LoraConfig"]

#: The logical roles a LoRA target may name.
LORA_ROLES = ("q", "k", "v", "o", "gate", "up", "down")


@dataclass(frozen=True)
class LoraConfig:
    """Which projections get adapters, and their shape."""

    rank: int = setting(8, help="rank r of each adapter (A is [in, r], B is [r, out])")
    alpha: float = setting(16.0, help="the update is scaled by alpha / rank (PEFT's lora_alpha)")
    dropout: float = setting(
        0.0, resumable=True, help="dropout on an adapter's input while training"
    )
    targets: tuple[str, ...] = setting(
        ("q", "k", "v", "o"),
        help="projections by role: q, k, v, o, gate, up, down",
        each_choices=LORA_ROLES,
    )
    rslora: bool = setting(False, help="scale by alpha / sqrt(rank) (rank-stabilised LoRA)")
    #: The defaults, built once: what a config without ``lora`` settings runs with.
    DEFAULTS: ClassVar[LoraConfig]

    def __post_init__(self) -> None:
        positive("LoraConfig", "rank", self.rank)
        if (
            isinstance(self.alpha, bool)
            or not isinstance(self.alpha, int | float)
            or self.alpha <= 0
        ):
            raise ValueError(f"LoraConfig.alpha must be a positive number; got {self.alpha!r}")
        rate("LoraConfig", "dropout", self.dropout)
        targets = tuple(self.targets) if isinstance(self.targets, list | tuple) else None
        if not targets:
            raise ValueError(f"LoraConfig.targets must name at least one of {LORA_ROLES}")
        unknown = [t for t in targets if t not in LORA_ROLES]
        if unknown:
            raise ValueError(
                f"LoraConfig.targets: {unknown} are not roles; choose from {LORA_ROLES}"
            )
        object.__setattr__(self, "targets", targets)

    @property
    def scale(self) -> float:
        """The factor of ``A · B``: ``alpha / rank``, or ``alpha / √rank`` with ``rslora``."""
        return float(self.alpha / (np.sqrt(self.rank) if self.rslora else self.rank))


LoraConfig.DEFAULTS = LoraConfig()
