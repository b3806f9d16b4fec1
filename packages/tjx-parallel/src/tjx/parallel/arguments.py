"""A multi-process setup's launch flags and the rules their values obey (no jax needed).

:func:`add_distributed_arguments` gives an app's parser the flags (``--coordinator``,
``--num-processes``, ``--process-id``, ``--init-timeout``) and :func:`distributed_from_args`
reads them back, checked, as :class:`DistributedArgs`: a bad value is refused before anything
starts, in one line naming its flag. :func:`check_distributed_args` is the check alone, for values
from elsewhere: every error carries the argument it is about (``.argument``) and the problem
without that name (``.problem``). :func:`~tjx.parallel.resolve_distributed` checks the values it
resolved (from arguments, the environment or a cluster) by the same rules, and
:func:`~tjx.parallel.join` words its messages by the same flags (:func:`not_joined_line`,
:data:`NUM_PROCESSES_LINE`).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

__all__ = [
    "CLUSTERS",
    "DEFAULT_TIMEOUT_S",
    "DISTRIBUTED_FLAGS",
    "NUM_PROCESSES_LINE",
    "DistributedArgs",
    "DistributedArgumentError",
    "add_distributed_arguments",
    "check_distributed_args",
    "distributed_from_args",
    "not_joined_line",
]

#: The highest TCP port (ports are 1..65535; 0 means "any", which a coordinator cannot be).
MAX_PORT = 65535

#: How long a process waits for every other one to join, unless told (``--init-timeout``).
DEFAULT_TIMEOUT_S = 300.0

#: Each argument's flag (:func:`add_distributed_arguments`); the namespace attribute is the
#: flag's (``init_timeout`` for ``timeout_s``).
DISTRIBUTED_FLAGS = {
    "coordinator": "--coordinator",
    "num_processes": "--num-processes",
    "process_id": "--process-id",
    "timeout_s": "--init-timeout",
}

#: :func:`~tjx.parallel.join`'s line when a process was told another process count than the run
#: has (a :meth:`~tjx.parallel.Disagreement.describe` template).
NUM_PROCESSES_LINE = (
    f"{DISTRIBUTED_FLAGS['num_processes']}: the run has {{expected}} processes but they were "
    "told {each}"
)


class DistributedArgumentError(ValueError):
    """One value of a multi-process setup breaks its rule.

    Attributes
    ----------
    argument : str
        Its name: ``"coordinator"``, ``"num_processes"``, ``"process_id"`` or ``"timeout_s"``
        (an app with its own flags maps it to them).
    problem : str
        What is wrong with it, without its name: ``"must be >= 1, got 0"``.
    flag : str or None
        Its flag when it came from one (:func:`distributed_from_args`); the message then names
        the flag instead of the argument.
    """

    def __init__(self, argument: str, problem: str, flag: str | None = None) -> None:
        super().__init__(f"{flag or argument}: {problem}")
        self.argument = argument
        self.problem = problem
        self.flag = flag


def check_distributed_args(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: float | None = None,
) -> None:
    """Refuse the first value that cannot be part of a multi-process setup (``None``: not given).

    Parameters
    ----------
    coordinator : str, optional
        Process 0's address, ``HOST:PORT`` with a port in 1..65535.
    num_processes : int, optional
        The process count, at least 1.
    process_id : int, optional
        This process's rank: ``0 .. num_processes - 1``, or at least 0 when the count is not
        given.
    timeout_s : float, optional
        How long to wait for every process to join, more than 0 seconds.

    Raises
    ------
    DistributedArgumentError
        The first value (in the order above) that breaks its rule; ``.argument`` names it.
    """
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


@dataclass(frozen=True)
class DistributedArgs:
    """How this process joins a multi-process run, as given (``None``: from the environment or
    a cluster, else a single process); the arguments of :func:`~tjx.parallel.join`."""

    coordinator: str | None = None
    num_processes: int | None = None
    process_id: int | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    cluster: str | None = None


#: ``--cluster``'s choices: the names of JAX's cluster detectors that JAX lets one choose
#: (``jax._src.clusters``; its Kubernetes one has no name and is only found by itself).
CLUSTERS = ("slurm", "ompi", "gketpu", "gcetpu", "mpi4py")


def add_distributed_arguments(
    parser: argparse.ArgumentParser, *, timeout_s: float = DEFAULT_TIMEOUT_S
) -> argparse._ArgumentGroup:
    """Add the ``multi-host`` group of launch flags to an app's parser.

    ``--coordinator HOST:PORT``, ``--num-processes N``, ``--process-id I`` (all unset by default:
    the ``JAX_*`` variables or the cluster JAX detects fill them, else the run is a single
    process), ``--init-timeout SECONDS`` and ``--cluster NAME``. Read them back with
    :func:`distributed_from_args`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The app's parser; its ``prog`` names the process in the group's description.
    timeout_s : float
        ``--init-timeout``'s default.

    Returns
    -------
    argparse._ArgumentGroup
        The group, for an app that adds flags of its own to it.
    """
    group = parser.add_argument_group(
        "multi-host",
        f"Run one {parser.prog} process per host (or per process group) with the same command "
        f"and its own {DISTRIBUTED_FLAGS['process_id']}; unset values come from "
        "JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID, else from the cluster "
        "JAX detects (SLURM, Open MPI, Kubernetes, Cloud TPU). Without any of them the run is a "
        "single process.",
    )
    group.add_argument(
        DISTRIBUTED_FLAGS["coordinator"],
        default=None,
        metavar="HOST:PORT",
        help="process 0's address and a free port",
    )
    group.add_argument(
        DISTRIBUTED_FLAGS["num_processes"],
        type=int,
        default=None,
        metavar="N",
        help="processes in the run",
    )
    group.add_argument(
        DISTRIBUTED_FLAGS["process_id"],
        type=int,
        default=None,
        metavar="I",
        help="this process's rank, 0..N-1",
    )
    group.add_argument(
        DISTRIBUTED_FLAGS["timeout_s"],
        type=float,
        default=timeout_s,
        metavar="SECONDS",
        help=f"give up (exit 1) if not every process has joined by then (default {timeout_s:g})",
    )
    group.add_argument(
        "--cluster",
        choices=CLUSTERS,
        default=None,
        help="ask only this one of JAX's cluster detectors (mpi4py is only asked when named)",
    )
    return group


def _dest(argument: str) -> str:
    """The namespace attribute of an argument's flag (``--init-timeout`` → ``init_timeout``)."""
    return DISTRIBUTED_FLAGS[argument].lstrip("-").replace("-", "_")


def distributed_from_args(args: argparse.Namespace) -> DistributedArgs:
    """The flags of :func:`add_distributed_arguments`, checked on their own (the environment fills
    the rest when joining).

    Parameters
    ----------
    args : argparse.Namespace
        The parsed command line.

    Returns
    -------
    DistributedArgs
        The values as given.

    Raises
    ------
    DistributedArgumentError
        The first value that breaks its rule (:func:`check_distributed_args`); its message names
        the flag: ``"--process-id: must be in 0..1, got 2"``.
    """
    values = {argument: getattr(args, _dest(argument)) for argument in DISTRIBUTED_FLAGS}
    try:
        check_distributed_args(**values)
    except DistributedArgumentError as err:
        flag = DISTRIBUTED_FLAGS[err.argument]
        raise DistributedArgumentError(err.argument, err.problem, flag) from None
    return DistributedArgs(
        values["coordinator"],
        values["num_processes"],
        values["process_id"],
        float(values["timeout_s"]),
        getattr(args, "cluster", None),
    )


def not_joined_line(
    num_processes: int, coordinator: str | None, process_id: int, timeout_s: float
) -> str:
    """Why this process gave up joining, and which flags fix it.

    Parameters
    ----------
    num_processes, coordinator, process_id
        The setup this process tried (a :class:`~tjx.parallel.DistributedInfo`'s).
    timeout_s : float
        How long it waited.

    Returns
    -------
    str
        One line, without a trailing period, e.g. ``"not all 2 processes joined the run at
        coordinator h:5 within 30 s (this is process 1); start every process with ..."``.
    """
    flags = DISTRIBUTED_FLAGS
    return (
        f"not all {num_processes} processes joined the run at coordinator {coordinator} within "
        f"{timeout_s:g} s (this is process {process_id}); start every process with the same "
        f"{flags['coordinator']} and {flags['num_processes']} and its own {flags['process_id']} "
        f"in 0..{num_processes - 1}, or raise {flags['timeout_s']}"
    )
