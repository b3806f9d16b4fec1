"""The trainer as two processes started by a scheduler's variables instead of flags: JAX's own
cluster detectors (SLURM, Open MPI) and tjx's reading of a Kubernetes indexed Job fill the
process count, rank and coordinator (loopback, 4 simulated CPU devices per process).

* Each scheduler-started run exits 0 on both processes and says where its setup came from. The
  Kubernetes one (tjx's own reading of the variables) trains, and its per-step training losses
  equal those of the uninterrupted 1-process, 8-device run to ``REL`` (the same global batch and
  parameters; only gloo's summation order may differ, see test_train_multiprocess.py, whose
  flag-started runs match that same run: `one_process_run`, trained once for both files when
  Pants runs their batch in one process). SLURM's and Open MPI's (JAX's detectors) ``--resume``
  a copy of the finished Kubernetes-started run as two processes: the setup they detect must
  join both processes and restore a checkpoint both wrote, and nothing is left to train (after
  the setup, the run is the same code whatever set it up: one training run shows it, and each
  further one cost two trainer processes' steps, evaluation, samples and save).
* A scheduler whose variables say "2 processes" but whose partner never comes is one error line
  and exit 1 within ``--init-timeout``, never a silent single process; a half-set one (Open MPI 5
  sets no ``OMPI_MCA_orte_hnp_uri``, no coordinator given) is one line and exit 2; neither
  writes anything.
"""

from __future__ import annotations

import shutil

import pytest

from tests_integration._helpers_apps import SMALL, train_losses
from tests_integration._helpers_multiprocess import (
    LAUNCH_TIMEOUT_S,
    REL,
    free_port,
    launch,
    one_process_run,
    tails,
    trainer_args,
)

# test_train_multiprocess.py's run (6 steps, evaluations at 3 and 6): its 1-process reference
# is shared (`one_process_run` keys it on these settings).
STEPS = 6
SETS = [*SMALL, f"train.steps={STEPS}", "train.eval_every=3"]
INIT_TIMEOUT_S = 8


def slurm(rank: int, port: int) -> dict[str, str]:
    """What ``srun --ntasks=2`` on one node sets (the variables JAX's SlurmCluster reads)."""
    return {
        "SLURM_JOB_ID": "4242",
        "SLURM_STEP_NODELIST": "127.0.0.1",
        "SLURM_NTASKS": "2",
        "SLURM_PROCID": str(rank),
        "SLURM_LOCALID": str(rank),
        "JAX_COORDINATOR_PORT": str(port),
    }


def ompi(rank: int, port: int) -> dict[str, str]:
    """What ``mpirun -np 2`` (Open MPI 4) sets (the variables JAX's OmpiCluster reads)."""
    return {
        "OMPI_MCA_orte_hnp_uri": "1531576320.0;tcp://127.0.0.1:34911",
        "OMPI_COMM_WORLD_SIZE": "2",
        "OMPI_COMM_WORLD_RANK": str(rank),
        "OMPI_COMM_WORLD_LOCAL_RANK": str(rank),
        "JAX_COORDINATOR_PORT": str(port),
    }


def k8s(rank: int, port: int) -> dict[str, str]:
    """A pod of an indexed Job (parallelism 2) without the kubernetes package: the pod spec sets
    the count and the coordinator, the Job its completion index."""
    return {
        "KUBERNETES_SERVICE_HOST": "10.0.0.1",
        "JOB_COMPLETION_INDEX": str(rank),
        "JAX_NUM_PROCESSES": "2",
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
    }


def test_scheduler_started_runs_match_the_one_process_run(tmp_path):
    one_process_run(tmp_path, SETS)
    reference = train_losses(tmp_path / "one")
    assert sorted(reference) == list(range(1, STEPS + 1))
    for name, variables in (("k8s", k8s), ("slurm", slurm), ("ompi", ompi)):
        trains = name == "k8s"
        extra = ["--init-timeout", "120"]
        if not trains:  # the finished k8s run, resumed: the setup alone (the module doc)
            shutil.copytree(tmp_path / "k8s", tmp_path / name)
            extra.append("--resume")
        port = free_port()
        argvs = [trainer_args(name, SETS, *extra) for _ in (0, 1)]
        envs = [variables(rank, port) for rank in (0, 1)]
        results = launch(tmp_path, name, argvs, LAUNCH_TIMEOUT_S, envs=envs)
        for rank, r in enumerate(results):
            assert r["rc"] == 0, tails(results)
            assert f"multi-host: process {rank} of 2" in r["out"], tails(results)
            assert f"setup from {name})" in r["out"], tails(results)
            if not trains:
                assert f"resumed from step {STEPS}" in r["out"], tails(results)
                assert f"already at step {STEPS} of {STEPS}" in r["out"], tails(results)
        if not trains:
            continue
        losses = train_losses(tmp_path / name)
        assert sorted(losses) == sorted(reference), name
        for step, loss in reference.items():
            assert losses[step] == pytest.approx(loss, rel=REL), (name, step, losses, reference)


def test_scheduler_without_its_partner_or_half_set_is_one_line(tmp_path):
    alone = {**slurm(0, free_port()), "SLURM_NTASKS": "2"}
    half = {"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "1"}
    argvs = [trainer_args(name, SETS, "--init-timeout", str(INIT_TIMEOUT_S)) for name in ("a", "h")]
    results = launch(tmp_path, "bad", argvs, 120, envs=[alone, half])
    for r in results:
        errors = [line for line in r["err"].splitlines() if line.startswith("trainer: error:")]
        assert len(errors) == 1 and "Traceback" not in r["err"], tails(results)
        assert not r["writes"], r["writes"]
    assert results[0]["rc"] == 1, tails(results)
    assert "not all 2 processes joined the run" in results[0]["err"]
    assert results[1]["rc"] == 2, tails(results)
    assert "Open MPI job (OMPI_COMM_WORLD_SIZE=2)" in results[1]["err"]
    assert "OMPI_MCA_orte_hnp_uri" in results[1]["err"]
    assert "JAX_COORDINATOR_ADDRESS" in results[1]["err"]
    for name in ("a", "h"):
        assert not (tmp_path / name).exists()
