"""A dead peer ends every survivor within seconds, with one line naming it.

jax's coordination service declares a process dead only after its heartbeat timeout (100 s), and
``client.get_live_nodes`` is itself a collective. So every process writes a counter under
``tjx/peers/beat/<rank>`` in the service's key-value store every ``interval_s`` and lists
everyone's: a counter unchanged for ``silence_s`` is a death. The threads run while the main
thread waits inside XLA (it releases the GIL), so a long step is no silence; a finished process
writes ``done``. Calls to process 0's service that keep failing, or hang for ``silence_s``, mean
the coordinator is lost. A process leaving without ``stop(done=True)`` (gloo's collectives raise
when a peer drops; jax's exit then waits at a barrier) stops beating but judges peers until gone.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import Protocol

from tjx.parallel.aborts import abort_message, coordinator_reachable, exit_with, guard_aborts
from tjx.parallel.internals import joined_setup, runtime_client

KEY_PREFIX = "tjx/peers/"
DONE = "done"  # a finished process's last heartbeat: its silence afterwards is no death
FAILED_ROUNDS = 3  # failed rounds in a row before the coordinator counts as lost (not a blip)
_VERDICT = "verdict"


class KeyValueClient(Protocol):  # the part of jax's runtime client the watch uses

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None: ...

    def key_value_dir_get(self, key: str) -> list[tuple[str, str]]: ...


class PeerWatch:
    """Heartbeats through the coordination service; reports the first dead peer once.

    ``client``: jax's runtime client (``None`` only for one process: an idle watch); ``rank`` of
    ``num_processes``; a heartbeat unchanged for ``silence_s`` is a death (a peer not seen yet
    has that long from :meth:`start`); one write and one listing every ``interval_s``;
    ``on_dead`` gets the message once, on a watch thread (default :func:`exit_with`); ``clock``:
    monotonic seconds (a fake in tests).
    """

    def __init__(
        self,
        client: KeyValueClient | None,
        rank: int,
        num_processes: int,
        *,
        silence_s: float = 15.0,
        interval_s: float = 1.0,
        on_dead: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if num_processes < 1 or not 0 <= rank < num_processes:
            raise ValueError(f"need 0 <= rank < num_processes, got {rank} of {num_processes}")
        if not 0 < interval_s < silence_s:
            raise ValueError(f"need 0 < interval_s < silence_s, got {interval_s:g}, {silence_s:g}")
        if client is None and num_processes > 1:
            raise ValueError(f"watching {num_processes} processes needs a client")
        self._client, self._rank, self._n = client, rank, num_processes
        self._silence_s, self._interval_s = silence_s, interval_s
        self._on_dead, self._clock = on_dead or exit_with, clock
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._reported = threading.Event()  # set once on_dead has returned
        self._threads: list[threading.Thread] = []
        self._dead: str | None = None
        self._counter = self._failures = 0
        self._mark_done = self._leaving = False  # leaving: failed or exiting, judge, don't beat
        self._reset()

    def _reset(self) -> None:
        self._last_ok = now = self._clock()  # a peer not seen yet counts from now
        self._seen: dict[int, tuple[str | None, float]] = {
            r: (None, now) for r in range(self._n) if r != self._rank
        }

    @property
    def dead(self) -> str | None:
        """The message reported (a dead peer, a lost coordinator), or ``None``."""
        return self._dead

    @property
    def running(self) -> bool:
        """Whether the watch threads are alive."""
        return any(t.is_alive() for t in self._threads)

    def start(self) -> PeerWatch:
        """Start the beat and judge threads (daemons; none for one process); returns ``self``."""
        if self._threads:
            raise RuntimeError("PeerWatch.start: already started")
        if self._n == 1:
            return self
        self._reset()
        self._threads = [
            threading.Thread(target=self._beat_loop, name="tjx-peer-beat", daemon=True),
            threading.Thread(target=self._judge_loop, name="tjx-peer-judge", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        atexit.register(self._at_exit)  # before jax's exit handler (registered earlier)
        return self

    def stop(self, done: bool = True, timeout_s: float = 10.0) -> None:
        """Stop watching; ``done``: the last heartbeat says this process finished normally (peers
        still busy do not report it). After a failure, leave by the error instead: the watch
        stops beating but judges the peers until the process is gone."""
        atexit.unregister(self._at_exit)
        with self._lock:
            self._mark_done = done and self._dead is None
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)

    def beat(self) -> str | None:
        """One round: write this heartbeat, read everyone's, judge; the reported message or None."""
        if self._dead is not None or self._client is None:
            return self._dead
        self._counter += 1
        try:
            if not self._leaving:
                self._client.key_value_set(
                    f"{KEY_PREFIX}beat/{self._rank}", str(self._counter), True
                )
            entries = self._client.key_value_dir_get(KEY_PREFIX)
        except Exception as err:  # jax's runtime error type: the service is gone or cut off
            self._failures += 1
            if self._failures >= FAILED_ROUNDS:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                self._report(f"{self._lost()}: {self._failures} calls in a row failed ({first})")
            return self._dead
        now = self._last_ok = self._clock()
        self._failures = 0
        beats: dict[int, str] = {}
        for key, value in entries:
            name = key.removeprefix(KEY_PREFIX)
            if name == _VERDICT:  # another process saw the death first: end with its words
                self._report(value, share=False)
                return self._dead
            if name.startswith("beat/") and name[5:].isdigit():
                beats[int(name[5:])] = value
        silent: list[tuple[int, float]] = []
        for rank, (last, changed) in sorted(self._seen.items()):
            heard = beats.get(rank)
            if heard == DONE:
                continue
            if heard != last:
                self._seen[rank] = (heard, now)
            elif now - changed > self._silence_s:
                silent.append((rank, now - changed))
        if silent:
            *others, last = (str(r) for r, _ in silent)
            who = f"processes {', '.join(others)} and {last}" if others else f"process {last}"
            gone = "their hosts are" if others else "its host is"
            longest = max(s for _, s in silent)
            self._report(
                f"{who} of {self._n} stopped responding (no heartbeat for {longest:.0f} s: "
                f"killed, crashed or {gone} gone)",
                share=True,
            )
        return self._dead

    def check_coordinator(self) -> str | None:
        """The judge thread's round: no round has succeeded for ``silence_s`` (a call to a host
        that stopped answering hangs instead of failing); the reported message or None."""
        quiet = self._clock() - self._last_ok
        if self._dead is None and self._n > 1 and quiet > self._silence_s:
            self._report(
                f"{self._lost()}: no answer for {quiet:.0f} s (killed, stopped or its host is gone)"
            )
        return self._dead

    def wait_dead(self, timeout_s: float | None = None) -> str | None:
        """After a step failed here, give the watch time to name a dead peer (gloo raises long
        before the silence is over): the message once ``on_dead`` returned (by default it ends the
        process), or ``None`` after ``timeout_s`` (default ``silence_s + 3 * interval_s``)."""
        if not self.running:
            return self._dead
        self._reported.wait(
            self._silence_s + 3 * self._interval_s if timeout_s is None else timeout_s
        )
        return self._dead

    def abort_line(self, reachable: Callable[[], bool]) -> str:
        """What a C++ abort of this process means (for :func:`guard_aborts`). A peer killed in
        the middle of a collective aborts the survivors' (gloo's exception, ``std::terminate``)
        long before its silence is over, so the watch gets that time to name it
        (:meth:`wait_dead`) unless ``reachable()`` says process 0's port refuses: then the
        coordinator is gone and the line says so at once (asked off process 0 only)."""
        coordinator_up = self._rank == 0 or self._dead is not None or reachable()
        if coordinator_up:
            self.wait_dead()
        return abort_message(self._dead, self._rank, self._n, lambda: coordinator_up)

    def report(self, message: str) -> None:
        """Report ``message`` as the watch's own (an earlier report wins) and wait for
        ``on_dead``: the abort handler's way in."""
        self._report(message)
        self._reported.wait(10.0)

    def _lost(self) -> str:
        return f"lost the coordinator (process 0 of {self._n})"

    def _report(self, message: str, share: bool = False) -> None:
        with self._lock:
            if self._dead is not None:
                return
            self._dead = message
        self._stop.set()
        if share and self._n > 2 and self._client is not None:
            # Tell the others: when process 0 exits, jax aborts the rest before they see it.
            with contextlib.suppress(Exception):  # a verdict is there already: theirs wins
                self._client.key_value_set(KEY_PREFIX + _VERDICT, message, False)
            if self._rank == 0:
                time.sleep(2 * self._interval_s)  # every peer lists the keys once meanwhile
        try:
            self._on_dead(message)
        finally:
            self._reported.set()

    def _beat_loop(self) -> None:
        while not self._stop.is_set():
            self.beat()
            self._stop.wait(self._interval_s)
        with self._lock:
            mark_done = self._mark_done
        if mark_done and self._client is not None:
            with contextlib.suppress(Exception):  # finishing anyway; a peer may report us later
                self._client.key_value_set(f"{KEY_PREFIX}beat/{self._rank}", DONE, True)

    def _judge_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check_coordinator()

    def _at_exit(self) -> None:
        self._leaving = True  # not "done" (an uncaught error ends here too), and not stopped

    def __enter__(self) -> PeerWatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Success: ``stop(done=True)``; an error: :meth:`wait_dead` first (a dead peer is the
        likelier cause; not for Ctrl-C or ``sys.exit``), then leave as at exit."""
        if exc_type is None:
            self.stop(done=True)
            return
        if issubclass(exc_type, Exception):
            self.wait_dead()
        self._leaving = True


def watch_peers(
    silence_s: float = 15.0, interval_s: float = 1.0, on_dead: Callable[[str], None] | None = None
) -> PeerWatch:
    """Watch the other processes of a joined run (call right after joining); one process: an
    idle watch. ``on_dead`` gets ``"process 1 of 2 stopped responding (...)"`` or ``"lost the
    coordinator (process 0 of 2): ..."`` once, on a watch thread while the main thread may be
    stuck in a collective: quick work only, then end the process (default :func:`exit_with`).
    Keep ``silence_s`` well below jax's heartbeat timeout."""
    import jax

    if not jax.distributed.is_initialized():
        return PeerWatch(None, 0, 1, silence_s=silence_s, interval_s=interval_s, on_dead=on_dead)
    client, rank, n = runtime_client("watch_peers")
    watch = PeerWatch(
        client, rank, n, silence_s=silence_s, interval_s=interval_s, on_dead=on_dead
    ).start()
    reachable = partial(coordinator_reachable, joined_setup()[0])
    guard_aborts(partial(watch.abort_line, reachable), watch.report)
    return watch
