"""Mark loss spikes while a run trains: a step whose loss is more than ``sigma`` standard
deviations above the mean of the steps before it (a rolling window).

Like `tjx.metrics.DivergenceGuard`, :class:`SpikeDetector` reads each step's loss one step late,
after the next step is dispatched, so marking spikes costs the device no wait. A spike is left
out of the window (a spike does not widen the band the next one is judged by), and so is a
non-finite loss (the divergence guard's business). The first ``warmup`` steps only fill the
window: the fast fall of the first steps is no spike. A checkpoint keeps the window
(:attr:`SpikeDetector.history`) and a resumed run continues it (:meth:`SpikeDetector.resume`):
the steps after a resume are judged as the uninterrupted run judged them.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import numpy as np

__all__ = ["Spike", "SpikeDetector"]


class Spike(NamedTuple):
    """A marked step: its loss, the window's mean and standard deviation, and how many of those
    deviations the loss lies above the mean (``sigmas``)."""

    step: int
    loss: float
    mean: float
    std: float
    sigmas: float


@dataclass
class SpikeDetector:
    """Marks steps whose loss exceeds the rolling mean by ``sigma`` standard deviations.

    Parameters
    ----------
    sigma : float
        How many standard deviations above the window's mean a spike lies (> 0).
    window : int
        The losses of the last ``window`` steps (spikes and non-finite losses left out) that
        the mean and deviation are taken over (>= 2).
    warmup : int, optional
        Steps that only fill the window (default: ``window``, at least 2).

    Examples
    --------
    >>> spikes = SpikeDetector(sigma=3.0, window=8)
    >>> losses = [2.0, 2.1, 1.9, 2.0, 2.1, 1.9, 2.0, 2.1, 9.0, 2.0]
    >>> found = [s for step, loss in enumerate(losses, 1) if (s := spikes.push(step, loss))]
    >>> found += [s for s in [spikes.flush()] if s]
    >>> [(s.step, s.loss) for s in found]
    [(9, 9.0)]
    """

    sigma: float
    window: int = 50
    warmup: int | None = None
    _losses: deque[float] = field(init=False, repr=False)
    _pending: tuple[int, Any] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ValueError(f"sigma must be > 0; got {self.sigma}")
        if self.window < 2:
            raise ValueError(f"window must be >= 2; got {self.window}")
        if self.warmup is None:
            self.warmup = self.window
        self._losses = deque(maxlen=self.window)

    def push(self, step: int, loss: Any) -> Spike | None:
        """Hold step ``step``'s ``loss`` (a device scalar or a number); judge the one before:
        the `Spike` it was, or None."""
        previous, self._pending = self._pending, (step, loss)
        return None if previous is None else self._judge(*previous)

    def flush(self) -> Spike | None:
        """Judge the held step now (waits for it): the `Spike` it was, or None."""
        previous, self._pending = self._pending, None
        return None if previous is None else self._judge(*previous)

    @property
    def history(self) -> list[float]:
        """The window's losses, oldest first (the held step's not among them: `flush` first)."""
        return list(self._losses)

    def resume(self, history: Sequence[float]) -> None:
        """Continue after ``history`` (a checkpoint's `history`): the window holds its last
        ``window`` losses, so a resumed run judges its next steps against the steps before the
        stop, not after a fresh warmup.

        Parameters
        ----------
        history : sequence of float
            The losses, oldest first.
        """
        self._losses.clear()
        self._losses.extend(float(x) for x in history)  # deque(maxlen): keeps the last ones

    def _judge(self, step: int, loss: Any) -> Spike | None:
        value = float(np.asarray(jax.device_get(loss)))
        if not math.isfinite(value):
            return None
        seen = len(self._losses)
        if seen >= max(int(self.warmup or 0), 2):
            history = np.asarray(self._losses, dtype=np.float64)
            mean, std = float(history.mean()), float(history.std())
            if std > 0 and value > mean + self.sigma * std:
                return Spike(step, value, mean, std, (value - mean) / std)
        self._losses.append(value)
        return None
