"""SIGTERM/SIGINT → a flag the loop checks between steps (save, exit 0: preemption is normal).

A second Ctrl-C means "stop now": the process ends at once with one line naming the newest
committed checkpoint (exit 130). It does not unwind through the save in progress: orbax's
threads would log the interruption as a failure, traceback and all, and a save cut short stays a
temporary folder that the next ``--resume`` ignores.

The handlers write straight to file descriptor 2: a signal can land while the main thread is inside
``sys.stderr``'s buffered write, and a second ``print`` there raises "reentrant call".
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import types
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from trainer import rundir
from trainer.plan import INTERRUPTED, error_line


def interrupted_exit(run_dir: Path) -> int:
    """Print the one line for a run stopped at once; returns the exit status (130)."""
    step = rundir.latest_saved_step(run_dir)
    last = (
        f"the last checkpoint is step {step} in {str(run_dir)!r}; continue with --resume"
        if step is not None
        else "no checkpoint was saved"
    )
    _say(error_line(f"interrupted: stopped at once; {last}"))
    return INTERRUPTED


def _say(line: str) -> None:
    """Write one line to stderr from a signal handler (unbuffered, never reentrant)."""
    os.write(2, (line + "\n").encode())


class StopFlag:
    """Set by a signal; the loop saves a checkpoint and stops at the next step boundary.

    Parameters
    ----------
    stop_now : callable, optional
        Called on a second SIGINT (`stop_on_signals` passes one that ends the process); if it
        returns, or none is given, a second SIGINT raises KeyboardInterrupt.
    """

    def __init__(self, stop_now: Callable[[], None] | None = None) -> None:
        self.signal_name: str | None = None
        self._stop_now = stop_now

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self.signal_name is not None and signum == signal.SIGINT:
            if self._stop_now is not None:
                self._stop_now()
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        again = "; Ctrl-C again stops at once" if signum == signal.SIGINT else ""
        _say(
            f"trainer: {self.signal_name}: stopping after this step and saving a checkpoint{again}"
        )


def _end_process(run_dir: Path) -> None:
    # The signal may land inside a stdout write: then that line is lost, not the exit.
    with contextlib.suppress(RuntimeError):
        sys.stdout.flush()
    os._exit(interrupted_exit(run_dir))


@contextmanager
def stop_on_signals(run_dir: Path | None = None) -> Iterator[StopFlag]:
    """Install SIGTERM/SIGINT handlers for the block; restore the old ones afterwards.

    Parameters
    ----------
    run_dir : Path, optional
        The run's directory: a second Ctrl-C then ends the process at once, naming its newest
        committed checkpoint. Without it, a second Ctrl-C raises KeyboardInterrupt.
    """
    flag = StopFlag(None if run_dir is None else lambda: _end_process(run_dir))
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in old:
        signal.signal(sig, flag._handle)
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
