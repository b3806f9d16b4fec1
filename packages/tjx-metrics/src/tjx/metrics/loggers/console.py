"""Console logger: one compact rich line per log call.

``step    120 │ 0:01:05 │ loss 3.412 │ learning_rate 3.00e-04 │ tokens_per_s 45.1k │ mfu 38.2%``,
or with the run's length known (``total_steps``) the step of the total and the time left:
``step 120/600 │ loss 3.412 │ learning_rate 3.00e-04 │ tokens_per_s 45.1k │ ETA 0:03:12``.

Histograms are not printed (use TensorBoard or W&B); text samples are printed on their own line,
shortened to ``max_text_chars``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from rich.console import Console
from rich.text import Text

from tjx.metrics.loggers.base import Logger, Scalar

__all__ = ["ConsoleLogger", "format_scalar"]

_SEP = " │ "


def _compact(value: float) -> str:
    for threshold, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= threshold:
            return f"{value / threshold:.3g}{suffix}"
    return f"{value:.4g}"


def format_scalar(key: str, value: Scalar) -> str:
    """Format one value compactly: rates with k/M/G suffixes, ``mfu`` as a percentage, tiny or huge
    floats in scientific notation, others with 4 significant digits.

    Examples
    --------
    >>> format_scalar("tokens_per_s", 45123.0), format_scalar("mfu", 0.3821)
    ('45.1k', '38.2%')
    """
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # nan / inf / -inf: shown as they are, never hidden
    if key == "mfu" or key.endswith("_mfu"):
        return f"{100.0 * value:.1f}%"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) < 10**6 else _compact(float(value))
    if key.endswith(("_per_s", "_per_device", "tokens", "flops")):
        return _compact(value)
    if value != 0.0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
        return f"{value:.2e}"
    return f"{value:.4g}"


def _elapsed(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class ConsoleLogger(Logger):
    """Print one compact line per :meth:`log_scalars` call with rich.

    Parameters
    ----------
    keys
        Which scalars to show, in this order (others are left out); ``None`` shows all, in the
        order given.
    console
        A ``rich.console.Console``; defaults to one on stdout.
    max_text_chars
        Text samples longer than this are cut (with "…").
    total_steps
        The run's last step: each line shows ``step N/total`` and, from the second line on, the
        time left at the rate since the first line (``ETA h:mm:ss``; the first interval would
        count a compilation) instead of the time elapsed.
    """

    name = "console"

    def __init__(
        self,
        *,
        keys: Sequence[str] | None = None,
        console: Console | None = None,
        max_text_chars: int = 500,
        total_steps: int | None = None,
    ) -> None:
        if max_text_chars < 1:
            raise ValueError(f"max_text_chars must be >= 1; got {max_text_chars}")
        self.keys = None if keys is None else list(keys)
        self.console = console or Console(highlight=False)
        self.max_text_chars = max_text_chars
        self.total_steps = total_steps
        self._start = time.monotonic()
        self._first: tuple[int, float] | None = None  # (step, time) of the first scalars line

    def _prefix(self, step: int) -> Text:
        if self.total_steps is not None:
            return Text(f"step {step}/{self.total_steps}", style="bold")
        line = Text(f"step {step:>7}", style="bold")
        line.append(_SEP + _elapsed(time.monotonic() - self._start), style="dim")
        return line

    def _eta(self, step: int) -> str | None:
        """The time left at the rate since the first line; None on the first line."""
        now = time.monotonic()
        if self._first is None or step <= self._first[0]:
            self._first = self._first or (step, now)
            return None
        per_step = (now - self._first[1]) / (step - self._first[0])
        return _elapsed(per_step * max((self.total_steps or step) - step, 0))

    def _write_scalars(self, step: int, scalars: dict[str, Scalar]) -> None:
        keys = list(scalars) if self.keys is None else [k for k in self.keys if k in scalars]
        if not keys:  # none of the keys asked for (a validation call): no line
            return
        line = self._prefix(step)
        for key in keys:
            value = scalars[key]
            bad = isinstance(value, float) and not math.isfinite(value)
            line.append(_SEP + key + " ", style="dim")
            line.append(format_scalar(key, value), style="bold red" if bad else "")
        eta = self._eta(step) if self.total_steps is not None else None
        if eta is not None:
            line.append(_SEP + "ETA ", style="dim")
            line.append(eta)
        # soft_wrap: never break the line into several; a terminal may still wrap it visually.
        self.console.print(line, soft_wrap=True)

    def _write_histograms(self, step: int, values: dict[str, np.ndarray]) -> None:
        pass  # distributions do not fit one line; see TensorBoard / W&B

    def _write_text(self, step: int, key: str, text: str) -> None:
        shown = text if len(text) <= self.max_text_chars else text[: self.max_text_chars] + "…"
        line = self._prefix(step)
        line.append(_SEP + key + ": ", style="dim")
        line.append(shown.replace("\n", "⏎ "))  # Text(): no rich markup is interpreted
        self.console.print(line, soft_wrap=True)

    def flush(self) -> None:
        file: Any = self.console.file
        if hasattr(file, "flush"):
            file.flush()
