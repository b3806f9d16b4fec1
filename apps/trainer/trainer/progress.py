"""A rich progress bar with ETA (plain lines when stdout is not a terminal)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Bar:
    """Progress of the run: ``update(step, loss)`` and ``note(text)``."""

    def __init__(
        self, progress: Progress | None, task: Any, console: Console, start: int, total: int
    ) -> None:
        self._progress = progress
        self._task = task
        self._console = console
        self._start, self._total = start, total
        self._t0 = time.perf_counter()

    def update(self, step: int, loss: float) -> None:
        """Move the bar to ``step`` and show the latest loss (a plain line when not a terminal)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step, loss=f"{loss:.4f}")
            return
        done = step - self._start
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / max(done, 1) * (self._total - step)
        self._console.print(
            f"[{step}/{self._total}] loss {loss:.4f}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}",
            highlight=False,
        )

    def note(self, text: str) -> None:
        """A line above the bar."""
        self._console.print(text, highlight=False)


@contextmanager
def bar(cfg: Any, start: int, total: int) -> Iterator[Bar]:
    """The bar for one run (off with ``logging.progress: false`` or when not a terminal)."""
    console = Console(highlight=False)
    if not cfg.logging.progress or not console.is_terminal:
        yield Bar(None, None, console, start, total)
        return
    progress = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task("train", total=total, completed=start, loss="-")
        yield Bar(progress, task, console, start, total)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"
