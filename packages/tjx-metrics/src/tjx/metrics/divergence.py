"""Stop a diverged run: too many steps in a row with a non-finite loss or a dropped update.

With non-finite step skipping (``tjx.optim``'s ``skip_nonfinite``) a step with NaN/Inf gradients
changes nothing, so a diverged run would otherwise spin to its last step and finish "done" with
NaN metrics. The guard reads each step's ``loss`` and ``skipped`` one step late — after the next
step is dispatched — so the device always has the next step queued while the host waits; a
checkpoint boundary and the end of the loop ask for the newest step at once
(:meth:`DivergenceGuard.flush`, :meth:`DivergenceGuard.end`), so no checkpoint is written from a bad
streak, and a run that ends inside a non-finite streak shorter than the limit is diverged too.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import jax

__all__ = ["DivergenceGuard"]


@dataclass
class DivergenceGuard:
    """Counts consecutive bad steps; ``diverged`` holds the error message once ``limit`` is hit.

    A step is bad when its ``loss`` is not finite or its ``skipped`` flag is set. The first bad
    step prints one warning to stderr; ``limit`` bad steps in a row set ``diverged``.

    Parameters
    ----------
    limit : int
        Bad steps in a row that make the run diverged (>= 1).
    limit_name : str
        How the warning names the limit (a trainer passes its config key).
    advice : str
        What the ``diverged`` message ends with: what to change before resuming.
    end_tolerance : int
        The longest streak of skipped updates with finite losses a run may end in (:meth:`end`);
        a trainer with a dynamic loss scale passes the steps its backoff can take.

    Examples
    --------
    >>> guard = DivergenceGuard(limit=2)
    >>> for step, loss in enumerate([1.0, float("nan"), float("nan")], start=1):
    ...     guard.push(step, {"loss": loss})  # step 2's warning goes to stderr
    >>> guard.flush()
    >>> guard.diverged.startswith("training diverged: steps 2–3 (2 in a row)")
    True
    """

    limit: int
    limit_name: str = "max_bad_steps"
    advice: str = (
        "lower the learning rate, raise the warmup or clip the gradient norm, and resume from "
        "the last checkpoint"
    )
    end_tolerance: int = 0
    streak: int = 0
    first_bad: int | None = None
    streak_nonfinite: bool = False  # a loss of the current streak was not finite
    warned: bool = False
    diverged: str | None = None
    _pending: tuple[int, Any, Any] | None = field(default=None, repr=False)
    _last_step: int = field(default=0, repr=False)
    _last_loss: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        if self.limit < 1:
            raise ValueError(f"limit must be >= 1; got {self.limit}")

    def push(self, step: int, out: dict[str, Any]) -> None:
        """Hold step ``step``'s outputs (``loss``, optional ``skipped``); judge the one before."""
        previous, self._pending = self._pending, (step, out["loss"], out.get("skipped"))
        if previous is not None:
            self._judge(*previous)

    def flush(self) -> None:
        """Judge the held step now (waits for it)."""
        previous, self._pending = self._pending, None
        if previous is not None:
            self._judge(*previous)

    def end(self) -> None:
        """The run ends here: judge the held step; a run that ends inside a bad streak is diverged
        however short the streak (its state must be neither saved nor reported done), unless the
        streak is at most ``end_tolerance`` skipped updates with finite losses (a dynamic loss
        scale backing off: a skipped update leaves the state as it was).
        """
        self.flush()
        tolerated = not self.streak_nonfinite and self.streak <= self.end_tolerance
        if self.diverged is None and self.streak and not tolerated:
            self.diverged = (
                f"training ended inside a non-finite streak: steps {self.first_bad}–"
                f"{self._last_step} ({self.streak} in a row, under {self.limit_name}="
                f"{self.limit}) had a non-finite loss or a skipped update (last loss "
                f"{self._last_loss:g}); {self.advice}"
            )

    def _judge(self, step: int, loss: Any, skipped: Any) -> None:
        loss_value, was_skipped = jax.device_get((loss, skipped))
        self._last_step, self._last_loss = step, float(loss_value)
        finite = math.isfinite(float(loss_value))
        bad = bool(was_skipped) or not finite
        if not bad:
            self.streak, self.first_bad, self.streak_nonfinite = 0, None, False
            return
        self.streak_nonfinite = self.streak_nonfinite or not finite
        self.streak += 1
        self.first_bad = step if self.first_bad is None else self.first_bad
        why = (
            "its update was skipped (non-finite gradients)" if was_skipped else "loss is not finite"
        )
        if not self.warned:
            self.warned = True
            print(
                f"warning: step {step}: {why} (loss {float(loss_value):g}); the run stops after "
                f"{self.limit_name}={self.limit} such steps in a row",
                file=sys.stderr,
                flush=True,
            )
        if self.streak >= self.limit and self.diverged is None:
            self.diverged = (
                f"training diverged: steps {self.first_bad}–{step} ({self.streak} in a row) had a "
                f"non-finite loss or a skipped update (last loss {float(loss_value):g}); "
                f"{self.advice}"
            )
