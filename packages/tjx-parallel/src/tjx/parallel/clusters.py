"""Which cluster started this process: JAX's own detectors first, then one line for a scheduler
whose variables are only half there.

JAX knows SLURM, Open MPI, Kubernetes Jobs, Cloud TPU / GKE and (opt-in) mpi4py
(``jax._src.clusters``); :func:`detect` asks them, in JAX's order, to fill what the flags and
``JAX_*`` variables left unset (``ClusterEnv.auto_detect_unset_distributed_params``, the
function ``jax.distributed.initialize()`` itself calls). That is done before joining, not
inside ``jax.distributed.initialize``, so the resolved setup can be checked and named in tjx's
one-line errors and the join watchdog, and a Kubernetes API is asked once.

A JAX detector needs every variable it reads; with one missing it reports "no cluster" and the
run would silently be one process per host — the outcome worse than an error. So the multi-task
variables of each scheduler (:data:`SCHEDULERS`) are looked at too: present, with JAX's detector
not answering, they fill the process count and rank they carry, and whatever is still unset is a
:class:`HalfSetError` (one line naming the variables and the fix). This module is the one place
that reads JAX's private cluster registry.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["SCHEDULERS", "VARIABLES", "Detected", "HalfSetError", "Scheduler", "detect"]


class HalfSetError(ValueError):
    """A scheduler's multi-task variables are present, but not all a join needs."""


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """How tjx recognises a multi-process job of one scheduler, to refuse a half-set one.

    Attributes
    ----------
    name : str
        The name of JAX's detector (its ``cluster_detection_method``), also the
        :class:`~tjx.parallel.DistributedInfo` ``source``.
    label : str
        The scheduler in an error line.
    marker : str
        The variable every multi-task job of it has.
    count : str or None
        The variable holding the process count (``None``: not in the environment).
    rank : str
        The variable holding this process's rank.
    jax_needs : tuple of str
        The variables JAX's detector reads (all needed for it to answer).
    fix : str
        What to set when JAX's detector cannot answer.
    """

    name: str
    label: str
    marker: str
    count: str | None
    rank: str
    jax_needs: tuple[str, ...]
    fix: str


_SET_JAX = "set JAX_COORDINATOR_ADDRESS=HOST:PORT of rank 0 (or pass the coordinator flag)"

#: The schedulers whose multi-task jobs are recognised even when JAX's detector cannot answer.
SCHEDULERS = (
    Scheduler(
        "slurm",
        "SLURM job step",
        "SLURM_NTASKS",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),
        f"start the processes with srun, or {_SET_JAX}",
    ),
    Scheduler(
        "ompi",
        "Open MPI job",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_RANK",
        (
            "OMPI_MCA_orte_hnp_uri",
            "OMPI_COMM_WORLD_SIZE",
            "OMPI_COMM_WORLD_RANK",
            "OMPI_COMM_WORLD_LOCAL_RANK",
        ),
        f"Open MPI 5 no longer sets OMPI_MCA_orte_hnp_uri: {_SET_JAX}",
    ),
    Scheduler(
        "k8s",
        "Kubernetes indexed Job",
        "JOB_COMPLETION_INDEX",
        None,
        "JOB_COMPLETION_INDEX",
        ("KUBERNETES_SERVICE_HOST", "JOB_COMPLETION_INDEX"),
        "set JAX_NUM_PROCESSES to the Job's parallelism and JAX_COORDINATOR_ADDRESS="
        "<job>-0.<subdomain>:PORT in the pod spec, or install the kubernetes package "
        "(jax[k8s]) so JAX reads them from the API",
    ),
)


#: Every variable that can make a process join a run here (the ``JAX_*`` ones and each
#: scheduler's): what a test removes to start a process that only its own setup steers.
VARIABLES = tuple(
    dict.fromkeys(
        (
            "JAX_COORDINATOR_ADDRESS",
            "JAX_COORDINATOR_PORT",
            "JAX_NUM_PROCESSES",
            "JAX_PROCESS_ID",
            "JAX_LOCAL_DEVICE_IDS",
            *(name for s in SCHEDULERS for name in (s.marker, s.rank, *s.jax_needs)),
        )
    )
)


@dataclasses.dataclass(frozen=True)
class Detected:
    """What the flags, ``JAX_*`` and the cluster gave (``None``: still unknown)."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    local_device_ids: tuple[int, ...] | None
    source: str


def _jax_clusters() -> list[Any]:
    """JAX's detectors, in the order ``jax.distributed.initialize`` tries them."""
    from jax._src import clusters

    return list(clusters.ClusterEnv._cluster_types)


def _jax_present(method: str | None) -> Any | None:
    """JAX's detector that sees its cluster (``method``: that one only, opt-in ones included)."""
    for cluster in _jax_clusters():
        if method is not None and getattr(cluster, "name", "") != method:
            continue
        if method is None and cluster.opt_in_only_method:
            continue
        with warnings.catch_warnings():  # K8s without its package warns in 10 lines, then says no
            warnings.simplefilter("ignore")
            if cluster.is_env_present():
                return cluster
    return None


def _int(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key, "")
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key} must be an int, got {value!r}") from None


def _half_set(env: Mapping[str, str]) -> Scheduler | None:
    """The scheduler whose multi-task variables are here (one task of SLURM or MPI: none)."""
    for scheduler in SCHEDULERS:
        if scheduler.marker not in env:
            continue
        count = _int(env, scheduler.count) if scheduler.count is not None else None
        if scheduler.count is None or (count is not None and count > 1):
            return scheduler
    return None


def detect(
    coordinator: str | None,
    num_processes: int | None,
    process_id: int | None,
    *,
    method: str | None = None,
    timeout_s: float = 300.0,
) -> Detected:
    """Fill what the flags and ``JAX_*`` left unset from the cluster this process runs in.

    Parameters
    ----------
    coordinator, num_processes, process_id
        The values known so far (``None``: unset).
    method : str, optional
        One of JAX's detectors by name (``"mpi4py"`` is only tried when named).
    timeout_s : float
        Handed to a detector that waits for the coordinator's host to resolve (Kubernetes).

    Returns
    -------
    Detected
        ``source``: the detector's name, or ``""`` when no cluster was found (the caller decides
        whether the values it has make a run).

    Raises
    ------
    HalfSetError
        A scheduler's multi-task variables are present but a value is still missing; the message
        names them and the fix.
    RuntimeError
        JAX's detector failed (e.g. a Kubernetes API error); the message is its first line.
    """
    env = os.environ
    known = (coordinator, num_processes, process_id)
    cluster = None if None not in known else _jax_present(method)
    if cluster is not None:
        try:
            found = cluster.auto_detect_unset_distributed_params(
                coordinator, num_processes, process_id, None, method, max(1, int(timeout_s))
            )
        except Exception as err:  # any detector error is the same failure to us
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise RuntimeError(f"{cluster.__name__}: {first}") from err
        ids: Sequence[int] | None = found[3]
        name = getattr(cluster, "name", "") or cluster.__name__.removesuffix("Cluster").lower()
        coordinator, num_processes, process_id = found[0], found[1], found[2]
        ids_tuple = None if ids is None else tuple(ids)
        return Detected(coordinator, num_processes, process_id, ids_tuple, name)
    scheduler = _half_set(env) if None in known else None
    if scheduler is None:
        return Detected(*known, None, "")
    if num_processes is None and scheduler.count is not None:
        num_processes = _int(env, scheduler.count)
    if process_id is None:
        process_id = _int(env, scheduler.rank)
    if coordinator is None or num_processes is None:
        absent = [name for name in scheduler.jax_needs if name not in env]
        missing = ", ".join(absent) if absent else "the kubernetes package"
        raise HalfSetError(
            f"{scheduler.label} ({scheduler.marker}={env[scheduler.marker]}) but JAX's "
            f"{scheduler.name} detector cannot start it (missing: {missing}); {scheduler.fix}"
        )
    return Detected(coordinator, num_processes, process_id, None, scheduler.name)
