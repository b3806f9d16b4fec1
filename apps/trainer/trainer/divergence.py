"""Stop a diverged run: too many steps in a row with a non-finite loss or a dropped update.

With ``optimizer.skip_nonfinite`` (the default) a step with NaN/Inf gradients changes nothing, so a
diverged run would otherwise spin to its last step and finish "done" with NaN metrics. The guard
reads each step's ``loss`` and ``skipped`` one step late — after the next step is dispatched — so
the device always has the next step queued while the host waits; a checkpoint
boundary and the end of the loop ask for the newest step at once (:meth:`DivergenceGuard.flush`),
so no checkpoint is written from a bad streak.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import jax


@dataclass
class DivergenceGuard:
    """Counts consecutive bad steps; ``diverged`` holds the error message once ``limit`` is hit."""

    limit: int
    streak: int = 0
    first_bad: int | None = None
    warned: bool = False
    diverged: str | None = None
    _pending: tuple[int, Any, Any] | None = field(default=None, repr=False)

    def push(self, step: int, out: dict[str, Any]) -> None:
        """Hold step ``step``'s outputs and judge the step held before it."""
        previous, self._pending = self._pending, (step, out["loss"], out.get("skipped"))
        if previous is not None:
            self._judge(*previous)

    def flush(self) -> None:
        """Judge the held step now (waits for it)."""
        previous, self._pending = self._pending, None
        if previous is not None:
            self._judge(*previous)

    def _judge(self, step: int, loss: Any, skipped: Any) -> None:
        loss_value, was_skipped = jax.device_get((loss, skipped))
        bad = bool(was_skipped) or not math.isfinite(float(loss_value))
        if not bad:
            self.streak, self.first_bad = 0, None
            return
        self.streak += 1
        self.first_bad = step if self.first_bad is None else self.first_bad
        why = (
            "its update was skipped (non-finite gradients)" if was_skipped else "loss is not finite"
        )
        if not self.warned:
            self.warned = True
            print(
                f"warning: step {step}: {why} (loss {float(loss_value):g}); the run stops after "
                f"train.max_bad_steps={self.limit} such steps in a row",
                file=sys.stderr,
                flush=True,
            )
        if self.streak >= self.limit and self.diverged is None:
            self.diverged = (
                f"training diverged: steps {self.first_bad}–{step} ({self.streak} in a row) had a "
                f"non-finite loss or a skipped update (last loss {float(loss_value):g}); lower "
                "optimizer.lr, raise optimizer.schedule.warmup_steps or set optimizer.clip_norm, "
                "and resume from the last checkpoint (train.max_bad_steps sets the limit)"
            )
