"""Resolving the distributed setup from arguments, JAX_* variables and a cluster; single process."""

from __future__ import annotations

import pytest

from tjx.parallel import (
    DistributedArgumentError,
    DistributedInfo,
    barrier,
    initialize,
    is_primary,
    resolve_distributed,
)
from tjx.parallel.clusters import VARIABLES

#: What ``srun`` sets for task 2 of 4 on the second of three nodes: JAX's SlurmCluster reads it.
SLURM = {
    "SLURM_JOB_ID": "4097",
    "SLURM_STEP_NODELIST": "gpu[007-009,12],cpu1",
    "SLURM_NTASKS": "4",
    "SLURM_PROCID": "2",
    "SLURM_LOCALID": "1",
}


@pytest.fixture(autouse=True)
def no_dist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)


def _setenv(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_explicit_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"JAX_COORDINATOR_ADDRESS": "envhost:1", "JAX_NUM_PROCESSES": "8", "JAX_PROCESS_ID": "7"}
    _setenv(monkeypatch, env)
    info = resolve_distributed("10.0.0.1:1234", 4, 2)
    assert info == DistributedInfo("10.0.0.1:1234", 4, 2, "args")
    # partly explicit: the rest from the environment
    assert resolve_distributed(process_id=3) == DistributedInfo("envhost:1", 8, 3, "args")


def test_jax_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"JAX_COORDINATOR_ADDRESS": "h:99", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}
    _setenv(monkeypatch, env)
    assert resolve_distributed() == DistributedInfo("h:99", 2, 1, "env")
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match=r"from env: missing process_id \(JAX_PROCESS_ID\)"):
        resolve_distributed()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an int, got 'two'"):
        resolve_distributed()
    _setenv(monkeypatch, {**env, "JAX_PROCESS_ID": "5"})
    with pytest.raises(DistributedArgumentError, match=r"got 5 \(from env\)$") as err:
        resolve_distributed()
    assert err.value.argument == "process_id"


def test_out_of_range_arguments_name_the_value() -> None:
    # The rules of check_distributed_args, naming the value (and where it came from, when not
    # from the arguments).
    with pytest.raises(DistributedArgumentError, match=r"^process_id: must be in 0\.\.1, got 2$"):
        resolve_distributed("h:1", 2, 2)
    with pytest.raises(DistributedArgumentError, match="^coordinator: expected HOST:PORT") as err:
        resolve_distributed("h", 2, 0)
    assert err.value.argument == "coordinator"


def test_a_cluster_fills_what_the_flags_leave_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    _setenv(monkeypatch, SLURM)
    assert resolve_distributed() == DistributedInfo("gpu007:61441", 4, 2, "slurm", (1,))
    # A flag still wins over the scheduler; JAX fills only the rest.
    assert resolve_distributed(process_id=3) == DistributedInfo("gpu007:61441", 4, 3, "slurm", (1,))
    # A value out of range from a cluster names the cluster.
    monkeypatch.setenv("SLURM_PROCID", "4")
    with pytest.raises(DistributedArgumentError, match=r"got 4 \(from slurm\)$"):
        resolve_distributed()
    # One SLURM task = one process; no cluster at all = single process.
    _setenv(monkeypatch, {"SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    assert resolve_distributed().num_processes == 1
    for key in SLURM:
        monkeypatch.delenv(key)
    assert resolve_distributed() == DistributedInfo(None, 1, 0, "single")


def test_single_process_initialize_barrier_primary() -> None:
    assert initialize() == DistributedInfo(None, 1, 0, "single")
    assert initialize("h:1", 1, 0).num_processes == 1  # one process: nothing started
    assert is_primary()
    barrier("noop", timeout_s=0.1)  # returns at once


def test_initialize_passes_timeouts_and_explains_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    import jax

    seen: dict = {}
    updates: list = []

    def fake_initialize(**kwargs):
        seen.update(kwargs)
        raise RuntimeError("DEADLINE_EXCEEDED: barrier timed out")

    monkeypatch.setattr(jax.distributed, "initialize", fake_initialize)
    monkeypatch.setattr(jax.config, "update", lambda *a: updates.append(a))
    with pytest.raises(RuntimeError, match=r"process 1 of 2 could not join .* h:7 within 12 s"):
        initialize("h:7", 2, 1, timeout_s=12, heartbeat_timeout_s=4)
    # jax's own deadline comes after the watchdog's (see the next test).
    assert seen["initialization_timeout"] == 12 + 10 and seen["heartbeat_timeout_seconds"] == 4
    assert seen["coordinator_address"] == "h:7" and seen["process_id"] == 1
    assert updates == [("jax_cpu_collectives_implementation", "gloo")]
    updates.clear()
    with pytest.raises(RuntimeError, match="could not join"):
        initialize("h:7", 2, 1, timeout_s=12, preemption_service=False)
    # Off before jax.distributed starts it (its C++ SIGTERM handler would swallow a signal).
    assert updates == [
        ("jax_enable_preemption_service", False),
        ("jax_cpu_collectives_implementation", "gloo"),
    ]


@pytest.mark.parametrize("custom", [None, "app: error: start every process with --coordinator"])
def test_join_watchdog_prints_one_line_and_exits_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], custom: str | None
) -> None:
    """jax 0.10 aborts (SIGABRT) at its join deadline; the watchdog speaks first and exits 1."""
    import threading

    import jax

    import tjx.parallel.distributed as distributed

    exits: list[int] = []
    released = threading.Event()

    def fake_exit(code: int) -> None:
        exits.append(code)
        released.set()

    def blocked_initialize(**kwargs):  # a peer never comes: jax would block in C++ here
        assert released.wait(10), "the watchdog never fired"

    monkeypatch.setattr(distributed.os, "_exit", fake_exit)
    monkeypatch.setattr(jax.distributed, "initialize", blocked_initialize)
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    initialize("h:9", 3, 2, timeout_s=0.05, timeout_message=custom)
    assert exits == [1]
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [custom or "tjx.parallel: error: process 2 of 3 could not join the run at "
                   "coordinator h:9 within 0.05 s (args setup)"]  # fmt: skip
    assert not [t for t in threading.enumerate() if isinstance(t, threading.Timer)]


def test_barrier_timeout_and_missing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import jax
    from jax._src import distributed as jax_distributed

    class Client:
        def wait_at_barrier(self, name: str, timeout_ms: int) -> None:
            raise RuntimeError(f"DEADLINE_EXCEEDED {name} {timeout_ms}")

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(jax_distributed.global_state, "client", None)
    with pytest.raises(RuntimeError, match="not initialised"):
        barrier("x")
    monkeypatch.setattr(jax_distributed.global_state, "client", Client())
    with pytest.raises(TimeoutError, match=r"barrier 'ckpt': not all 2 .* within 1.5 s.*1500"):
        barrier("ckpt", timeout_s=1.5)
