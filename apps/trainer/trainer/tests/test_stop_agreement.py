"""The stop agreement with a fake coordination client: processes are threads, the key-value store
a dict, the barrier a ``threading.Barrier``. The real thing (two trainer processes, SIGTERM to one)
is tests-integration's test_train_multiprocess_signal.py."""

from __future__ import annotations

import threading

import pytest

from trainer import stop_agreement
from trainer.stop_agreement import StopAgreement, coordination_exchange


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


def _run(client: FakeClient, rank: int, signal_at: int | None, steps: int, out: dict) -> None:
    """A process's loop: decide at each boundary; the 'signal' arrives just before ``signal_at``."""
    agreement = StopAgreement(coordination_exchange(client, rank))
    local = None
    for step in range(steps):
        if signal_at is not None and step >= signal_at:
            local = "SIGTERM"
        why = agreement.decide(step, local)
        if why:
            out[rank] = (step, why)
            return
    out[rank] = (steps, None)


@pytest.mark.parametrize(
    ("signal_at", "stop_step"),
    [
        ((None, 3), 3),  # only process 1 is signalled
        ((5, 2), 2),  # both, at different boundaries: the earlier one wins for both
        ((4, 4), 4),  # both at the same boundary
        ((None, None), 8),  # nobody: run to the end
    ],
)
def test_threads_stop_at_the_same_step(signal_at, stop_step):
    client, out = FakeClient(2), {}
    threads = [
        threading.Thread(target=_run, args=(client, rank, signal_at[rank], 8, out))
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
        expected = {f"trainer/stop/{stop_step}/{r}" for r in (0, 1) if signal_at[r] == stop_step}
        assert set(client.store) == expected
    assert set(client.barrier_ids) == {stop_agreement.BARRIER_ID}  # one reused barrier id


def test_lowest_signalled_rank_is_named():
    def exchange(step, local):
        assert (step, local) == (7, None)
        return {3: "SIGINT", 1: "SIGTERM"}

    assert StopAgreement(exchange).decide(7, None) == "SIGTERM on process 1"
    assert StopAgreement(lambda s, loc: {0: "SIGINT", 1: "SIGTERM"}).decide(0, "SIGINT") == "SIGINT"
    assert StopAgreement(lambda s, loc: {}).decide(0, None) is None


def test_single_process_decides_alone_without_any_exchange():
    agreement = stop_agreement.for_this_run()  # one process in the unit tests
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
    from jax._src import distributed

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax, "process_index", lambda: 1)
    monkeypatch.setattr(distributed.global_state, "process_id", 1)
    monkeypatch.setattr(distributed.global_state, "client", None)
    with pytest.raises(RuntimeError, match="jax.distributed is not initialised"):
        stop_agreement.for_this_run()
    client = FakeClient(1)  # the other process is not simulated: a barrier of one
    monkeypatch.setattr(distributed.global_state, "client", client)
    agreement = stop_agreement.for_this_run()
    assert agreement.decide(4, None) is None
    assert agreement.decide(5, "SIGINT") == "SIGINT"
    assert client.store == {"trainer/stop/5/1": "SIGINT"}
