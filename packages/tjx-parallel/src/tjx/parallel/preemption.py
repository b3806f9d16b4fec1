"""SIGTERM/SIGINT → a flag that a training loop checks at its step boundaries.

A scheduler that preempts a job sends SIGTERM (and SIGKILL after a grace period); a user presses
Ctrl-C. Neither should cut a step in half: the handler of :func:`stop_on_signals` only records
which signal came, and the loop, at its next step boundary, saves a checkpoint and stops. With
several processes they agree on that boundary through :func:`tjx.parallel.stop_agreement`
(``agreement.decide(step, flag.signal_name)``), since a scheduler signals them one by one.

A second Ctrl-C means "stop now": the caller's ``stop_now`` runs (an app typically ends the
process there with :func:`exit_now`, naming its newest committed checkpoint), else
KeyboardInterrupt is raised. Ending the process beats unwinding through a checkpoint save in
progress: orbax's threads would log the interruption as a failure, traceback and all, while a save
cut short stays a temporary folder that a restore ignores.

The handler writes straight to file descriptor 2 (:func:`write_stderr`): a signal can land while
the main thread is inside ``sys.stderr``'s buffered write, and a second ``print`` there raises
``RuntimeError: reentrant call``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

__all__ = [
    "AGAIN",
    "STOP_MESSAGE",
    "StopFlag",
    "exit_now",
    "stop_on_signals",
    "write_stderr",
]

#: The default line written on the first signal: ``{signal}`` is its name, ``{again}`` is
#: :data:`AGAIN` after SIGINT (a second one stops at once) and empty otherwise.
STOP_MESSAGE = "{signal}: stopping at the next step boundary{again}"
#: What ``{again}`` becomes after a first SIGINT.
AGAIN = "; Ctrl-C again stops at once"


def write_stderr(line: str) -> None:
    """Write one line to file descriptor 2, unbuffered: safe inside a signal handler.

    Parameters
    ----------
    line : str
        The text, without its newline.
    """
    data = (line + "\n").encode()
    while data:  # os.write may take part of it (a full pipe); the rest follows
        data = data[os.write(2, data) :]


def exit_now(code: int) -> NoReturn:
    """End the process at once with ``code``, from a signal handler or a watch thread.

    What ``sys.stdout`` holds is flushed first; when the signal landed inside a write to it, that
    flush raises "reentrant call", and then the buffered text is lost, not the exit. No cleanup
    runs (``os._exit``): threads that would log the interruption as their own failure never get
    the chance.

    Parameters
    ----------
    code : int
        The exit status (130 = 128 + SIGINT is what a shell reports for Ctrl-C).
    """
    with contextlib.suppress(RuntimeError):
        sys.stdout.flush()
    os._exit(code)


class StopFlag:
    """Which signal asked the loop to stop; true once one came (set by :func:`stop_on_signals`).

    Parameters
    ----------
    message : str or None
        The line written to stderr on a signal (see :data:`STOP_MESSAGE`); ``None`` writes none.
    stop_now : callable, optional
        Called on a second SIGINT; if it returns, or none is given, KeyboardInterrupt is raised.

    Attributes
    ----------
    signal_name : str or None
        ``"SIGTERM"`` or ``"SIGINT"`` (the latest signal), ``None`` before any.
    """

    def __init__(
        self, message: str | None = STOP_MESSAGE, stop_now: Callable[[], None] | None = None
    ) -> None:
        self.signal_name: str | None = None
        self.message = message
        self.stop_now = stop_now

    def __bool__(self) -> bool:
        return self.signal_name is not None

    def handle(self, signum: int, frame: types.FrameType | None) -> None:
        """The signal handler (``signal.signal(signum, flag.handle)``)."""
        del frame
        if self.signal_name is not None and signum == signal.SIGINT:
            if self.stop_now is not None:
                self.stop_now()
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name
        if self.message is not None:
            again = AGAIN if signum == signal.SIGINT else ""
            write_stderr(self.message.format(signal=self.signal_name, again=again))


@contextmanager
def stop_on_signals(
    *,
    message: str | None = STOP_MESSAGE,
    stop_now: Callable[[], None] | None = None,
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[StopFlag]:
    """Handle ``signals`` by setting a :class:`StopFlag` for the block; restore the old handlers.

    Call it from the main thread (Python runs signal handlers there, and only there may they be
    installed).

    Parameters
    ----------
    message : str or None
        The line written to stderr on a signal, with ``{signal}`` and ``{again}`` fields
        (:data:`STOP_MESSAGE` by default); ``None`` writes nothing.
    stop_now : callable, optional
        What a second SIGINT does (e.g. ``lambda: exit_now(130)``); without it, or if it
        returns, KeyboardInterrupt is raised there.
    signals : sequence of int
        The signals that set the flag.

    Yields
    ------
    StopFlag
        Check ``flag.signal_name`` (or ``bool(flag)``) at each step boundary.

    Examples
    --------
    >>> with stop_on_signals(message=None) as flag:
    ...     for step in range(3):
    ...         if flag:
    ...             break
    >>> flag.signal_name is None
    True
    """
    flag = StopFlag(message, stop_now)
    old = {sig: signal.getsignal(sig) for sig in signals}
    for sig in old:
        signal.signal(sig, flag.handle)
    try:
        yield flag
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)
