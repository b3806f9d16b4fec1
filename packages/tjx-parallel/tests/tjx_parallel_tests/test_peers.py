"""PeerWatch with an in-memory key-value client: who is dead, when, and what is said once."""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import pytest

from tjx.parallel import PeerWatch, watch_peers
from tjx.parallel.peers import DONE, KEY_PREFIX


class FakeClient:
    """The coordination service's key-value store, in memory; can fail or hang on demand."""

    def __init__(self) -> None:
        self.store: dict[str, str] = {}
        self.writes: list[tuple[float, str, str]] = []  # (time.monotonic(), key, value)
        self.error: Exception | None = None
        self.hang = threading.Event()  # set: calls block until `release` is set
        self.release = threading.Event()
        self.lock = threading.Lock()

    def _call(self) -> None:
        if self.hang.is_set():
            self.release.wait(10)
        if self.error is not None:
            raise self.error

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
        self._call()
        with self.lock:
            if key in self.store and not allow_overwrite:
                raise RuntimeError(f"ALREADY_EXISTS: key {key} already exists.")
            self.store[key] = value
            self.writes.append((time.monotonic(), key, value))

    def key_value_dir_get(self, key: str) -> list[tuple[str, str]]:
        self._call()
        with self.lock:
            return sorted((k, v) for k, v in self.store.items() if k.startswith(key))

    def peer_beats(self, rank: int, value: str) -> None:
        self.store[f"{KEY_PREFIX}beat/{rank}"] = value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watch(client: FakeClient, rank: int = 0, n: int = 2, **kw) -> tuple[PeerWatch, list[str]]:
    said: list[str] = []
    kw.setdefault("silence_s", 10.0)
    kw.setdefault("interval_s", 0.05)  # the verdict's linger on process 0 is 2 intervals
    watch = PeerWatch(client, rank, n, on_dead=said.append, **kw)
    return watch, said


def test_silent_peer_is_reported_once_with_its_rank() -> None:
    client, clock = FakeClient(), Clock()
    watch, said = _watch(client, rank=0, n=3, clock=clock)
    for step in range(5):  # both peers beat for 5 s, then process 2 is killed
        client.peer_beats(1, str(step))
        client.peer_beats(2, str(step))
        assert watch.beat() is None
        clock.now += 1
    for _ in range(10):  # process 1 goes on beating; 2 is silent: 10 s is not yet "over 10 s"
        client.peer_beats(1, str(clock.now))
        assert watch.beat() is None, said
        clock.now += 1
    client.peer_beats(1, str(clock.now))
    message = watch.beat()
    assert message == said[0] == watch.dead
    assert message == (
        "process 2 of 3 stopped responding (no heartbeat for 11 s: killed, crashed or its host "
        "is gone)"
    )
    clock.now += 30
    assert watch.beat() == message and watch.check_coordinator() == message
    assert said == [message]  # once, however often it is asked
    # the others are told (more than two processes): they end with the same words
    assert client.store[f"{KEY_PREFIX}verdict"] == message


def test_two_silent_peers_are_named_together() -> None:
    client, clock = FakeClient(), Clock()
    watch, said = _watch(client, rank=1, n=4, clock=clock)
    watch.beat()
    clock.now += 10.5
    client.peer_beats(0, "7")  # process 0 answers; 2 and 3 never wrote a heartbeat
    assert watch.beat() is not None
    assert said[0].startswith("processes 2 and 3 of 4 stopped responding")
    assert said[0].endswith("their hosts are gone)")


def test_slow_starting_peer_has_the_whole_silence_from_the_start() -> None:
    client, clock = FakeClient(), Clock()
    watch, said = _watch(client, clock=clock)
    clock.now += 9.9
    assert watch.beat() is None  # process 1 has not written its first heartbeat yet
    clock.now += 0.2
    assert watch.beat() is not None and "process 1 of 2" in said[0]


def test_a_peer_that_finished_is_never_dead() -> None:
    client, clock = FakeClient(), Clock()
    watch, said = _watch(client, clock=clock)
    client.peer_beats(1, "3")
    watch.beat()
    client.peer_beats(1, DONE)  # process 1 finished; process 0 still writes its final files
    for _ in range(5):
        clock.now += 30
        assert watch.beat() is None
    assert said == []


def test_failing_calls_mean_the_coordinator_is_lost() -> None:
    client, clock = FakeClient(), Clock()
    watch, said = _watch(client, rank=1, clock=clock)
    client.error = RuntimeError("UNAVAILABLE: Socket closed\nAdditional GRPC error information")
    assert watch.beat() is None and watch.beat() is None  # a blip is forgiven...
    client.error = None
    client.peer_beats(0, "1")
    assert watch.beat() is None
    client.error = RuntimeError("UNAVAILABLE: Socket closed\nAdditional GRPC error information")
    assert watch.beat() is None and watch.beat() is None
    lost = "lost the coordinator (process 0 of 2): 3 calls in a row failed (UNAVAILABLE: Socket"
    assert watch.beat() == lost + " closed)"  # ...three in a row are not
    assert len(said) == 1


def test_a_verdict_from_another_process_ends_this_one_with_its_words() -> None:
    client, clock = FakeClient(), Clock()
    watch, said = _watch(client, rank=2, n=3, clock=clock)
    client.store[f"{KEY_PREFIX}verdict"] = "process 1 of 3 stopped responding (...)"
    assert watch.beat() == "process 1 of 3 stopped responding (...)" == said[0]


def test_a_hanging_coordinator_is_reported_by_the_judge_thread() -> None:
    client, said, done = FakeClient(), [], threading.Event()

    def on_dead(message: str) -> None:
        said.append(message)
        done.set()

    watch = PeerWatch(client, 1, 2, silence_s=0.5, interval_s=0.05, on_dead=on_dead)
    client.peer_beats(0, "1")
    watch.start()
    time.sleep(0.2)
    client.hang.set()  # calls to process 0 hang (SIGSTOP, a cut network): they never fail
    try:
        assert done.wait(5), "the judge thread did not notice the silence"
        assert said[0].startswith("lost the coordinator (process 0 of 2): no answer for")
    finally:
        client.release.set()
        watch.stop(done=False)
    assert not watch.running


def test_stop_joins_the_threads_and_marks_the_process_done() -> None:
    client = FakeClient()
    watch, said = _watch(client, rank=1, silence_s=5.0, interval_s=0.02)
    client.peer_beats(0, "1")
    with watch.start():
        assert watch.running
        time.sleep(0.2)
    assert not watch.running and said == []
    assert [t for t in threading.enumerate() if t.name.startswith("tjx-peer")] == []
    assert client.store[f"{KEY_PREFIX}beat/1"] == DONE
    writes = len(client.writes)
    time.sleep(0.1)
    assert len(client.writes) == writes  # nothing written after stop
    assert sum(1 for _, key, _ in client.writes if key.endswith("beat/1")) >= 4


class BeatingPeer:
    """Another process's heartbeat, written on a thread until `stop`."""

    def __init__(self, client: FakeClient, rank: int) -> None:
        self.halt = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(client, rank), daemon=True)
        self.thread.start()

    def _run(self, client: FakeClient, rank: int) -> None:
        count = 0
        while not self.halt.wait(0.02):
            count += 1
            client.peer_beats(rank, str(count))

    def stop(self) -> None:
        self.halt.set()
        self.thread.join()

    def __enter__(self) -> BeatingPeer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


def test_an_error_waits_for_the_verdict_then_leaves_judging() -> None:
    client = FakeClient()
    watch, said = _watch(client, rank=1, silence_s=0.5, interval_s=0.02)
    peer = BeatingPeer(client, 0)
    try:
        with pytest.raises(ZeroDivisionError), watch.start():
            time.sleep(0.1)
            start = time.monotonic()
            1 / 0  # noqa: B018 - this process's step failed; process 0 is alive
        assert time.monotonic() - start >= 0.5  # wait_dead gave the watch its silence
        assert said == [] and watch.running  # nobody is dead; still judging
        mine = client.store[f"{KEY_PREFIX}beat/1"]
        time.sleep(0.1)
        assert client.store[f"{KEY_PREFIX}beat/1"] == mine != DONE  # but no longer beating
        peer.stop()  # now process 0 dies: this process is told even while leaving
        assert watch.wait_dead(2.0) is not None
        assert said[0].startswith("process 0 of 2 stopped responding")
    finally:
        peer.stop()
        watch.stop(done=False)


def test_wait_dead_returns_when_a_peer_dies_meanwhile() -> None:
    client = FakeClient()
    watch, said = _watch(client, rank=0, silence_s=0.4, interval_s=0.02)
    peer = BeatingPeer(client, 1)
    with watch.start():
        time.sleep(0.1)
        assert watch.wait_dead(0.2) is None  # alive: the caller goes on with its own error
        peer.stop()
        start = time.monotonic()
        message = watch.wait_dead()
        assert message is not None and message == said[0] and "process 1 of 2" in message
        assert time.monotonic() - start < 2.0
    assert watch.wait_dead() == message  # stopped: at once


def _never_asked() -> bool:
    raise AssertionError("process 0 hosts the coordinator: never probed")


def test_an_abort_waits_for_the_watch_to_name_the_dead_peer() -> None:
    """gloo aborts process 0 the moment process 1 is killed mid-collective, 15 s before the
    silence names it: the abort's line is the watch's verdict, not "jax's runtime aborted"."""
    client = FakeClient()
    watch, said = _watch(client, rank=0, silence_s=0.4, interval_s=0.02)
    peer = BeatingPeer(client, 1)
    with watch.start():
        time.sleep(0.1)
        peer.stop()  # killed: the abort comes now, long before the silence is over
        line = watch.abort_line(_never_asked)
        assert line == said[0] and line.startswith("process 1 of 2 stopped responding"), line


def test_an_abort_with_nobody_dead_is_jaxs_after_the_wait() -> None:
    client = FakeClient()
    watch, said = _watch(client, rank=0, silence_s=0.3, interval_s=0.02)
    with BeatingPeer(client, 1), watch.start():
        line = watch.abort_line(_never_asked)
        assert said == [] and line.startswith("jax's runtime aborted process 0 of 2"), line


def test_an_abort_with_the_coordinator_gone_says_so_without_waiting() -> None:
    client = FakeClient()  # process 0 never beats: a watch that waited would name it silent
    watch, said = _watch(client, rank=1, silence_s=0.3, interval_s=0.02)
    with watch.start():
        line = watch.abort_line(lambda: False)  # process 0's port refuses
        assert said == [], said
        assert line.startswith("lost the coordinator (process 0 of 2): its connection"), line


def test_single_process_watch_is_idle() -> None:
    threads = threading.active_count()
    watch = watch_peers()  # pytest runs one process: jax.distributed is not initialised
    assert not watch.running and watch.dead is None and threading.active_count() == threads
    watch.stop()
    idle = PeerWatch(None, 0, 1).start()
    assert not idle.running and idle.beat() is None and idle.check_coordinator() is None
    idle.stop()


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="rank"):
        PeerWatch(FakeClient(), 2, 2)
    with pytest.raises(ValueError, match="interval_s"):
        PeerWatch(FakeClient(), 0, 2, silence_s=1.0, interval_s=1.0)
    with pytest.raises(ValueError, match="needs a client"):
        PeerWatch(None, 0, 2)
    with pytest.raises(RuntimeError, match="already started"):
        watch = PeerWatch(FakeClient(), 0, 2, interval_s=0.05, on_dead=lambda m: None).start()
        try:
            watch.start()
        finally:
            watch.stop()


def test_heartbeats_go_on_while_the_main_thread_waits_in_xla() -> None:
    """A long step is not a silence: jitted execution and the blocking fetch release the GIL."""
    client = FakeClient()
    watch, said = _watch(client, rank=1, silence_s=30.0, interval_s=0.05)
    client.peer_beats(0, "1")

    @jax.jit
    def slow(x: jax.Array, n: jax.Array) -> jax.Array:
        return jax.lax.fori_loop(0, n, lambda i, y: jnp.tanh(y @ y) * 0.5, x)

    x = jnp.ones((384, 384), jnp.float32) * 0.01
    float(slow(x, jnp.int32(1))[0, 0])  # compiles (not timed below)
    took = time.monotonic()
    float(slow(x, jnp.int32(100))[0, 0])
    # as many iterations as take about 1 s on this machine, however fast or loaded it is
    n = jnp.int32(max(100, int(100 * 1.0 / max(time.monotonic() - took, 1e-3))))
    with watch.start():
        time.sleep(0.2)
        start = time.monotonic()
        float(slow(x, n)[0, 0])  # the main thread blocks in XLA here
        end = time.monotonic()
    beats = [t for t, key, _ in client.writes if key.endswith("beat/1") and start <= t <= end]
    expected = (end - start) / 0.05
    assert end - start > 0.5, "the computation was too short to show anything"
    # with the GIL held during the call there would be at most one heartbeat in it
    assert len(beats) >= max(4, 0.3 * expected), (len(beats), end - start)
    assert said == []
