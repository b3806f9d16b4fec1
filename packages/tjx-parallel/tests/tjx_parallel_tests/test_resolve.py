"""Resolving the setup before anything starts: flags, then JAX_* variables, then a scheduler's task
variables (what tjx cannot read is left to JAX's detector, which joining runs), else a single
process; a scheduler whose variables are only half there is one error naming the fix. Two real
processes under each scheduler's variables are tests-integration's
test_train_multiprocess_schedulers.py."""

from __future__ import annotations

import importlib.util

import pytest

from tjx import parallel
from tjx.parallel import DistributedArgumentError, DistributedInfo, resolve_distributed
from tjx.parallel.arguments import CLUSTERS, SCHEDULERS, VARIABLES, HalfSetError

#: What ``srun`` sets for task 2 of 4 on the second of three nodes.
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


def test_no_setup_is_a_single_process() -> None:
    assert resolve_distributed() == DistributedInfo(None, 1, 0, "single")
    assert resolve_distributed("h:1", 1, 0) == DistributedInfo("h:1", 1, 0, "args")


def test_explicit_arguments_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"JAX_COORDINATOR_ADDRESS": "envhost:1", "JAX_NUM_PROCESSES": "8", "JAX_PROCESS_ID": "7"}
    _setenv(monkeypatch, {**env, **SLURM})
    assert resolve_distributed("10.0.0.1:1234", 4, 2) == DistributedInfo(
        "10.0.0.1:1234", 4, 2, "args"
    )
    # Partly explicit: the rest from the environment; nothing left for the scheduler.
    assert resolve_distributed(process_id=3) == DistributedInfo("envhost:1", 8, 3, "args")


def test_jax_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"JAX_COORDINATOR_ADDRESS": "h:99", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "0"}
    _setenv(monkeypatch, env)
    assert resolve_distributed() == DistributedInfo("h:99", 2, 0, "env")
    monkeypatch.delenv("JAX_PROCESS_ID")
    with pytest.raises(ValueError, match=r"from env: missing process_id \(JAX_PROCESS_ID\)$"):
        resolve_distributed()
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES must be an int, got 'two'"):
        resolve_distributed()
    _setenv(monkeypatch, {**env, "JAX_PROCESS_ID": "5"})
    with pytest.raises(DistributedArgumentError, match=r"got 5 \(from env\)$") as err:
        resolve_distributed()
    assert err.value.argument == "process_id"


def test_out_of_range_arguments_name_the_value() -> None:
    with pytest.raises(DistributedArgumentError, match=r"^process_id: must be in 0\.\.1, got 2$"):
        resolve_distributed("h:1", 2, 2)
    with pytest.raises(DistributedArgumentError, match="^coordinator: expected HOST:PORT") as err:
        resolve_distributed("h", 2, 0)
    assert err.value.argument == "coordinator"
    with pytest.raises(ValueError, match=r"from args: missing coordinator \(JAX_COORDINATOR"):
        resolve_distributed(None, 2, 0)


def test_a_scheduler_gives_count_and_rank_and_jax_the_coordinator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _setenv(monkeypatch, SLURM)
    # The coordinator (JAX's rule: the first node, a port from the job id) is JAX's to find.
    assert resolve_distributed() == DistributedInfo(None, 4, 2, "slurm")
    # A flag still wins over the scheduler.
    assert resolve_distributed("h:1", process_id=3) == DistributedInfo("h:1", 4, 3, "slurm")
    monkeypatch.setenv("SLURM_PROCID", "4")
    with pytest.raises(DistributedArgumentError, match=r"got 4 \(from slurm\)$"):
        resolve_distributed()
    # One task of SLURM or Open MPI is one process.
    _setenv(monkeypatch, {"SLURM_NTASKS": "1", "SLURM_PROCID": "0"})
    assert resolve_distributed() == DistributedInfo(None, 1, 0, "single")


def test_open_mpi_runs_before_slurm_as_in_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    # mpirun inside a SLURM allocation: JAX asks its Open MPI detector first, and so does tjx.
    mpi = {
        "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://10.96.0.1,10.148.0.1:34911",
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": "1",
        "OMPI_COMM_WORLD_LOCAL_RANK": "1",
    }
    _setenv(monkeypatch, {**SLURM, **mpi})
    assert resolve_distributed() == DistributedInfo(None, 2, 1, "ompi")
    assert [s.name for s in SCHEDULERS][:2] == ["ompi", "slurm"]


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
    find_spec = importlib.util.find_spec  # as if the kubernetes package were not installed
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n: None if n == "kubernetes" else find_spec(n)
    )
    _setenv(monkeypatch, env)
    with pytest.raises(HalfSetError) as err:
        resolve_distributed()
    message = str(err.value)
    assert "\n" not in message and "JAX_COORDINATOR_ADDRESS" in message
    for needle in needles:
        assert needle in message
    # join: a setup error (exit 2 in the trainer), nothing started.
    with pytest.raises(parallel.DistributedSetupError, match="detector cannot start it"):
        parallel.join()


def test_a_scheduler_fills_count_and_rank_when_jax_cannot(monkeypatch: pytest.MonkeyPatch) -> None:
    # Open MPI 5 (no orte URI) with the coordinator given: its own count and rank variables.
    _setenv(monkeypatch, {"OMPI_COMM_WORLD_SIZE": "3", "OMPI_COMM_WORLD_RANK": "2"})
    assert resolve_distributed("h:9") == DistributedInfo("h:9", 3, 2, "ompi")
    for key in ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        monkeypatch.delenv(key)
    # A Kubernetes indexed Job without the kubernetes package: the pod spec's JAX_* variables
    # and the Job's completion index.
    k8s = {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "JOB_COMPLETION_INDEX": "1",
        "JAX_NUM_PROCESSES": "2",
        "JAX_COORDINATOR_ADDRESS": "job-0.svc:1234",
    }
    _setenv(monkeypatch, k8s)
    assert resolve_distributed() == DistributedInfo("job-0.svc:1234", 2, 1, "k8s")
    # With the kubernetes package JAX's detector reads the count from the Job itself.
    monkeypatch.delenv("JAX_NUM_PROCESSES")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    assert resolve_distributed() == DistributedInfo("job-0.svc:1234", None, 1, "k8s")


def test_a_named_cluster_is_the_only_one_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    _setenv(monkeypatch, SLURM)
    # A detector tjx cannot ask (mpi4py, a Cloud TPU VM's metadata): JAX's fills every value.
    assert resolve_distributed(cluster="mpi4py") == DistributedInfo(None, None, None, "mpi4py")
    assert resolve_distributed(cluster="slurm") == DistributedInfo(None, 4, 2, "slurm")
    with pytest.raises(HalfSetError, match=r"^--cluster ompi: OMPI_COMM_WORLD_SIZE is unset"):
        resolve_distributed(cluster="ompi")
    assert set(CLUSTERS) >= {s.name for s in SCHEDULERS} - {"k8s"}  # JAX's K8s has no name
