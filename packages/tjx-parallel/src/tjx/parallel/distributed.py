"""Multi-host setup: find the coordinator, start ``jax.distributed``, barriers with timeouts."""

from __future__ import annotations

import dataclasses
import os
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import jax

from tjx.parallel.arguments import DistributedArgumentError, check_distributed_args
from tjx.parallel.clusters import detect

__all__ = [
    "DistributedInfo",
    "barrier",
    "initialize",
    "is_primary",
    "resolve_distributed",
]

#: jax's own join deadline is this much later than ours, so our message, not its abort, is seen.
JAX_GRACE_S = 10.0


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
    """Where this process stands.

    ``source`` is "args", "env" (``JAX_*`` variables), the name of the cluster detector that
    filled the rest ("slurm", "ompi", "k8s", "gketpu", "gcetpu", "mpi4py") or "single";
    ``local_device_ids`` are the devices the cluster gives this process (JAX's rule: one per
    process when the scheduler numbers the processes of a host), ``None`` for all.
    """

    coordinator: str | None
    num_processes: int
    process_id: int
    source: str
    local_device_ids: tuple[int, ...] | None = None


def _int_env(env: Mapping[str, str], key: str) -> int | None:
    value = env.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {key} must be an int, got {value!r}") from None


def resolve_distributed(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    cluster: str | None = None,
    timeout_s: float = 300.0,
) -> DistributedInfo:
    """Decide the distributed setup without starting anything.

    Order: explicit arguments, then ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID``, then JAX's own cluster detectors (SLURM, Open MPI, Kubernetes, Cloud TPU /
    GKE; mpi4py when ``cluster="mpi4py"``; :func:`tjx.parallel.clusters.detect`), else a single
    process. A scheduler's multi-task variables without all a join needs →
    :class:`~tjx.parallel.clusters.HalfSetError`; a partial setup → ValueError naming what is
    missing; a value out of range → `DistributedArgumentError` (the rules of
    :func:`~tjx.parallel.check_distributed_args`).

    Parameters
    ----------
    coordinator : str, optional
        ``host:port`` of process 0's coordination service.
    num_processes, process_id : int, optional
        Process count and this process's rank.
    cluster : str, optional
        Ask only this JAX detector (its ``cluster_detection_method`` name).
    timeout_s : float
        For a detector that waits for the coordinator's host name to resolve.

    Returns
    -------
    DistributedInfo

    Raises
    ------
    ValueError
        Incomplete setup (names what is missing), a half-set scheduler environment, or a
        `DistributedArgumentError` naming the value out of range (``.argument``) and, when it did
        not come from the arguments, where it came from.
    RuntimeError
        A JAX detector failed (a Kubernetes API error, say).
    """
    env = os.environ
    source = "args" if any(v is not None for v in (coordinator, num_processes, process_id)) else ""
    from_env = (
        env.get("JAX_COORDINATOR_ADDRESS") or None,
        _int_env(env, "JAX_NUM_PROCESSES"),
        _int_env(env, "JAX_PROCESS_ID"),
    )
    if any(v is not None for v in from_env):
        source = source or "env"
    coordinator = coordinator if coordinator is not None else from_env[0]
    num_processes = num_processes if num_processes is not None else from_env[1]
    process_id = process_id if process_id is not None else from_env[2]
    found = detect(coordinator, num_processes, process_id, method=cluster, timeout_s=timeout_s)
    coordinator, num_processes, process_id = (
        found.coordinator,
        found.num_processes,
        found.process_id,
    )
    source = found.source or source
    if not source or num_processes == 1:
        return DistributedInfo(coordinator, 1, 0, source or "single")
    missing = [
        name
        for name, value in (
            ("coordinator (JAX_COORDINATOR_ADDRESS)", coordinator),
            ("num_processes (JAX_NUM_PROCESSES)", num_processes),
            ("process_id (JAX_PROCESS_ID)", process_id),
        )
        if value is None
    ]
    if missing:
        raise ValueError(
            f"incomplete distributed setup from {source}: missing {', '.join(missing)}"
        )
    assert num_processes is not None and process_id is not None and coordinator is not None
    try:
        check_distributed_args(coordinator, num_processes, process_id)
    except DistributedArgumentError as err:
        if source == "args":
            raise
        raise DistributedArgumentError(err.argument, f"{err.problem} (from {source})") from None
    return DistributedInfo(coordinator, num_processes, process_id, source, found.local_device_ids)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = 300.0,
    heartbeat_timeout_s: float = 100.0,
    local_device_ids: Sequence[int] | None = None,
    cpu_collectives: str | None = "gloo",
    timeout_message: str | None = None,
    preemption_service: bool | None = None,
    cluster: str | None = None,
    resolved: DistributedInfo | None = None,
) -> DistributedInfo:
    """Start ``jax.distributed`` when more than one process takes part; call before any JAX op.

    When not every announced process joins in time (a wrong process count, a duplicated process
    id, a coordinator nobody runs), jax 0.10 aborts the process from a C++ thread (SIGABRT, a
    long stack trace) instead of raising. So a watchdog fires ``timeout_s`` after the call, a
    little before jax's own deadline: it prints one line to stderr naming the coordinator and
    the process count, and ends the process with exit status 1 (nothing has run yet).

    Parameters
    ----------
    coordinator, num_processes, process_id
        Explicit setup; missing values come from the environment (:func:`resolve_distributed`).
        One process → nothing is started.
    timeout_s : float
        How long to wait for every process to connect.
    heartbeat_timeout_s : float
        A peer silent this long is declared dead and the coordination service ends the other
        processes with an error ("... heartbeat ..."), instead of letting them hang in a
        collective.
    local_device_ids : sequence of int, optional
        Restrict this process to some local devices (GPU/TPU).
    cpu_collectives : str or None
        CPU cross-process collectives ("gloo" works with jax 0.10); ``None`` leaves jax's default.
    timeout_message : str, optional
        The line the watchdog prints instead of the default (e.g. an app's own flags and hint).
    preemption_service : bool, optional
        ``False`` turns jax's preemption service off: on by default, it catches SIGTERM in C++
        and only records it, so a signal before the app installs its own handler is swallowed
        and the run goes on to the end. An app that agrees on stopping itself
        (:func:`tjx.parallel.stop_agreement`) wants it off. ``None`` leaves jax's setting.
    cluster : str, optional
        Ask only this one of JAX's cluster detectors (``"mpi4py"`` is only tried when named).
    resolved : DistributedInfo, optional
        The setup :func:`resolve_distributed` already found (the other setup arguments are then
        ignored); JAX's detectors ran there, so ``jax.distributed.initialize`` gets every value
        and does not detect again.

    Returns
    -------
    DistributedInfo

    Raises
    ------
    RuntimeError
        jax raised while joining (the message names the setup).
    """
    info = resolved or resolve_distributed(
        coordinator, num_processes, process_id, cluster=cluster, timeout_s=timeout_s
    )
    if local_device_ids is None:
        local_device_ids = info.local_device_ids
    if info.num_processes == 1:
        return info
    if preemption_service is not None:
        jax.config.update("jax_enable_preemption_service", preemption_service)
    if cpu_collectives is not None:
        jax.config.update("jax_cpu_collectives_implementation", cpu_collectives)
    failure = (
        f"process {info.process_id} of {info.num_processes} could not join the run at "
        f"coordinator {info.coordinator} within {timeout_s:g} s ({info.source} setup)"
    )
    watchdog = threading.Timer(
        timeout_s, _give_up, args=(timeout_message or f"tjx.parallel: error: {failure}",)
    )
    watchdog.daemon = True
    watchdog.start()
    try:
        jax.distributed.initialize(
            coordinator_address=info.coordinator,
            num_processes=info.num_processes,
            process_id=info.process_id,
            local_device_ids=None if local_device_ids is None else list(local_device_ids),
            cluster_detection_method="deactivate",  # resolve_distributed asked JAX's detectors
            initialization_timeout=max(1, int(timeout_s + JAX_GRACE_S)),
            heartbeat_timeout_seconds=max(1, int(heartbeat_timeout_s)),
        )
    except Exception as e:  # jax raises its runtime error type; re-raise with the setup in it
        raise RuntimeError(f"{failure}: {e}") from e
    finally:
        watchdog.cancel()
        watchdog.join()  # a cancelled timer ends at once; leave no thread behind
    return info


def _give_up(message: str) -> None:
    """The join watchdog: the main thread is blocked inside jax's C++ connect; end the process."""
    print(message, file=sys.stderr, flush=True)
    os._exit(1)


def runtime_client(caller: str) -> tuple[Any, int, int]:
    """jax's distributed runtime client (key-value store, barriers), this process's id and the
    process count: the one private jax access of this package.

    jax 0.10 keeps the client only in ``jax._src.distributed.global_state``; every use in this
    package goes through here, so a jax upgrade that moves it is fixed in one place. The id and
    count come from there too, so asking does not start the XLA backend.

    Parameters
    ----------
    caller : str
        Named in the error.

    Returns
    -------
    (jaxlib DistributedRuntimeClient, int, int)

    Raises
    ------
    RuntimeError
        ``jax.distributed`` was not initialised.
    """
    from jax._src import distributed as _distributed

    state = _distributed.global_state
    if state.client is None:
        raise RuntimeError(f"{caller}: jax.distributed is not initialised (call initialize())")
    return state.client, state.process_id, state.num_processes


def is_primary() -> bool:
    """True on process 0 — the one that logs, writes checkpoints metadata, prints.

    Returns
    -------
    bool
    """
    return jax.process_index() == 0


def barrier(name: str, timeout_s: float = 300.0) -> None:
    """Wait until every process reaches the barrier ``name``.

    Uses the coordination service's ``wait_at_barrier`` (no device collective), so a missing peer
    gives a :class:`TimeoutError` after ``timeout_s`` naming the barrier. Single process: no-op.

    Parameters
    ----------
    name : str
        Barrier id; every process must use the same name, once.
    timeout_s : float
        Seconds to wait for the others.

    Raises
    ------
    TimeoutError
        Not every process arrived in time.
    RuntimeError
        Several processes but ``jax.distributed`` was not initialised.
    """
    if jax.process_count() == 1:
        return
    client, _, _ = runtime_client("barrier")
    try:
        client.wait_at_barrier(name, int(timeout_s * 1000))
    except Exception as e:
        raise TimeoutError(
            f"barrier {name!r}: not all {jax.process_count()} processes arrived within "
            f"{timeout_s:g} s (process {jax.process_index()}): {e}"
        ) from e
