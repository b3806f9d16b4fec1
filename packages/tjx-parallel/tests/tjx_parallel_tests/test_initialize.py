"""``initialize`` hands the setup to ``jax.distributed.initialize`` (replaced by a fake here): its
detectors, timeouts and collectives, and what an abort says while joining and after. A real
process that nobody joins is test_joining_multiprocess.py."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tjx.parallel import DistributedInfo, barrier, initialize, is_primary, joining
from tjx.parallel.arguments import VARIABLES


@pytest.fixture(autouse=True)
def no_dist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)


@pytest.fixture()
def jax_init(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fake jax.distributed.initialize (kwargs in ``seen``; ``seen["raise"]``: raised), no
    config updates (``seen["updates"]``), the abort guards recorded (``seen["guards"]``) instead
    of installed, and the setup jax resolved is ``seen["state"]``."""
    import jax

    seen: dict[str, Any] = {"updates": [], "guards": [], "state": (None, 1, 0)}

    def fake(**kwargs: Any) -> None:
        seen.update(kwargs)
        seen["during"] = seen["guards"][-1][0]()  # what an abort would say now
        if "raise" in seen:
            raise seen["raise"]

    def guard(describe: Callable[[], str], report: Callable[[str], None]) -> None:
        seen["guards"].append((describe, report))

    monkeypatch.setattr(jax.distributed, "initialize", fake)
    monkeypatch.setattr(jax.config, "update", lambda *a: seen["updates"].append(a))
    monkeypatch.setattr(joining, "guard_aborts", guard)
    monkeypatch.setattr(joining, "joined_setup", lambda: seen["state"])
    return seen


def test_single_process_initialize_barrier_primary(jax_init: dict[str, Any]) -> None:
    assert initialize() == DistributedInfo(None, 1, 0, "single")
    assert initialize("h:1", 1, 0).num_processes == 1  # one process: nothing started
    assert "coordinator_address" not in jax_init and not jax_init["guards"]
    assert is_primary()
    barrier("noop", timeout_s=0.1)  # returns at once


def test_flags_are_handed_on_with_jax_timeouts(jax_init: dict[str, Any]) -> None:
    info = initialize("h:7", 2, 1, timeout_s=11.5, heartbeat_timeout_s=4)
    assert info == DistributedInfo("h:7", 2, 1, "args")
    assert jax_init["coordinator_address"] == "h:7" and jax_init["num_processes"] == 2
    assert jax_init["process_id"] == 1 and jax_init["local_device_ids"] is None
    assert jax_init["initialization_timeout"] == 12 and jax_init["heartbeat_timeout_seconds"] == 4
    assert jax_init["cluster_detection_method"] == "deactivate"  # flags: nothing to detect
    assert jax_init["updates"] == [("jax_cpu_collectives_implementation", "gloo")]
    jax_init["updates"].clear()
    initialize("h:7", 2, 1, preemption_service=False, cpu_collectives=None, local_device_ids=[3])
    # Off before jax.distributed starts it (its C++ SIGTERM handler would swallow a signal).
    assert jax_init["updates"] == [("jax_enable_preemption_service", False)]
    assert jax_init["local_device_ids"] == [3]


def test_a_scheduler_setup_is_completed_by_jax(
    jax_init: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    srun = {"SLURM_JOB_ID": "1", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "2"}
    for key, value in {**srun, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}.items():
        monkeypatch.setenv(key, value)
    jax_init["state"] = ("n1:61441", 2, 1)  # what JAX's SLURM detector found
    assert initialize() == DistributedInfo("n1:61441", 2, 1, "slurm")
    assert jax_init["coordinator_address"] is None and jax_init["num_processes"] == 2
    assert jax_init["cluster_detection_method"] is None  # JAX's detectors (and local devices)
    jax_init["state"] = ("tpu-0:8476", 4, 3)
    assert initialize(cluster="gcetpu") == DistributedInfo("tpu-0:8476", 4, 3, "gcetpu")
    assert jax_init["cluster_detection_method"] == "gcetpu"
    assert jax_init["num_processes"] is None and jax_init["process_id"] is None


def test_an_abort_while_joining_is_the_not_joined_line(jax_init: dict[str, Any]) -> None:
    jax_init["state"] = ("h:9", 3, 2)
    initialize("h:9", 3, 2, timeout_s=0.05)
    assert jax_init["initialization_timeout"] == 1
    assert jax_init["during"] == (
        "tjx.parallel: error: not all 3 processes joined the run at coordinator h:9 within "
        "0.05 s (this is process 2); start every process with the same --coordinator and "
        "--num-processes and its own --process-id in 0..2, or raise --init-timeout"
    )
    # After joining, an abort names the coordinator when its port refuses (here: no such host).
    describe, report = jax_init["guards"][-1]
    assert describe().startswith("lost the coordinator (process 0 of 3): its connection closed")
    initialize("h:9", 3, 2, timeout_message="app: late")
    assert jax_init["during"] == "app: late"
    jax_init["state"] = ("n1:6000", 4, 3)
    initialize(cluster="mpi4py", timeout_message=lambda i: f"app: {i.num_processes} {i.process_id}")
    assert jax_init["during"] == "app: 4 3"  # JAX's detector filled them while joining


def test_a_join_that_raises_names_the_setup(jax_init: dict[str, Any]) -> None:
    jax_init["raise"] = RuntimeError("UNKNOWN: Failed to start RPC server")
    with pytest.raises(RuntimeError, match=r"^process 1 of 2 could not join .* h:7 \(args setup\)"):
        initialize("h:7", 2, 1)
    assert len(jax_init["guards"]) == 2  # the abort line is not the join's any more


def test_barrier_timeout_and_missing_client(monkeypatch: pytest.MonkeyPatch) -> None:
    import jax

    class Client:
        def wait_at_barrier(self, name: str, timeout_ms: int) -> None:
            raise RuntimeError(f"DEADLINE_EXCEEDED {name} {timeout_ms}")

    def missing(caller: str) -> Any:
        raise RuntimeError(f"{caller}: jax.distributed is not initialised")

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(joining, "runtime_client", missing)
    with pytest.raises(RuntimeError, match="barrier: jax.distributed is not initialised"):
        barrier("x")
    monkeypatch.setattr(joining, "runtime_client", lambda caller: (Client(), 1, 2))
    with pytest.raises(
        TimeoutError, match=r"barrier 'ckpt': not all 2 .* 1.5 s \(process 1\).*1500"
    ):
        barrier("ckpt", timeout_s=1.5)
