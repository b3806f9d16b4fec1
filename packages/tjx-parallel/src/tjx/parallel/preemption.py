"""Stopping together: SIGTERM/SIGINT set a flag that the loop checks at its step boundaries, and
every process decides alike on the step where the run stops.

The handler of :func:`stop_on_signals` only records the signal (no step is cut in half, no save
either: a signal during a checkpoint's write lets it finish) and writes its line to file
descriptor 2, once (:func:`write_stderr`: a signal can land inside ``sys.stderr``'s buffered
write, where ``print`` raises "reentrant call"); a repeated SIGTERM is already being obeyed and
says nothing. It never raises where Python happens to be, with two exceptions. A second Ctrl-C
runs ``stop_now`` (an app ends the process there, :func:`exit_now`, rather than unwind through a
save whose threads would report the interruption as their failure), else raises
KeyboardInterrupt. Inside :meth:`StopFlag.interruptible` (work with no step boundary left to wait
for: a run's last evaluation and samples) the first signal also raises :class:`StoppedError`, so
the app saves and ends instead of finishing that work. Python runs a handler between two
bytecodes of the main thread, which may be inside a garbage-collection callback (jax has one) or
a finalizer: those swallow an exception (printing it as "Exception ignored in ...") and the work
goes on. So the block watches ``sys.unraisablehook``: a :class:`StoppedError` swallowed there is
not printed and is raised again at the next bytecode (``_thread.interrupt_main`` re-runs the
handler), until it leaves the block. It is a ``BaseException``, as KeyboardInterrupt is, so that
an ``except Exception`` of the work does not take it for the work's own failure.

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

import _thread
import contextlib
import os
import signal
import sys
import threading
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
#: How long after a swallowed StoppedError it is raised again (the callback has returned by then,
#: else it is swallowed and raised again once more).
RAISE_AGAIN_S = 0.005
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


class StoppedError(BaseException):
    """A signal cut short the work of a :meth:`StopFlag.interruptible` block (``args[0]``: the
    signal's name). A ``BaseException`` (as KeyboardInterrupt): ``except Exception`` in the
    work, which handles the work's own failures, lets it through."""


class StopFlag:
    """Which signal asked the loop to stop (``.signal_name``: ``"SIGTERM"``, ``"SIGINT"`` or
    ``None``); true once one came. ``message``: the line written on the first signal (``None``:
    none); ``stop_now``: called on a second SIGINT (then, or without it, KeyboardInterrupt)."""

    def __init__(
        self, message: str | None = STOP_MESSAGE, stop_now: Callable[[], None] | None = None
    ) -> None:
        self.signal_name: str | None = None
        self.message = message
        self.stop_now = stop_now
        self._signum: signal.Signals | None = None
        self._interruptible = False
        # A StoppedError raised and not yet out of the block (nor swallowed): raise no other.
        self._in_flight = False
        # Calls of the handler that `_raise_again` made due: raises again of a swallowed one.
        self._again = 0
        self._in_hook = False  # the block's unraisable hook is running
        self._lock = threading.Lock()  # the block's end against `_raise_again`'s timer

    def __bool__(self) -> bool:
        return self.signal_name is not None

    @contextmanager
    def interruptible(self) -> Iterator[None]:
        """A block of work a signal abandons: the first signal raises :class:`StoppedError`
        where the main thread is (Python takes a signal between two calls into the runtime, not
        inside one), and a signal that came before the block raises on entry. For work that
        keeps nothing half-done (an evaluation, a sample: computed, not yet written) and that no
        other process waits on in a collective, such as a run's work after its last step, which
        never reaches another step boundary. A raise that lands in a garbage-collection callback
        or a finalizer, which would swallow it, is raised again after it (module docstring)."""
        if self.signal_name is not None:
            raise StoppedError(self.signal_name)
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            if not (self._in_flight and isinstance(unraisable.exc_value, StoppedError)):
                previous(unraisable)
                return
            # Swallowed by a callback or finalizer: not printed, raised again once it returned.
            self._in_flight, self._in_hook = False, True
            try:
                self._raise_again()
            finally:
                self._in_hook = False

        sys.unraisablehook = hook
        self._interruptible = True
        try:
            yield
        finally:
            with self._lock:  # no raise again is made due from now on
                self._interruptible = self._in_flight = False
            if sys.unraisablehook is hook:  # unless someone replaced it meanwhile
                sys.unraisablehook = previous

    def handle(self, signum: int, frame: types.FrameType | None) -> None:
        """The signal handler (``signal.signal(signum, flag.handle)``)."""
        del frame
        if self._again:  # `_raise_again`'s call: a swallowed StoppedError, raised again
            self._again -= 1
            if self._in_hook:  # not inside the hook (where it is swallowed too): later
                self._raise_again()
                return
            self._raise_if_interruptible()  # nothing once the block has ended
            return
        if self.signal_name is not None:
            if signum == signal.SIGINT:
                if self.stop_now is not None:
                    self.stop_now()
                raise KeyboardInterrupt
            return  # already stopping (a scheduler repeating its SIGTERM): said once
        self._signum = signal.Signals(signum)
        self.signal_name = self._signum.name
        if self.message is not None:
            again = AGAIN if signum == signal.SIGINT else ""
            with contextlib.suppress(OSError):  # a closed stderr must not become the error
                write_stderr(self.message.format(signal=self.signal_name, again=again))
        self._raise_if_interruptible()

    def _raise_again(self) -> None:
        """Run the handler again soon, at the main thread's next bytecode after a moment:
        ``_thread.interrupt_main`` called from the main thread itself would run it at once,
        inside the hook (in the callback still); from another thread it only marks it due."""
        timer = threading.Timer(RAISE_AGAIN_S, self._make_due)
        timer.daemon = True
        timer.start()

    def _make_due(self) -> None:
        with self._lock:  # not after the block's end: its handler may be gone by then
            if self._interruptible and self._signum is not None:
                self._again += 1
                _thread.interrupt_main(self._signum)

    def _raise_if_interruptible(self) -> None:
        # Once: whatever handles StoppedError (the block's unwinding) is not cut short again.
        if self._interruptible and not self._in_flight and self.signal_name is not None:
            self._in_flight = True
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
