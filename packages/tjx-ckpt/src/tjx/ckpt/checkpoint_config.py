"""A run's checkpoint settings: how many checkpoints `CheckpointManager` keeps and how it writes
them (the trainer's ``checkpoint:`` section; each field declared once, with its help and bounds).
"""

# `setting()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from tjx.core.fields import setting

__all__ = ["CheckpointConfig"]


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints under ``RUN_DIR/checkpoints``.

    Attributes
    ----------
    keep_last:
        `CheckpointManager`'s ``keep_last``: the newest checkpoints kept.
    keep_best:
        `CheckpointManager`'s ``keep_best``: also keep the N lowest ``val_loss`` (``None``: off).
    async_save:
        `CheckpointManager`'s ``async_save``: write checkpoints in the background.
    """

    keep_last: int = setting(3, min=1, help="newest checkpoints kept")
    keep_best: int | None = setting(None, min=1, help="also keep the N lowest val_loss; null: off")
    async_save: bool = setting(True, help="write checkpoints in the background")

    def manager_options(self) -> dict[str, Any]:
        """`CheckpointManager`'s keyword arguments of these settings (the best by ``val_loss``)."""
        options = {f.name: getattr(self, f.name) for f in fields(self)}
        return options | {"best_metric": "val_loss" if self.keep_best else None}
