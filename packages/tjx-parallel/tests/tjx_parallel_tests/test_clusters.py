"""Cluster detection: JAX's own detectors fill what flags and JAX_* leave unset; a scheduler whose
multi-task variables are only half there is one error naming the missing variables and the fix,
never a silent single process. Two real processes under each scheduler's variables are
tests-integration's test_train_multiprocess_schedulers.py."""

from __future__ import annotations

from typing import Any

import pytest

from tjx import parallel
from tjx.parallel import DistributedInfo, NotJoinedError, clusters, joining, resolve_distributed
from tjx.parallel.arguments import CLUSTERS
from tjx.parallel.clusters import VARIABLES, HalfSetError, detect


@pytest.fixture(autouse=True)
def no_dist_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in VARIABLES:
        monkeypatch.delenv(key, raising=False)


def _setenv(monkeypatch: pytest.MonkeyPatch, **env: str) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_jax_slurm_detector_reads_srun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    _setenv(
        monkeypatch,
        SLURM_JOB_ID="4097",
        SLURM_STEP_NODELIST="node[003-005]",
        SLURM_NTASKS="3",
        SLURM_PROCID="1",
        SLURM_LOCALID="0",
    )
    # JAX's port rule: job id mod 4096 in the top 4096 ports (4097 -> 61441).
    assert detect(None, None, None) == clusters.Detected("node003:61441", 3, 1, (0,), "slurm")
    monkeypatch.setenv("JAX_COORDINATOR_PORT", "5555")
    assert detect(None, None, None).coordinator == "node003:5555"
    # Known values are kept: JAX fills only the unset ones.
    assert detect("h:1", None, 0) == clusters.Detected("h:1", 3, 0, (0,), "slurm")


def test_jax_open_mpi_detector_reads_mpirun_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    _setenv(
        monkeypatch,
        OMPI_MCA_orte_hnp_uri="1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
        OMPI_COMM_WORLD_SIZE="2",
        OMPI_COMM_WORLD_RANK="1",
        OMPI_COMM_WORLD_LOCAL_RANK="1",
        JAX_COORDINATOR_PORT="7000",
    )
    found = resolve_distributed()
    assert found == DistributedInfo("10.96.0.1:7000", 2, 1, "ompi", (1,))


@pytest.mark.parametrize(
    ("env", "needles"),
    [
        (
            {"SLURM_NTASKS": "4", "SLURM_PROCID": "2"},
            ["SLURM job step (SLURM_NTASKS=4)", "SLURM_JOB_ID, SLURM_STEP_NODELIST", "srun"],
        ),
        (
            {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"},
            ["Open MPI job (OMPI_COMM_WORLD_SIZE=2)", "OMPI_MCA_orte_hnp_uri", "Open MPI 5"],
        ),
        (
            {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "JOB_COMPLETION_INDEX": "1"},
            ["Kubernetes indexed Job (JOB_COMPLETION_INDEX=1)", "JAX_NUM_PROCESSES", "jax[k8s]"],
        ),
    ],
)
def test_a_half_set_scheduler_is_one_error_naming_the_fix(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], needles: list[str]
) -> None:
    _setenv(monkeypatch, **env)
    with pytest.raises(HalfSetError) as err:
        resolve_distributed()
    message = str(err.value)
    assert "\n" not in message and "JAX_COORDINATOR_ADDRESS" in message
    for needle in needles:
        assert needle in message
    # The trainer's join: a setup error (exit 2 there), nothing started.
    monkeypatch.setattr(joining, "initialize", lambda *a, **k: pytest.fail("initialized"))
    with pytest.raises(parallel.DistributedSetupError, match="detector cannot start it"):
        parallel.join()


def test_a_scheduler_fills_count_and_rank_when_jax_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    # Open MPI 5 (no orte URI) with the coordinator given: its own count and rank variables.
    _setenv(monkeypatch, OMPI_COMM_WORLD_SIZE="3", OMPI_COMM_WORLD_RANK="2")
    assert resolve_distributed("h:9") == DistributedInfo("h:9", 3, 2, "ompi")
    for key in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(key)
    # A Kubernetes indexed Job without the kubernetes package: the pod spec's JAX_* variables and
    # the Job's completion index.
    _setenv(
        monkeypatch,
        KUBERNETES_SERVICE_HOST="10.0.0.1",
        JOB_COMPLETION_INDEX="1",
        JAX_NUM_PROCESSES="2",
        JAX_COORDINATOR_ADDRESS="job-0.svc:1234",
    )
    assert resolve_distributed() == DistributedInfo("job-0.svc:1234", 2, 1, "k8s")


def test_single_task_schedulers_and_explicit_setups_detect_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _setenv(monkeypatch, OMPI_COMM_WORLD_SIZE="1", OMPI_COMM_WORLD_RANK="0", SLURM_NTASKS="1")
    assert resolve_distributed() == DistributedInfo(None, 1, 0, "single")
    _setenv(monkeypatch, SLURM_NTASKS="4")  # half set, but every value is given: not asked
    monkeypatch.setattr(clusters, "_jax_present", lambda method: pytest.fail("detected"))
    assert resolve_distributed("h:1", 2, 1) == DistributedInfo("h:1", 2, 1, "args")


def test_an_opt_in_detector_is_asked_only_when_named(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []

    class OptIn:
        name = "optin"
        opt_in_only_method = True

        @classmethod
        def is_env_present(cls) -> bool:
            asked.append(cls.name)
            return True

        @classmethod
        def auto_detect_unset_distributed_params(cls, *args: Any) -> tuple:
            assert args[4] == "optin"  # JAX is told which detector to use
            return ("h:2", 2, 0, None)

    monkeypatch.setattr(clusters, "_jax_clusters", lambda: [OptIn])
    assert resolve_distributed() == DistributedInfo(None, 1, 0, "single") and asked == []
    assert resolve_distributed(cluster="optin") == DistributedInfo("h:2", 2, 0, "optin")


def test_a_failing_detector_is_a_failed_join(monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken:
        name = ""  # like JAX's K8sCluster: the name comes from the class
        opt_in_only_method = False

        @classmethod
        def is_env_present(cls) -> bool:
            return True

        @classmethod
        def auto_detect_unset_distributed_params(cls, *args: Any) -> tuple:
            raise RuntimeError("Kubernetes API Error: 403 - Forbidden\nlong advice")

    Broken.__name__ = "K8sCluster"
    monkeypatch.setattr(clusters, "_jax_clusters", lambda: [Broken])
    with pytest.raises(RuntimeError, match=r"^K8sCluster: Kubernetes API Error: 403 - Forbidden$"):
        resolve_distributed()
    with pytest.raises(NotJoinedError) as err:
        parallel.join()
    assert err.value.reason == "K8sCluster: Kubernetes API Error: 403 - Forbidden"


def test_join_hands_the_cluster_setup_to_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    import jax

    seen: dict[str, Any] = {}
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: seen.update(kw))
    monkeypatch.setattr(jax.config, "update", lambda *a: None)
    monkeypatch.setattr(joining, "require_agreement", lambda *a, **k: None)
    _setenv(
        monkeypatch,
        SLURM_JOB_ID="1",
        SLURM_STEP_NODELIST="127.0.0.1",
        SLURM_NTASKS="2",
        SLURM_PROCID="1",
        SLURM_LOCALID="1",
        JAX_COORDINATOR_PORT="6000",
    )
    info = parallel.join(timeout_s=5)
    assert info == DistributedInfo("127.0.0.1:6000", 2, 1, "slurm", (1,))
    # Every value resolved, JAX's own rule for local devices kept; JAX does not detect again.
    assert seen["coordinator_address"] == "127.0.0.1:6000" and seen["num_processes"] == 2
    assert seen["process_id"] == 1 and seen["local_device_ids"] == [1]
    assert seen["cluster_detection_method"] == "deactivate"


def test_the_cluster_flag_names_every_jax_detector() -> None:
    names = {getattr(c, "name", "") or c.__name__ for c in clusters._jax_clusters()}
    # JAX's K8sCluster has no name (tjx calls it "k8s"), its "tpu" base class detects nothing.
    assert names == set(CLUSTERS) | {"K8sCluster", "tpu"}
    assert clusters.SCHEDULERS[2].name == "k8s"
