"""A dead peer ends every survivor in seconds, with one line naming it.

Why not jax's own detection: jax 0.10's coordination service declares a process dead only after
its heartbeat timeout (100 s by default, :func:`tjx.parallel.initialize`), then aborts the
survivors from a C++ thread (SIGABRT, a stack dump). ``client.get_live_nodes`` does not help: it
is itself a collective (it returns only when every live process calls it, and a dead one counts
as live until that same timeout).

How: every process writes a counter under ``tjx/peers/beat/<rank>`` in the coordination
service's key-value store every ``interval_s`` and lists everyone's counters. A peer whose
counter has not changed for ``silence_s`` is dead. The watch runs on Python threads, which keep
running while the main thread waits inside XLA (compile, execute, transfers release the GIL),
so a long step is not a silence. A finished process writes ``done`` and is never reported.
Process 0 hosts the service: calls that keep failing, or one that hangs for ``silence_s``, mean
the coordinator is lost. jax itself aborts the survivors within a second when process 0's
connection drops (it polls the service for errors): :func:`watch_peers` turns that abort into
the same one line (``tjx.parallel.aborts``); the watch names a lost coordinator itself when its
host stops answering without closing the connection (stopped, hung, cut off).

The exit path matters as much as the step: with gloo (CPU) a collective whose peer died raises at
once ("Connection closed by peer"), the process exits, and jax's exit handler then waits at a
shutdown barrier for the dead peer until its heartbeat timeout. So a process that leaves without
``stop(done=True)`` (an error, the end of the interpreter) stops beating, since it failed and its
peers should notice, but keeps judging the others until it is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import time
from collections.abc import Callable
from typing import Protocol

from tjx.parallel.aborts import guard_aborts
from tjx.parallel.distributed import _give_up, runtime_client

__all__ = ["DONE", "KEY_PREFIX", "KeyValueClient", "PeerWatch", "watch_peers"]

KEY_PREFIX = "tjx/peers/"
#: The heartbeat of a process that finished normally: its silence afterwards is not a death.
DONE = "done"
#: Failed rounds in a row before the coordinator counts as lost: one failed call may be a blip
#: (a slow network, a restarting connection), three in a row at 1 s apart are not.
FAILED_ROUNDS = 3
_VERDICT = "verdict"


class KeyValueClient(Protocol):
    """The part of jax's distributed runtime client the watch uses (a fake in tests)."""

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None: ...

    def key_value_dir_get(self, key: str) -> list[tuple[str, str]]: ...


def _exit_with(message: str) -> None:
    """The default reaction: the main thread may be stuck in a C++ collective, so raising there
    is impossible; print one line and end the process (status 1)."""
    _give_up(f"tjx.parallel: error: {message}")


def _who(ranks: list[int]) -> tuple[str, str]:
    """("process 1", "its host is") or ("processes 1, 2 and 3", "their hosts are")."""
    if len(ranks) == 1:
        return f"process {ranks[0]}", "its host is"
    listed = ", ".join(str(r) for r in ranks[:-1]) + f" and {ranks[-1]}"
    return f"processes {listed}", "their hosts are"


class PeerWatch:
    """Heartbeats through the coordination service; reports the first dead peer once.

    Parameters
    ----------
    client : KeyValueClient or None
        jax's distributed runtime client (:func:`watch_peers` passes it); ``None`` only for a
        single process, where the watch does nothing.
    rank, num_processes : int
        This process's index and the process count.
    silence_s : float
        A peer whose heartbeat has not changed this long is dead; also how long a peer that has
        not written its first heartbeat yet gets from :meth:`start`.
    interval_s : float
        Seconds between two heartbeats (each one write and one listing).
    on_dead : callable, optional
        Called once with the message, on a watch thread. Default: print
        ``tjx.parallel: error: <message>`` to stderr and ``os._exit(1)``.
    clock : callable
        Monotonic seconds (a fake in tests).

    Raises
    ------
    ValueError
        Bad rank, count or timings, or no client for several processes.
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
        self._client = client
        self._rank, self._n = rank, num_processes
        self._silence_s, self._interval_s = silence_s, interval_s
        self._on_dead = on_dead or _exit_with
        self._clock = clock
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._dead: str | None = None
        self._counter = 0
        self._failures = 0
        self._mark_done = False
        self._leaving = False  # failed or exiting: judge the peers, stop beating
        self._reported = threading.Event()  # set once on_dead has returned
        self._last_ok = 0.0
        # rank -> (last heartbeat seen, when it last changed)
        self._seen: dict[int, tuple[str | None, float]] = {}
        self._reset()

    def _reset(self) -> None:
        # A peer not seen yet counts from now, so a slow starter has the whole silence to write
        # its first heartbeat.
        self._last_ok = now = self._clock()
        self._seen = {r: (None, now) for r in range(self._n) if r != self._rank}

    @property
    def dead(self) -> str | None:
        """The message reported (a dead peer or the lost coordinator), or ``None``."""
        return self._dead

    @property
    def running(self) -> bool:
        """Whether the watch threads are alive."""
        return any(t.is_alive() for t in self._threads)

    def start(self) -> PeerWatch:
        """Start the heartbeat and judge threads (daemons); a single process starts nothing.

        Returns
        -------
        PeerWatch
            ``self`` (:class:`RuntimeError` when started twice).
        """
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
        # Runs before jax's own exit handler (registered at import, so earlier in LIFO order).
        atexit.register(self._at_exit)
        return self

    def stop(self, done: bool = True, timeout_s: float = 10.0) -> None:
        """Stop watching; with ``done`` the last heartbeat says this process finished normally.

        Call ``stop(done=True)`` when the work is finished, before a slow end (final files,
        the exit): peers still busy then do not report this process dead. After a failure,
        leaving the ``with`` block by the error, or nothing, is better than ``stop(done=False)``:
        the watch stops beating (the peers should notice) but judges them until the process is
        gone. Stop before an explicit ``jax.distributed.shutdown()``, after which calls fail.

        Parameters
        ----------
        done : bool
            Write ``done`` as this process's last heartbeat (not when a death was reported).
        timeout_s : float
            How long to wait for each thread (one whose call hangs is a daemon and is left).
        """
        atexit.unregister(self._at_exit)
        with self._lock:
            self._mark_done = done and self._dead is None
        self._stop.set()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout_s)

    def beat(self) -> str | None:
        """One round (the beat thread's, every ``interval_s``): write this process's heartbeat,
        read everyone's, judge the peers.

        Returns
        -------
        str or None
            The reported message (also on earlier rounds), or ``None``.
        """
        if self._dead is not None or self._client is None:
            return self._dead
        self._counter += 1
        try:
            if not self._leaving:
                key = f"{KEY_PREFIX}beat/{self._rank}"
                self._client.key_value_set(key, str(self._counter), True)
            entries = self._client.key_value_dir_get(KEY_PREFIX)
        except Exception as err:  # jax's runtime error type: the service is gone or cut off
            self._failures += 1
            if self._failures >= FAILED_ROUNDS:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
                self._report(
                    f"{self._coordinator()}: {self._failures} calls in a row failed ({first})"
                )
            return self._dead
        now = self._last_ok = self._clock()
        self._failures = 0
        beats: dict[int, str] = {}
        for key, value in entries:
            name = key[len(KEY_PREFIX) :] if key.startswith(KEY_PREFIX) else key
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
            who, gone = _who([r for r, _ in silent])
            longest = max(s for _, s in silent)
            self._report(
                f"{who} of {self._n} stopped responding (no heartbeat for {longest:.0f} s: "
                f"killed, crashed or {gone} gone)",
                share=True,
            )
        return self._dead

    def check_coordinator(self) -> str | None:
        """Judge the service itself (the judge thread, every ``interval_s``): no round has
        succeeded for ``silence_s``. A call to a host that stopped answering (SIGSTOP, a hung
        machine, a cut network) hangs instead of failing, so the beat thread cannot tell.

        Returns
        -------
        str or None
            The reported message, or ``None``.
        """
        quiet = self._clock() - self._last_ok
        if self._dead is None and self._n > 1 and quiet > self._silence_s:
            self._report(
                f"{self._coordinator()}: no answer for {quiet:.0f} s (killed, stopped or its "
                f"host is gone)"
            )
        return self._dead

    def wait_dead(self, timeout_s: float | None = None) -> str | None:
        """After a step failed in this process, give the watch the time to name a dead peer.

        With gloo a collective raises as soon as a peer's connection drops, long before the
        peer's silence is over. An app that catches the error calls this first: when a peer
        died, the watch reports it meanwhile (by default: one line, exit status 1, so the caller
        never returns); otherwise the caller goes on with its own error after ``timeout_s``.

        Parameters
        ----------
        timeout_s : float, optional
            Default: ``silence_s + 3 * interval_s``, enough for a death that happened just now.

        Returns
        -------
        str or None
            The message, once ``on_dead`` has returned; ``None`` when nobody died in time, or
            the watch is idle or stopped.
        """
        if not self.running:
            return self._dead
        wait = self._silence_s + 3 * self._interval_s if timeout_s is None else timeout_s
        self._reported.wait(wait)
        return self._dead

    def report(self, message: str) -> None:
        """Report ``message`` as the watch's own (an earlier report wins), then wait until
        ``on_dead`` has returned (it usually ends the process): the SIGABRT handler's way in."""
        self._report(message)
        self._reported.wait(10.0)

    def _coordinator(self) -> str:
        return f"lost the coordinator (process 0 of {self._n})"

    def _report(self, message: str, share: bool = False) -> None:
        with self._lock:
            if self._dead is not None:
                return
            self._dead = message
        self._stop.set()
        if share and self._n > 2 and self._client is not None:
            # With three or more processes, tell the others what happened: when process 0 exits,
            # jax aborts the rest at once, before their own watch has seen the silence.
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
            # finishing anyway; a peer that cannot read "done" reports this process later
            with contextlib.suppress(Exception):
                self._client.key_value_set(f"{KEY_PREFIX}beat/{self._rank}", DONE, True)

    def _judge_loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.check_coordinator()

    def _at_exit(self) -> None:
        # Not "done" (an uncaught exception also ends here), and not stopped: jax's exit handler
        # runs next and waits at a shutdown barrier for every peer, a dead one included.
        self._leaving = True

    def __enter__(self) -> PeerWatch:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        """Success: ``stop(done=True)``. An error: first :meth:`wait_dead` (a dead peer is the
        likelier cause; not for Ctrl-C or ``sys.exit``), then leave as at exit."""
        if exc_type is None:
            self.stop(done=True)
            return
        if issubclass(exc_type, Exception):
            self.wait_dead()
        self._leaving = True


def watch_peers(
    silence_s: float = 15.0,
    interval_s: float = 1.0,
    on_dead: Callable[[str], None] | None = None,
) -> PeerWatch:
    """Watch the other processes of a ``jax.distributed`` run; call right after ``initialize()``.

    Parameters
    ----------
    silence_s : float
        A peer silent this long is dead (keep it well below ``initialize``'s
        ``heartbeat_timeout_s``, when jax aborts with a stack dump instead).
    interval_s : float
        Seconds between heartbeats.
    on_dead : callable, optional
        Called once with a message such as ``"process 1 of 2 stopped responding (...)"`` or
        ``"lost the coordinator (process 0 of 2): ..."``, on a watch thread while the main thread
        may be stuck in a collective: do quick work only, and end the process. Default: print
        ``tjx.parallel: error: <message>`` to stderr and exit with status 1.

    Returns
    -------
    PeerWatch
        Started; for a single process (``jax.distributed`` not initialised) an idle watch whose
        ``stop`` does nothing.
    """
    import jax

    if not jax.distributed.is_initialized():
        return PeerWatch(None, 0, 1, silence_s=silence_s, interval_s=interval_s, on_dead=on_dead)
    client, rank, num_processes = runtime_client("watch_peers")
    watch = PeerWatch(
        client, rank, num_processes, silence_s=silence_s, interval_s=interval_s, on_dead=on_dead
    ).start()
    # jax aborts a survivor of process 0 at once (SIGABRT, a C++ dump): one line instead.
    guard_aborts(watch, rank, num_processes)
    return watch
