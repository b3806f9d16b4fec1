"""A rich progress bar for a training loop, with the latest loss and an ETA.

On a terminal it is a live bar (steps done of the total, loss, elapsed, ETA); elsewhere (a log
file, CI) or when disabled it prints one plain line per ``update`` instead, so a log still shows
the progress without control characters. Notes (``note``) print above the bar either way.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["ProgressBar", "progress_bar"]


class ProgressBar:
    """Progress of a run: ``update(step, loss)`` (or ``update(i, text=...)`` for any other
    count, e.g. a study's configs), ``note(text)``; made by :func:`progress_bar`."""

    def __init__(
        self,
        progress: Progress | None,
        task: TaskID | None,
        console: Console,
        start: int,
        total: int,
    ) -> None:
        self._progress = progress
        self._task = task
        self._console = console
        self._start, self._total = start, total
        self._t0 = time.perf_counter()

    @property
    def live(self) -> bool:
        """Whether this is a live bar on a terminal (else `update` prints a plain line)."""
        return self._progress is not None

    def update(self, step: int, loss: float | None = None, *, text: str | None = None) -> None:
        """Move the bar to ``step`` and show the latest loss, or ``text`` (a plain line when not
        a terminal)."""
        status = text if text is not None else "" if loss is None else f"loss {loss:.4f}"
        if self._progress is not None and self._task is not None:  # both or neither
            self._progress.update(self._task, completed=step, status=status)
            return
        done = step - self._start
        elapsed = time.perf_counter() - self._t0
        eta = elapsed / max(done, 1) * (self._total - step)
        self._console.print(
            f"[{step}/{self._total}] {status}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}",
            highlight=False,
            markup=False,
        )

    def note(self, text: str) -> None:
        """A line above the bar."""
        self._console.print(text, highlight=False)


@contextmanager
def progress_bar(
    start: int,
    total: int,
    *,
    label: str = "train",
    enabled: bool = True,
    console: Console | None = None,
) -> Iterator[ProgressBar]:
    """The bar of one run, from step ``start`` (a resumed run starts part-way) to ``total``.

    Parameters
    ----------
    start, total : int
        The first step and the last.
    label : str
        The bar's name on the terminal.
    enabled : bool
        ``False`` prints plain lines even on a terminal.
    console : rich.console.Console, optional
        Where to print; standard output by default.

    Yields
    ------
    ProgressBar
        Live on a terminal when enabled; plain lines otherwise.
    """
    console = Console(highlight=False) if console is None else console
    if not enabled or not console.is_terminal:
        yield ProgressBar(None, None, console, start, total)
        return
    progress = Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
    with progress:
        task = progress.add_task(label, total=total, completed=start, status="")
        yield ProgressBar(progress, task, console, start, total)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes:d}:{secs:02d}"
