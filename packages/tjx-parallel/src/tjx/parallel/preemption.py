"""Stopping together: SIGTERM/SIGINT set a flag that the loop checks at its step boundaries, and
every process decides alike on the step where the run stops.

The handler of :func:`stop_on_signals` only records the signal (no step is cut in half) and
writes its line to file descriptor 2 (:func:`write_stderr`: a signal can land inside
``sys.stderr``'s buffered write, where ``print`` raises "reentrant call"). A second Ctrl-C runs
``stop_now`` (an app ends the process there, :func:`exit_now`, rather than unwind through a save
whose threads would report the interruption as their failure), else raises KeyboardInterrupt.
Inside :meth:`StopFlag.interruptible` (work with no step boundary left to wait for: a run's
last evaluation and samples) the first signal also raises :class:`StoppedError`, so the app saves
and ends instead of finishing that work.

A scheduler's SIGTERM reaches a job's tasks one by one, or misses one; a process stopping alone
would enter the checkpoint save (a collective) while a peer enters the next step (another one),
and both would hang. :func:`stop_agreement` decides alike everywhere through the coordination
service: a signalled process writes ``<name>/<step>/<rank>``, all meet at one barrier (its id
reused: jax counts rounds), then all list that step's keys. No device collective: an all-gather
would queue behind the step just dispatched and cost the host its run-ahead (~0.9 ms per boundary
against ~2 ms, 2 processes, loopback, CPU). Not jax's preemption sync point (what orbax and
MaxText use): it hears SIGTERM only in its own C++ handler, which the app's Python one replaces;
it knows no SIGINT; and before the app's handler exists it swallows SIGTERM. Join with
``preemption_service=False``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import types
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

#: The first signal's line: ``{signal}`` its name, ``{again}`` :data:`AGAIN` after SIGINT.
STOP_MESSAGE = "{signal}: stopping at the next step boundary{again}"
AGAIN = "; Ctrl-C again stops at once"
#: The keys' folder and the barrier id of :func:`stop_agreement`.
STOP_NAME = "tjx/stop"
# Hosts meet within a step of each other, but a first compile on a loaded host may lag by
# minutes; a dead peer is the peer watch's (~15 s).
STOP_TIMEOUT_S = 3600.0
#: (step, this process's signal or None) → {rank: signal} of every process signalled there.
Exchange = Callable[[int, "str | None"], dict[int, str]]


def write_stderr(line: str) -> None:
    """Write one line to file descriptor 2, unbuffered: safe inside a signal handler."""
    data = (line + "\n").encode()
    while data:  # os.write may take part of it (a full pipe); the rest follows
        data = data[os.write(2, data) :]


def exit_now(code: int) -> NoReturn:
    """End the process at once (``os._exit``: no cleanup, no thread reports its interruption),
    after flushing ``sys.stdout`` (lost, not the exit, when the signal landed inside a write)."""
    with contextlib.suppress(RuntimeError):
        sys.stdout.flush()
    os._exit(code)


class StoppedError(Exception):
    """A signal cut short the work of a :meth:`StopFlag.interruptible` block (``args[0]``: the
    signal's name)."""


class StopFlag:
    """Which signal asked the loop to stop (``.signal_name``: ``"SIGTERM"``, ``"SIGINT"`` or
    ``None``); true once one came. ``message``: the line written on a signal (``None``: none);
    ``stop_now``: called on a second SIGINT (then, or without it, KeyboardInterrupt)."""

    def __init__(
        self, message: str | None = STOP_MESSAGE, stop_now: Callable[[], None] | None = None
    ) -> None:
        self.signal_name: str | None = None
        self.message = message
        self.stop_now = stop_now
        self._interruptible = False

    def __bool__(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block of work a signal abandons: the first signal raises :class:`StoppedError`
        where the main thread is (Python takes a signal between two calls into the runtime, not
        inside one), and a signal that came before the block raises on entry. For work that
        keeps nothing half-done (an evaluation, a sample: computed, not yet written) and that no
        other process waits on in a collective, such as a run's work after its last step, which
        never reaches another step boundary."""
        if self.signal_name is not None:
            raise StoppedError(self.signal_name)
        self._interruptible = True
        try:
            yield
        finally:
            self._interruptible = False

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
        if self._interruptible:  # once: whatever handles StoppedError is not cut short again
            self._interruptible = False
            raise StoppedError(self.signal_name)


@contextmanager
def stop_on_signals(
    *,
    message: str | None = STOP_MESSAGE,
    stop_now: Callable[[], None] | None = None,
    signals: Sequence[int] = (signal.SIGTERM, signal.SIGINT),
) -> Iterator[StopFlag]:
    """Handle ``signals`` by setting a :class:`StopFlag` for the block (from the main thread);
    the old handlers come back after it.

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


class StopAgreement:
    """Decides alike on every process whether the run stops at a step boundary (``exchange``:
    shares this process's signal, :data:`Exchange`; ``None`` for one process)."""

    def __init__(self, exchange: Exchange | None = None) -> None:
        self._exchange = exchange

    def decide(self, step: int, local: str | None) -> str | None:
        """Whether to stop before ``step`` (every process asks at every boundary, in order):
        ``local`` (this process's signal) when it was signalled, ``"<SIGNAL> on process <rank>"``
        (the lowest rank signalled) when only others were, ``None`` when nobody was."""
        if self._exchange is None:
            return local
        signals = self._exchange(step, local)
        if local is not None or not signals:
            return local
        rank = min(signals)
        return f"{signals[rank]} on process {rank}"


def coordination_exchange(
    client: Any, rank: int, *, name: str = STOP_NAME, timeout_s: float = STOP_TIMEOUT_S
) -> Exchange:
    """An :data:`Exchange` over jax's runtime client (``key_value_set``, ``wait_at_barrier``,
    ``key_value_dir_get``; a fake in tests). The keys are per step (a fast process may write at
    the next boundary while a slow one reads this one); only a signalled process writes, once.
    It raises RuntimeError naming the step when the barrier times out."""
    timeout_ms = max(1, int(timeout_s * 1000))

    def exchange(step: int, local: str | None) -> dict[int, str]:
        if local is not None:
            client.key_value_set(f"{name}/{step}/{rank}", local, True)
        try:
            client.wait_at_barrier(name, timeout_ms)
        except Exception as err:  # jax's runtime error type; name the step and the cause
            raise RuntimeError(
                f"stop agreement at step {step}: not every process reached the step boundary "
                f"within {timeout_s:g} s (process {rank}): {err}"
            ) from err
        entries = client.key_value_dir_get(f"{name}/{step}/")
        return {int(key.rstrip("/").rsplit("/", 1)[-1]): value for key, value in entries}

    return exchange


def stop_agreement(name: str = STOP_NAME) -> StopAgreement:
    """The agreement for this run: the local flag alone for one process, else over the
    coordination service (``name``: its keys and barrier); a RuntimeError if it never joined."""
    import jax

    from tjx.parallel.internals import runtime_client

    if jax.process_count() == 1:
        return StopAgreement()
    client, rank, _ = runtime_client("stop agreement")
    return StopAgreement(coordination_exchange(client, rank, name=name))
