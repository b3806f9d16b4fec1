"""The stop agreement with a fake coordination client (processes are threads, the key-value store a
dict, the barrier a ``threading.Barrier``), and ``process_values`` with a simulated all-gather. The
real thing (two trainer processes, SIGTERM to one; two processes told different configs) is
tests-integration's test_train_multiprocess*.py."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from tjx import parallel
from tjx.parallel import (
    StopAgreement,
    coordination_exchange,
    digest_words,
    internals,
    joining,
    process_values,
    stop_agreement,
)
from tjx.parallel.preemption import STOP_NAME


class FakeClient:
    """The three calls of jax's DistributedRuntimeClient the exchange uses, shared by threads."""

    def __init__(self, parties: int) -> None:
        self.store: dict[str, str] = {}
        self.lock = threading.Lock()
        self.barrier = threading.Barrier(parties, timeout=30)
        self.barrier_ids: list[str] = []

    def key_value_set(self, key: str, value: str, allow_overwrite: bool = False) -> None:
        with self.lock:
            assert allow_overwrite or key not in self.store
            self.store[key] = value

    def wait_at_barrier(self, barrier_id: str, timeout_in_ms: int) -> None:
        assert timeout_in_ms > 0
        with self.lock:
            self.barrier_ids.append(barrier_id)
        self.barrier.wait()

    def key_value_dir_get(self, key: str) -> list[tuple[str, str]]:
        with self.lock:
            return [(k, v) for k, v in self.store.items() if k.startswith(key)]


def _run(
    client: FakeClient, rank: int, signal_at: int | None, steps: int, out: dict, name: str
) -> None:
    """A process's loop: decide at each boundary; the 'signal' arrives just before ``signal_at``."""
    agreement = StopAgreement(coordination_exchange(client, rank, name=name))
    local = None
    for step in range(steps):
        if signal_at is not None and step >= signal_at:
            local = "SIGTERM"
        why = agreement.decide(step, local)
        if why:
            out[rank] = (step, why)
            return
    out[rank] = (steps, None)


@pytest.mark.parametrize("name", [STOP_NAME, "app/stop"])
@pytest.mark.parametrize(
    ("signal_at", "stop_step"),
    [
        ((None, 3), 3),  # only process 1 is signalled
        ((5, 2), 2),  # both, at different boundaries: the earlier one wins for both
        ((4, 4), 4),  # both at the same boundary
        ((None, None), 8),  # nobody: run to the end
    ],
)
def test_threads_stop_at_the_same_step(signal_at, stop_step, name):
    client, out = FakeClient(2), {}
    threads = [
        threading.Thread(target=_run, args=(client, rank, signal_at[rank], 8, out, name))
        for rank in (0, 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert out[0][0] == out[1][0] == stop_step
    if stop_step < 8:
        first = min(r for r in (0, 1) if signal_at[r] is not None and signal_at[r] <= stop_step)
        for rank in (0, 1):
            mine = signal_at[rank] is not None and signal_at[rank] <= stop_step
            expected = "SIGTERM" if mine else f"SIGTERM on process {first}"
            assert out[rank][1] == expected
        # Only signalled processes wrote, once, under the agreed step.
        expected = {f"{name}/{stop_step}/{r}" for r in (0, 1) if signal_at[r] == stop_step}
        assert set(client.store) == expected
    assert set(client.barrier_ids) == {name}  # one reused barrier id


def test_lowest_signalled_rank_is_named():
    def exchange(step, local):
        assert (step, local) == (7, None)
        return {3: "SIGINT", 1: "SIGTERM"}

    assert StopAgreement(exchange).decide(7, None) == "SIGTERM on process 1"
    assert StopAgreement(lambda s, loc: {0: "SIGINT", 1: "SIGTERM"}).decide(0, "SIGINT") == "SIGINT"
    assert StopAgreement(lambda s, loc: {}).decide(0, None) is None


def test_single_process_decides_alone_without_any_exchange():
    agreement = stop_agreement()  # one process in the unit tests
    assert agreement.decide(0, None) is None
    assert agreement.decide(5, "SIGTERM") == "SIGTERM"


def test_a_barrier_timeout_names_the_step():
    class Stuck(FakeClient):
        def wait_at_barrier(self, barrier_id, timeout_in_ms):
            raise OSError("DEADLINE_EXCEEDED: Barrier timed out")

    exchange = coordination_exchange(Stuck(2), 1, timeout_s=2.5)
    with pytest.raises(RuntimeError, match=r"at step 9: .* within 2.5 s \(process 1\): DEADLINE"):
        exchange(9, None)


def test_several_processes_use_jax_distributed_client(monkeypatch):
    import jax

    def client(caller):
        raise RuntimeError(f"{caller}: jax.distributed is not initialised")

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(internals, "runtime_client", client)
    with pytest.raises(RuntimeError, match="stop agreement: jax.distributed is not initialised"):
        stop_agreement()
    fake = FakeClient(1)  # the other process is not simulated: a barrier of one
    monkeypatch.setattr(internals, "runtime_client", lambda caller: (fake, 1, 2))
    agreement = stop_agreement("app/stop")
    assert agreement.decide(4, None) is None
    assert agreement.decide(5, "SIGINT") == "SIGINT"
    assert fake.store == {"app/stop/5/1": "SIGINT"}


def test_digest_words_are_the_first_128_bits_of_sha256():
    rng = np.random.default_rng(3)
    text = "".join(chr(c) for c in rng.integers(32, 0x2FF, 200))
    words = digest_words(text)
    assert len(words) == 4 and all(-(2**31) <= w < 2**31 for w in words)
    reference = hashlib.sha256(text.encode()).digest()[:16]
    assert np.asarray(words, np.int32).tobytes() == reference
    assert words == digest_words(text) and words != digest_words(text + " ")


def test_process_values_single_process_runs_no_collective(monkeypatch):
    monkeypatch.setattr(joining, "gather_rows", lambda x: pytest.fail("gathered"))
    got = process_values({"n": 3, "flag": True, "config": "a: 1", "none": ""})
    assert got == {
        "n": [3],
        "flag": [1],
        "config": [tuple(digest_words("a: 1"))],
        "none": [tuple(digest_words(""))],
    }


def test_process_values_splits_every_process_row(monkeypatch):
    """Three simulated processes: the all-gather stacks their rows; each field comes back per
    process, in process order."""
    import jax

    rng = np.random.default_rng(11)
    told = [int(x) for x in rng.integers(-(2**31), 2**31, 3)]
    configs = [f"seed: {int(s)}" for s in rng.integers(0, 5, 3)]
    rows = [np.asarray([told[i], *digest_words(configs[i]), i % 2], np.int32) for i in range(3)]
    seen = {}

    def gather(mine):
        seen["mine"] = mine
        return np.stack([mine, *rows[1:]])

    monkeypatch.setattr(jax, "process_count", lambda: 3)
    monkeypatch.setattr(joining, "gather_rows", gather)
    got = process_values({"told": told[0], "config": configs[0], "resume": False})
    assert seen["mine"].dtype == np.int32
    np.testing.assert_array_equal(seen["mine"], rows[0])
    assert got["told"] == told
    assert got["config"] == [tuple(digest_words(c)) for c in configs]
    assert got["resume"] == [0, 1, 0]


@pytest.mark.parametrize(
    ("values", "match"),
    [({"n": 2**31}, "n=2147483648 does not fit in int32"), ({"x": 1.5}, "x must be an int or")],
)
def test_process_values_refuses_what_it_cannot_send(values, match):
    with pytest.raises(ValueError, match=match):
        process_values(values)


def test_the_public_names():
    assert parallel.stop_agreement is stop_agreement
    assert parallel.process_values is process_values
