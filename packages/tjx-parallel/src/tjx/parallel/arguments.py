"""The rules a multi-process setup's values obey, checked on their own (no jax needed).

An app that takes the coordinator, the process count, this process's id and a join deadline as
flags can refuse a bad value before it starts anything, and name its own flag: every error
carries the argument it is about (``.argument``) and the problem without that name
(``.problem``). :func:`~tjx.parallel.resolve_distributed` checks the values it resolved (from
arguments, the environment or SLURM) by the same rules.
"""

from __future__ import annotations

__all__ = ["DistributedArgumentError", "check_distributed_args"]

#: The highest TCP port (ports are 1..65535; 0 means "any", which a coordinator cannot be).
MAX_PORT = 65535


class DistributedArgumentError(ValueError):
    """One value of a multi-process setup breaks its rule.

    Attributes
    ----------
    argument : str
        Its name: ``"coordinator"``, ``"num_processes"``, ``"process_id"`` or ``"timeout_s"``
        (an app maps it to its own flag).
    problem : str
        What is wrong with it, without its name: ``"must be >= 1, got 0"``.
    """

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument
        self.problem = problem


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
