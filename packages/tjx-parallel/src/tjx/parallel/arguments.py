"""How a process joins a multi-process run, decided before anything starts (no jax needed):
the launch flags (:func:`add_distributed_arguments`, :func:`distributed_from_args`), then the
``JAX_*`` variables, then the scheduler whose task variables are set (:data:`SCHEDULERS`), else one
process (:func:`resolve_distributed`); the rest is JAX's detector's, run when joining. JAX's
detectors say "no cluster" when a variable is missing, so a half-set job would silently run one
process per host: here that is a :class:`HalfSetError`, one line naming the variables and the fix.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
from collections.abc import Mapping

MAX_PORT = 65535
#: How long a process waits for every other one to join, unless told (``--init-timeout``).
DEFAULT_TIMEOUT_S = 300.0
#: Each argument's flag; the namespace attribute is the flag's (``init_timeout``).
DISTRIBUTED_FLAGS = {
    "coordinator": "--coordinator",
    "num_processes": "--num-processes",
    "process_id": "--process-id",
    "timeout_s": "--init-timeout",
}
#: The line for a process told another process count than the run has (a
#: :meth:`~tjx.parallel.Disagreement.describe` template).
NUM_PROCESSES_LINE = "--num-processes: the run has {expected} processes but they were told {each}"
#: ``--cluster``'s choices: JAX's detectors that can be named (``cluster_detection_method``).
CLUSTERS = ("slurm", "ompi", "gketpu", "gcetpu", "mpi4py")


class DistributedArgumentError(ValueError):
    """One value of a multi-process setup breaks its rule: ``.argument`` names it
    (``"process_id"``), ``.problem`` says what is wrong without the name, ``.flag`` is its flag
    when it came from one (the message then names the flag)."""

    def __init__(self, argument: str, problem: str, flag: str | None = None) -> None:
        super().__init__(f"{flag or argument}: {problem}")
        self.argument, self.problem, self.flag = argument, problem, flag


class HalfSetError(ValueError):
    """A scheduler's multi-task variables are present, but not all a join needs."""


def check_distributed_args(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Raise :class:`DistributedArgumentError` for the first value (``None``: not given) that
    breaks its rule: ``HOST:PORT`` with a port in 1..65535, a count >= 1, an id in
    ``0..count-1``, a timeout > 0."""
    if coordinator is not None:
        host, _, port = coordinator.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) <= MAX_PORT:
            raise DistributedArgumentError(
                "coordinator",
                f"expected HOST:PORT with a port in 1..{MAX_PORT}, got {coordinator!r}",
            )
    if num_processes is not None and num_processes < 1:
        raise DistributedArgumentError("num_processes", f"must be >= 1, got {num_processes}")
    if process_id is not None and (
        process_id < 0 or (num_processes is not None and process_id >= num_processes)
    ):
        limit = f"0..{num_processes - 1}" if num_processes is not None else ">= 0"
        raise DistributedArgumentError("process_id", f"must be in {limit}, got {process_id}")
    if timeout_s is not None and not timeout_s > 0:  # `not >`: NaN is refused too
        raise DistributedArgumentError("timeout_s", f"must be > 0 seconds, got {timeout_s}")


@dataclasses.dataclass(frozen=True)
class DistributedArgs:
    """The launch flags as given (``None``: from the environment, a scheduler, or one process)."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    cluster: str | None = None


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands. ``source``: ``"args"``, ``"env"`` (``JAX_*``), a scheduler's
    name (:data:`SCHEDULERS`, or the ``--cluster`` named) or ``"single"``. Before joining, a
    value JAX's detector will find is ``None``; :func:`~tjx.parallel.join` returns them all."""

    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    source: str


def add_distributed_arguments(
    parser: argparse.ArgumentParser, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> argparse._ArgumentGroup:
    """Add the ``multi-host`` flags to an app's parser: ``--coordinator HOST:PORT``,
    ``--num-processes N``, ``--process-id I`` (unset: from the environment, else one process),
    ``--init-timeout SECONDS`` (default ``timeout_s``) and ``--cluster NAME``; the group is
    returned for an app's own flags. Read them back with :func:`distributed_from_args`."""
    flags = DISTRIBUTED_FLAGS
    group = parser.add_argument_group(
        "multi-host",
        f"Run one {parser.prog} process per host (or per process group) with the same command "
        f"and its own {flags['process_id']}; unset values come from JAX_COORDINATOR_ADDRESS / "
        "JAX_NUM_PROCESSES / JAX_PROCESS_ID, else from the scheduler (SLURM, Open MPI, a "
        "Kubernetes indexed Job, GKE TPU; name the cluster on a Cloud TPU VM). Without any of "
        "them the run is a single process.",
    )
    group.add_argument(
        flags["coordinator"], metavar="HOST:PORT", help="process 0's address and a free port"
    )
    group.add_argument(flags["num_processes"], type=int, metavar="N", help="processes in the run")
    group.add_argument(
        flags["process_id"], type=int, metavar="I", help="this process's rank, 0..N-1"
    )
    group.add_argument(
        flags["timeout_s"],
        type=float,
        default=timeout_s,
        metavar="SECONDS",
        help=f"give up (exit 1) if not every process has joined by then (default {timeout_s:g})",
    )
    group.add_argument(
        "--cluster",
        choices=CLUSTERS,
        help="ask only this one of JAX's cluster detectors (mpi4py and gcetpu, a Cloud TPU VM, "
        "are only asked when named)",
    )
    return group


def distributed_from_args(args: argparse.Namespace) -> DistributedArgs:
    """The flags of :func:`add_distributed_arguments`, checked on their own; a
    :class:`DistributedArgumentError` names the flag (``"--process-id: must be in 0..1, got 2"``).
    """
    values = {
        name: getattr(args, flag.lstrip("-").replace("-", "_"))
        for name, flag in DISTRIBUTED_FLAGS.items()
    }
    try:
        check_distributed_args(**values)
    except DistributedArgumentError as err:
        raise DistributedArgumentError(
            err.argument, err.problem, DISTRIBUTED_FLAGS[err.argument]
        ) from None
    values["timeout_s"] = float(values["timeout_s"])
    return DistributedArgs(**values, cluster=getattr(args, "cluster", None))


def not_joined_line(info: DistributedInfo, timeout_s: float) -> str:
    """Why this process gave up joining and which flags fix it (one line, no final period)."""
    n, flags = info.num_processes, DISTRIBUTED_FLAGS
    return (
        f"not all {n} processes joined the run at coordinator {info.coordinator} within "
        f"{timeout_s:g} s (this is process {info.process_id}); start every process with the same "
        f"{flags['coordinator']} and {flags['num_processes']} and its own {flags['process_id']} "
        f"in 0..{n - 1 if n is not None else 'N-1'}, or raise {flags['timeout_s']}"
    )


@dataclasses.dataclass(frozen=True)
class Scheduler:
    """A scheduler's multi-task job as tjx recognises it: ``name`` is JAX's detector's (and the
    ``source``), ``count`` / ``rank`` the variables of the process count (``None``: JAX finds it
    elsewhere) and rank, the first of them set in every task; ``jax_needs`` the variables JAX's
    detector reads (it answers only with all of them)."""

    name: str
    label: str
    count: str | None
    rank: str
    jax_needs: tuple[str, ...]
    fix: str

    @property
    def marker(self) -> str:
        return self.count or self.rank

    def jax_detects(self, env: Mapping[str, str]) -> bool:
        """Whether JAX's detector will answer here (Kubernetes: with the ``kubernetes`` package)."""
        kubernetes = self.name != "k8s" or importlib.util.find_spec("kubernetes") is not None
        return kubernetes and all(name in env for name in self.jax_needs)


_SET_JAX = "set JAX_COORDINATOR_ADDRESS=HOST:PORT of rank 0 (or pass the coordinator flag)"
#: In JAX's order of detection (Open MPI before SLURM: ``mpirun`` inside an allocation).
SCHEDULERS = (
    Scheduler(
        "ompi",
        "Open MPI job",
        "OMPI_COMM_WORLD_SIZE",
        "OMPI_COMM_WORLD_RANK",
        ("OMPI_MCA_orte_hnp_uri",),
        f"Open MPI 5 no longer sets OMPI_MCA_orte_hnp_uri: {_SET_JAX}",
    ),
    Scheduler(
        "slurm",
        "SLURM job step",
        "SLURM_NTASKS",
        "SLURM_PROCID",
        ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID"),
        f"start the processes with srun, or {_SET_JAX}",
    ),
    Scheduler(
        "gketpu",
        "GKE TPU workload",
        None,
        "TPU_WORKER_ID",
        ("TPU_WORKER_HOSTNAMES",),
        f"on a Cloud TPU VM pass --cluster gcetpu, else {_SET_JAX}",
    ),
    Scheduler(
        "k8s",
        "Kubernetes indexed Job",
        None,
        "JOB_COMPLETION_INDEX",
        ("KUBERNETES_SERVICE_HOST",),
        "set JAX_NUM_PROCESSES to the Job's parallelism and JAX_COORDINATOR_ADDRESS="
        "<job>-0.<subdomain>:PORT in the pod spec, or install the kubernetes package "
        "(jax[k8s]) so JAX reads them from the API",
    ),
)
#: Every variable that can make a process join a run (what a test removes to start a process
#: that only its own setup steers).
VARIABLES = tuple(
    dict.fromkeys(
        ["JAX_COORDINATOR_ADDRESS", "JAX_COORDINATOR_PORT", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"]
        + ["JAX_LOCAL_DEVICE_IDS"]
        + [name for s in SCHEDULERS for name in (s.marker, s.rank, *s.jax_needs)]
        + ["OMPI_COMM_WORLD_LOCAL_RANK"]
    )
)


def _int(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key, "")
    try:
        return None if value == "" else int(value)
    except ValueError:
        raise ValueError(f"environment variable {key} must be an int, got {value!r}") from None


def _scheduler(env: Mapping[str, str], cluster: str | None) -> Scheduler | None:
    """The scheduler whose multi-task job this process is in (``cluster``: only that one)."""
    for scheduler in SCHEDULERS:
        if cluster in (None, scheduler.name) and scheduler.marker in env:
            count = _int(env, scheduler.count) if scheduler.count else None
            if cluster or count is None or count > 1:  # one task of SLURM or MPI: no job
                return scheduler
    for scheduler in SCHEDULERS:
        if scheduler.name == cluster:  # named, but not there
            raise HalfSetError(
                f"--cluster {cluster}: {scheduler.marker} is unset (no {scheduler.label})"
            )
    return None


def resolve_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cluster: str | None = None,
) -> DistributedInfo:
    """Decide the setup without starting anything, in the module docstring's order. ``cluster``
    (of :data:`CLUSTERS`) is the only detector asked; mpi4py and Cloud TPU VMs are asked only
    when named, and JAX's detector then finds every unset value when joining.

    Raises
    ------
    HalfSetError
        A scheduler's task variables without all a join needs.
    ValueError
        An incomplete setup from flags or ``JAX_*``, a variable that is not an int, or a
        :class:`DistributedArgumentError` (a value out of range, naming where it came from).
    """
    env = os.environ
    source = "args" if (coordinator, num_processes, process_id) != (None, None, None) else ""
    from_env = env.get("JAX_COORDINATOR_ADDRESS") or None
    count, rank = _int(env, "JAX_NUM_PROCESSES"), _int(env, "JAX_PROCESS_ID")
    source = source or ("env" if (from_env, count, rank) != (None, None, None) else "")
    coordinator = coordinator if coordinator is not None else from_env
    num_processes = num_processes if num_processes is not None else count
    process_id = process_id if process_id is not None else rank
    scheduler = None
    if cluster is not None or None in (coordinator, num_processes, process_id):
        scheduler = _scheduler(env, cluster)
        source = scheduler.name if scheduler else cluster or source
    if scheduler is not None:
        if num_processes is None and scheduler.count:
            num_processes = _int(env, scheduler.count)
        if process_id is None:
            process_id = _int(env, scheduler.rank)
        unknown = coordinator is None or num_processes is None
        if unknown and not scheduler.jax_detects(env):
            absent = ", ".join(v for v in scheduler.jax_needs if v not in env)
            raise HalfSetError(
                f"{scheduler.label} ({scheduler.marker}={env[scheduler.marker]}) but JAX's "
                f"{scheduler.name} detector cannot start it (missing: "
                f"{absent or 'the kubernetes package'}); {scheduler.fix}"
            )
    if not source or num_processes == 1:
        return DistributedInfo(coordinator, 1, 0, source or "single")
    given = {
        "coordinator (JAX_COORDINATOR_ADDRESS)": coordinator,
        "num_processes (JAX_NUM_PROCESSES)": num_processes,
        "process_id (JAX_PROCESS_ID)": process_id,
    }
    missing = [name for name, value in given.items() if value is None]
    if source in ("args", "env") and missing:  # else JAX's detector finds them when joining
        raise ValueError(
            f"incomplete distributed setup from {source}: missing {', '.join(missing)}"
        )
    try:
        check_distributed_args(coordinator, num_processes, process_id)
    except DistributedArgumentError as err:
        if source == "args":
            raise
        raise DistributedArgumentError(err.argument, f"{err.problem} (from {source})") from None
    return DistributedInfo(coordinator, num_processes, process_id, source)
