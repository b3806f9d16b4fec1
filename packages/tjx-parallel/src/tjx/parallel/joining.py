"""Joining a multi-process run in one call (:func:`join`): resolve the setup, start
``jax.distributed`` (:func:`initialize`: jax's detectors and timeouts, its abort as one line),
then check that every process was started alike: jax takes process 0's word on the run's shape,
so a process told 3 in a run of 2 joins, and one with another config trains another model until
a collective hangs. :func:`disagreements` gathers every process's named values in one tiny
all-gather (:func:`process_values`; strings as 128-bit digests): all compute the same list from
the same rows, so all refuse together (:class:`DisagreementError`).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import numpy as np

from tjx.parallel.aborts import abort_message, coordinator_reachable, exit_with, guard_aborts
from tjx.parallel.arguments import (
    DEFAULT_TIMEOUT_S,
    NUM_PROCESSES_LINE,
    SCHEDULERS,
    DistributedInfo,
    not_joined_line,
    resolve_distributed,
)
from tjx.parallel.internals import joined_setup, runtime_client

#: The name under which :func:`join` compares the process count each process was told.
NUM_PROCESSES = "num_processes"
Message = str | Callable[[DistributedInfo], str] | None


class JoinError(RuntimeError):
    """The run could not start as several processes; ``.info``: the setup, when resolved."""

    def __init__(self, message: str, info: DistributedInfo | None = None) -> None:
        super().__init__(message)
        self.info = info


class DistributedSetupError(JoinError, ValueError):
    """The setup is incomplete or inconsistent (what is missing or wrong); nothing started."""


class NotJoinedError(JoinError):
    """``jax.distributed`` raised while joining: ``.reason`` is the first line of its error,
    ``.explanation`` what was expected and which flags fix it (:func:`not_joined_line`)."""

    def __init__(self, info: DistributedInfo, reason: str, explanation: str = "") -> None:
        super().__init__(reason, info)
        self.reason, self.explanation = reason, explanation


@dataclass(frozen=True)
class Disagreement:
    """A named value the processes do not all hold alike: ``values`` by process (an int, or a
    string's four digest words); ``expected`` what all had to hold, else process 0's counts."""

    name: str
    values: tuple[Any, ...]
    expected: int | str | None = None

    @property
    def differ(self) -> list[int]:
        """The processes whose value is not the reference (``expected``, else process 0's)."""
        if self.expected is None:
            reference: Any = self.values[0]
        elif isinstance(self.expected, str):
            reference = tuple(digest_words(self.expected))
        else:
            reference = int(self.expected)
        return [rank for rank, value in enumerate(self.values) if value != reference]

    def each(self) -> str:
        """``"process 0: 2, process 1: 3"``; a string shows its digest's first word in hex."""

        def show(value: Any) -> str:
            return f"{value[0] & 0xFFFFFFFF:08x}" if isinstance(value, tuple) else str(value)

        return ", ".join(f"process {rank}: {show(v)}" for rank, v in enumerate(self.values))

    def describe(self, template: str | None = None) -> str:
        """One line in the caller's words: ``template.format(name=, expected=, each=, differ=)``.

        >>> Disagreement("n", (2, 3)).describe("--n: told {each}")
        '--n: told process 0: 2, process 1: 3'
        """
        if template is None:
            return str(self)
        return template.format(
            name=self.name, expected=self.expected, each=self.each(), differ=self.differ
        )

    def __str__(self) -> str:
        if self.expected is not None:
            return f"{self.name}: expected {self.expected}, but {self.each()}"
        return f"{self.name}: process(es) {self.differ} hold another value than process 0"


class DisagreementError(JoinError):
    """The processes were not started alike; every process raises it with the same message
    (``.found``: the :class:`Disagreement` s, in order)."""

    PREFIX = "multi-host processes disagree: "

    def __init__(
        self,
        found: Sequence[Disagreement],
        lines: Mapping[str, str] | None = None,
        info: DistributedInfo | None = None,
    ) -> None:
        problems = (d.describe((lines or {}).get(d.name)) for d in found)
        super().__init__(self.PREFIX + "; ".join(problems), info)
        self.found = list(found)


def digest_words(text: str) -> list[int]:
    """128 bits of sha256 of ``text`` as four int32 words (equal texts, equal words)."""
    raw = hashlib.sha256(text.encode()).digest()[:16]
    return [int(w) for w in np.frombuffer(raw, dtype=np.int32)]


def process_values(values: Mapping[str, int | str]) -> dict[str, list[Any]]:
    """Every process's value of each name, by process, from one tiny all-gather (a collective:
    call it on every process with the same names, after joining). Ints (int32) arrive as they
    are, strings as their :func:`digest_words` tuples; one process gathers nothing. ValueError:
    an int outside int32, or a value of another type."""
    row: list[int] = []
    spans: dict[str, tuple[int, int, bool]] = {}
    for key, value in values.items():
        start = len(row)
        if isinstance(value, str):
            row.extend(digest_words(value))
        elif isinstance(value, int | np.integer):  # bools too (a flag given or not)
            if not -(2**31) <= int(value) < 2**31:
                raise ValueError(f"process_values: {key}={value} does not fit in int32")
            row.append(int(value))
        else:
            raise ValueError(f"process_values: {key} must be an int or a str, got {value!r}")
        spans[key] = (start, len(row), isinstance(value, str))
    mine = np.asarray(row, dtype=np.int32)
    rows = mine[None] if jax.process_count() == 1 else gather_rows(mine)  # [processes, fields]
    return {
        key: [tuple(int(w) for w in r) if text else int(r[0]) for r in rows[:, lo:hi]]
        for key, (lo, hi, text) in spans.items()
    }


_gathers = itertools.count()  # each gather's barrier has its own name


def gather_rows(mine: np.ndarray) -> np.ndarray:
    """Every process's ``mine`` (one int32 row each), stacked in process order (a collective).
    jax's ``process_allgather`` returns once one local device holds the result, others perhaps
    still connecting (gloo): a process exiting then (all refuse a disagreement at once) hangs a
    peer in its exit. So every local copy is waited for, then a barrier."""
    devices = np.array(jax.devices()).reshape(jax.process_count(), jax.local_device_count())
    mesh = jax.sharding.Mesh(devices, ("processes", "local"))
    spread = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("processes"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    rows = jax.make_array_from_process_local_data(spread, np.asarray(mine, np.int32)[None])
    gathered = jax.jit(lambda x: x, out_shardings=whole)(rows).block_until_ready()
    barrier(f"tjx-parallel-gather-{next(_gathers)}")
    return np.asarray(gathered.addressable_data(0))


def disagreements(
    values: Mapping[str, int | str], *, expected: Mapping[str, int | str] | None = None
) -> list[Disagreement]:
    """The named values not every process holds alike (or not as ``expected``), the same list on
    every process (a collective, :func:`process_values`).

    >>> disagreements({"steps": 10, "config": "lr: 0.1"})  # one process
    []
    >>> [str(d) for d in disagreements({"num_processes": 2}, expected={"num_processes": 1})]
    ['num_processes: expected 1, but process 0: 2']
    """
    expected = dict(expected or {})
    if unknown := sorted(set(expected) - set(values)):
        raise ValueError(f"disagreements: expected names no value of this process: {unknown}")
    found = (Disagreement(k, tuple(v), expected.get(k)) for k, v in process_values(values).items())
    return [d for d in found if d.differ]


def require_agreement(
    values: Mapping[str, int | str],
    *,
    num_processes: int | None = None,
    lines: Mapping[str, str] | None = None,
) -> None:
    """Raise one :class:`DisagreementError` listing every value the processes do not hold alike
    (a collective); ``num_processes``, the count this process was told, first (as
    :data:`NUM_PROCESSES`), against the run's. ``lines``: a :meth:`Disagreement.describe`
    template per name."""
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
    if found := disagreements({**told, **values}, expected=expected):
        raise DisagreementError(found, lines)


def _now(info: DistributedInfo) -> DistributedInfo:
    """``info`` with what jax resolved in place of the values its detector filled."""
    coordinator, n, rank = joined_setup()
    return DistributedInfo(
        info.coordinator or coordinator,
        info.num_processes if info.num_processes is not None else n,
        info.process_id if info.process_id is not None else rank,
        info.source,
    )


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    heartbeat_timeout_s: float = 100.0,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    timeout_message: Message = None,
    preemption_service: bool | None = None,
    cluster: str | None = None,
    resolved: DistributedInfo | None = None,
) -> DistributedInfo:
    """Start ``jax.distributed`` when more than one process takes part (before any JAX op);
    the setup, every value filled (``resolved``: :func:`resolve_distributed`'s, if had).

    ``timeout_s`` and ``heartbeat_timeout_s`` are jax's own; when not every process joined in
    time, jax aborts (~5 s later) and the abort guard prints ``timeout_message`` (a line, or a
    function of the setup; default :func:`not_joined_line`'s) and exits with status 1.
    ``local_device_ids``: default JAX's rule for the scheduler, else all. ``cpu_collectives``:
    "gloo" (CPU multi-process needs it); ``None`` leaves jax's. ``preemption_service=False``
    turns jax's off: it catches SIGTERM in C++ and only records it, so an app that stops through
    :func:`~tjx.parallel.stop_agreement` would miss a signal that came before its handler.

    Raises
    ------
    RuntimeError
        jax raised while joining (the message names the setup and jax's cause).
    """
    info = resolved or resolve_distributed(coordinator, num_processes, process_id, cluster=cluster)
    if info.num_processes == 1:
        return info
    if preemption_service is not None:
        jax.config.update("jax_enable_preemption_service", preemption_service)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)

    def not_joined() -> str:
        now = _now(info)
        if callable(timeout_message):
            return timeout_message(now)
        return timeout_message or f"tjx.parallel: error: {not_joined_line(now, timeout_s)}"

    guard_aborts(not_joined, lambda line: exit_with(line, prefix=""))
    # JAX's detector fills what a scheduler left unknown (and sets its rule for local devices);
    # values from flags or JAX_* variables are not detected again.
    scheduler = next((s for s in SCHEDULERS if s.name == info.source), None)
    detects = scheduler is not None and scheduler.jax_detects(os.environ)
    try:
        jax.distributed.initialize(
            coordinator_address=info.coordinator,
            num_processes=info.num_processes,
            process_id=info.process_id,
            local_device_ids=None if local_device_ids is None else list(local_device_ids),
            cluster_detection_method=cluster or (None if detects else "deactivate"),
            initialization_timeout=max(1, math.ceil(timeout_s)),
            heartbeat_timeout_seconds=max(1, math.ceil(heartbeat_timeout_s)),
        )
    except Exception as err:  # jax's runtime error type, or a detector's
        now = _now(info)
        raise RuntimeError(
            f"process {now.process_id} of {now.num_processes} could not join the run at "
            f"coordinator {now.coordinator} ({info.source} setup): {err}"
        ) from err
    finally:  # from now on an abort is jax's runtime, or a lost coordinator
        now = _now(info)
        rank, n = now.process_id or 0, now.num_processes or 1
        reachable = partial(coordinator_reachable, now.coordinator)
        guard_aborts(lambda: abort_message(None, rank, n, reachable), exit_with)
    return now


def join(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    values: Mapping[str, int | str] | None = None,
    lines: Mapping[str, str] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    timeout_message: Message = None,
    heartbeat_timeout_s: float = 100.0,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    preemption_service: bool | None = None,
    cluster: str | None = None,
) -> DistributedInfo:
    """Resolve the setup, join (:func:`initialize`), then :func:`require_agreement` on the count
    each process was told (worded by :data:`~tjx.parallel.NUM_PROCESSES_LINE` unless ``lines``
    words it) and ``values``. One process starts and compares nothing.

    Raises
    ------
    DistributedSetupError
        An incomplete or inconsistent setup; nothing was started.
    NotJoinedError
        ``jax.distributed`` raised while joining.
    DisagreementError
        Joined, but not started alike (every process raises it).
    """
    try:
        info = resolve_distributed(coordinator, num_processes, process_id, cluster=cluster)
    except ValueError as err:
        raise DistributedSetupError(str(err)) from None
    if info.num_processes == 1:
        return info
    try:
        info = initialize(
            resolved=info,
            timeout_s=timeout_s,
            heartbeat_timeout_s=heartbeat_timeout_s,
            local_device_ids=local_device_ids,
            cpu_collectives=cpu_collectives,
            timeout_message=timeout_message,
            preemption_service=preemption_service,
            cluster=cluster,
        )
    except (RuntimeError, ValueError) as err:
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        info = _now(info)
        raise NotJoinedError(info, reason, not_joined_line(info, timeout_s)) from None
    try:
        require_agreement(
            values or {},
            num_processes=info.num_processes,
            lines={NUM_PROCESSES: NUM_PROCESSES_LINE, **(lines or {})},
        )
    except DisagreementError as err:
        err.info = info
        raise
    return info


def is_primary() -> bool:
    """True on process 0, the one that logs and prints."""
    return jax.process_index() == 0


def barrier(name: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
    """Wait until every process reaches the barrier ``name`` (the coordination service's, no
    device collective; one process: no-op); a TimeoutError naming it after ``timeout_s``."""
    if jax.process_count() == 1:
        return
    client, rank, n = runtime_client("barrier")
    try:
        client.wait_at_barrier(name, int(timeout_s * 1000))
    except Exception as e:
        raise TimeoutError(
            f"barrier {name!r}: not all {n} processes arrived within {timeout_s:g} s "
            f"(process {rank}): {e}"
        ) from e
