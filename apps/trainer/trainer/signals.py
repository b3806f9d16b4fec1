"""SIGTERM/SIGINT → a flag the loop checks between steps (save, exit 0: preemption is normal)."""

from __future__ import annotations

import signal
import types
from collections.abc import Iterator
from contextlib import contextmanager


class StopFlag:
    """Set by a signal; the loop saves a checkpoint and stops at the next step boundary."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: types.FrameType | None) -> None:
        del frame
        if self.signal_name is not None and signum == signal.SIGINT:
            # A second Ctrl-C means "now": give the default behaviour back.
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name


@contextmanager
def stop_on_signals() -> Iterator[StopFlag]:
    """Install SIGTERM/SIGINT handlers for the block; restore the old ones afterwards."""
    flag = StopFlag()
    old = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    for sig in old:
        signal.signal(sig, flag._handle)
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
