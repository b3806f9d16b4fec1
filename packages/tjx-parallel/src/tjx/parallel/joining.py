"""Joining a multi-process run in one call: resolve the setup, start ``jax.distributed`` with a
deadline, then check that every process was started alike.

Two ways a multi-process launch goes wrong, which :func:`join` turns into one exception each:

* Not every announced process joins (a wrong process count, a duplicated process id, a
  coordinator nobody runs). :func:`~tjx.parallel.initialize`'s watchdog ends the process with
  the caller's one line before jax aborts it from a C++ thread; a join that fails sooner raises
  :class:`NotJoinedError`.
* Processes that disagree. jax uses process 0's count, so a process told 3 in a run of 2 joins
  without complaint; a process started with another config trains another model and hangs or
  diverges later. After joining, every process compares what it was told with the others'
  (:func:`require_agreement`: one tiny all-gather) and all raise :class:`DisagreementError`
  together, with one message listing each value that differs.

The setup's own messages name the launch flags of :func:`~tjx.parallel.add_distributed_arguments`
(``--coordinator``, ``--num-processes``, ``--process-id``, ``--init-timeout``): the line the
watchdog prints (:func:`~tjx.parallel.not_joined_line`, also :attr:`NotJoinedError.explanation`)
and the process-count line (:data:`~tjx.parallel.NUM_PROCESSES_LINE`). An app adds its own words:
a prefix or another watchdog line (``timeout_message``), a line per value of its own (``lines``)
and the exit status of each exception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tjx.parallel.agreement import Disagreement, disagreements
from tjx.parallel.arguments import DEFAULT_TIMEOUT_S, NUM_PROCESSES_LINE, not_joined_line
from tjx.parallel.distributed import DistributedInfo, initialize, resolve_distributed

__all__ = [
    "NUM_PROCESSES",
    "DisagreementError",
    "DistributedSetupError",
    "JoinError",
    "NotJoinedError",
    "join",
    "require_agreement",
]

#: The name under which :func:`join` compares the process count each process was told.
NUM_PROCESSES = "num_processes"


class JoinError(RuntimeError):
    """The run could not start as several processes (one of the subclasses says why).

    Attributes
    ----------
    info : DistributedInfo or None
        The resolved setup, when it could be resolved.
    """

    def __init__(self, message: str, info: DistributedInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


class DistributedSetupError(JoinError, ValueError):
    """The setup is incomplete or inconsistent (:func:`~tjx.parallel.resolve_distributed`'s
    message: what is missing or wrong); nothing was started."""


class NotJoinedError(JoinError):
    """``jax.distributed`` raised while joining.

    Attributes
    ----------
    info : DistributedInfo
        The setup this process tried.
    reason : str
        The first line of the error (the setup and jax's cause), without jax's C++ details.
    explanation : str
        What was expected and which flags fix it (:func:`~tjx.parallel.not_joined_line`; the
        watchdog's default line); ``f"{explanation}: {reason}"`` is the whole story.
    """

    def __init__(self, info: DistributedInfo, reason: str, explanation: str = "") -> None:
        super().__init__(reason, info)
        self.reason = reason
        self.explanation = explanation


class DisagreementError(JoinError):
    """The processes were not started alike; every process raises it with the same message.

    Attributes
    ----------
    found : list of Disagreement
        Each value that differs, in the order given.
    """

    PREFIX = "multi-host processes disagree: "

    def __init__(
        self,
        found: Sequence[Disagreement],
        lines: Mapping[str, str] | None = None,
        info: DistributedInfo | None = None,
    ) -> None:
        lines = lines or {}
        problems = (d.describe(lines.get(d.name)) for d in found)
        super().__init__(self.PREFIX + "; ".join(problems), info)
        self.found = list(found)


def require_agreement(
    values: Mapping[str, int | str],
    *,
    num_processes: int | None = None,
    lines: Mapping[str, str] | None = None,
) -> None:
    """Raise one error listing every value the processes do not all hold alike.

    A collective (:func:`~tjx.parallel.disagreements`): call it on every process, after joining,
    with the same names in the same order; all of them raise together or none does.

    Parameters
    ----------
    values : mapping of str to int or str
        What this process was told (flags, a whole config as text); strings are compared by
        their digests.
    num_processes : int, optional
        The process count this process was told. It is compared first, under
        :data:`NUM_PROCESSES`, with the count the run really has (``jax.process_count()``:
        jax takes process 0's word, so a process told another count joins without complaint).
    lines : mapping of str to str, optional
        The caller's line per name (:meth:`Disagreement.describe`'s template: ``{name}``,
        ``{expected}``, ``{each}``, ``{differ}``); a name without one gets the default line.

    Raises
    ------
    DisagreementError
        Some value differs; ``.found`` lists them.
    ValueError
        ``values`` names :data:`NUM_PROCESSES` too, or a value cannot be sent.
    """
    import jax

    told: dict[str, int | str] = {}
    expected: dict[str, int | str] = {}
    if num_processes is not None:
        if NUM_PROCESSES in values:
            raise ValueError(
                f"require_agreement: {NUM_PROCESSES!r} is compared by the num_processes "
                "argument; remove it from values"
            )
        told[NUM_PROCESSES] = num_processes
        expected[NUM_PROCESSES] = jax.process_count()
    told.update(values)
    found = disagreements(told, expected=expected)
    if found:
        raise DisagreementError(found, lines)


def join(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    values: Mapping[str, int | str] | None = None,
    lines: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    timeout_message: str | Callable[[DistributedInfo], str] | None = None,
    heartbeat_timeout_s: float = 100.0,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    preemption_service: bool | None = None,
    cluster: str | None = None,
) -> DistributedInfo:
    """Resolve the setup, start ``jax.distributed`` with a deadline, and check agreement.

    One process (no flags, no ``JAX_*`` variables, no cluster of several processes) starts
    nothing and compares nothing. Several: :func:`~tjx.parallel.initialize` joins them (its
    watchdog prints ``timeout_message`` and exits 1 when not every process joins in time), then
    :func:`require_agreement` compares the process count each was told and ``values``.

    Parameters
    ----------
    coordinator, num_processes, process_id
        Explicit setup; missing values come from the environment
        (:func:`~tjx.parallel.resolve_distributed`).
    values : mapping of str to int or str, optional
        What every process must share (flags, a whole config as text).
    lines : mapping of str to str, optional
        The caller's line per disagreeing name (see :func:`require_agreement`);
        :data:`NUM_PROCESSES` defaults to :data:`~tjx.parallel.NUM_PROCESSES_LINE`, naming
        ``--num-processes``.
    timeout_s : float
        How long to wait for every process to join.
    timeout_message : str or callable, optional
        The watchdog's line; a callable gets the resolved setup (to name the coordinator, the
        count and this process). Default: ``"tjx.parallel: error: "`` and
        :func:`~tjx.parallel.not_joined_line`, naming the launch flags.
    heartbeat_timeout_s, local_device_ids, cpu_collectives, preemption_service, cluster
        As for :func:`~tjx.parallel.initialize`.

    Returns
    -------
    DistributedInfo
        Where this process stands (``num_processes == 1``: a single process).

    Raises
    ------
    DistributedSetupError
        An incomplete or inconsistent setup; nothing was started.
    NotJoinedError
        ``jax.distributed`` raised while joining.
    DisagreementError
        The processes joined but were not started alike (every process raises it).
    """
    try:
        info = resolve_distributed(
            coordinator, num_processes, process_id, cluster=cluster, timeout_s=timeout_s
        )
    except ValueError as err:
        raise DistributedSetupError(str(err)) from None
    except RuntimeError as err:  # a cluster detector failed: the scheduler is there, no join
        raise NotJoinedError(
            DistributedInfo(coordinator, num_processes or 0, process_id or 0, "cluster"),
            str(err),
            "the cluster's detector could not read the setup",
        ) from None
    if info.num_processes == 1:
        return info
    explanation = not_joined_line(info.num_processes, info.coordinator, info.process_id, timeout_s)
    if timeout_message is None:
        message = f"tjx.parallel: error: {explanation}"
    elif callable(timeout_message):
        message = timeout_message(info)
    else:
        message = timeout_message
    try:
        initialize(
            resolved=info,
            timeout_s=timeout_s,
            heartbeat_timeout_s=heartbeat_timeout_s,
            local_device_ids=local_device_ids,
            cpu_collectives=cpu_collectives,
            timeout_message=message,
            preemption_service=preemption_service,
        )
    except (RuntimeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise NotJoinedError(info, reason, explanation) from None
    lines = {NUM_PROCESSES: NUM_PROCESSES_LINE, **(lines or {})}
    try:
        require_agreement(values or {}, num_processes=info.num_processes, lines=lines)
    except DisagreementError as err:
        err.info = info
        raise
    return info
