"""Processes that must agree: on a stop flag at every step boundary, and on how they were started.

**Stopping together.** At every step boundary of a multi-process run, each process learns whether
*any* process was signalled, so all stop at the same step and save one checkpoint. Why: a
scheduler's SIGTERM reaches the tasks of a job one by one (or misses one). A process that decided
alone would enter the checkpoint save (a collective) at step N while a peer that had not been
signalled yet enters step N+1's train step (another collective): both block until jax's
collective/heartbeat timeout kills them, and the preemption checkpoint is lost.

How: through the coordination service that ``jax.distributed`` already runs on process 0 (gRPC,
host only). At boundary ``step`` a signalled process writes the key ``<name>/<step>/<rank>`` (the
signal's name), every process waits at one barrier, then lists the keys of that step. The writes
happen before the barrier and the reads after it, so every process reads the same set and they
all decide alike. The keys are per step because a fast process may already write at the next
boundary while a slow one still reads this one; only a signalled process writes, once, so the
service holds at most one key per process. The barrier id is reused (jax 0.10's coordination
service counts rounds of a barrier: ``Id: tjx/stop::4``), so it holds no per-step state.

No device collective is involved: an all-gather of the flag (``multihost_utils.process_allgather``)
would queue behind the step just dispatched and make every host wait for the devices each step,
losing the host's run-ahead (data loading and dispatch overlapped with compute). Measured on CPU
over loopback (2 processes, 2 shared cores): ~0.9 ms per boundary for the barrier + listing,
~1.8-2.2 ms for the all-gather. The barrier also keeps the hosts' dispatch within one step of
each other, which the step's own collectives nearly do anyway.

Not jax's preemption sync manager (``multihost_utils.reached_preemption_sync_point``, what orbax
and MaxText use): it learns of SIGTERM through its own C++ handler, which an app's Python handler
replaces, so it would never fire; it knows no SIGINT; and before the app's handler is installed
it swallows SIGTERM (the run goes on to the end). Turn it off when joining
(``initialize(..., preemption_service=False)``).

A single process gets the plain local decision: no exchange, nothing new per step.

**Started alike.** :func:`process_values` shows every process what the others were told (counts,
flags, a digest of a whole config) with one tiny all-gather right after joining, so an app can
refuse, on every process at once, a run whose processes disagree. :func:`disagreements` is that
check: the named values not every process holds alike (or not as expected), each a
:class:`Disagreement` saying which processes differ. Every process gets the same list from the
same gathered rows, so all of them refuse together and none is left waiting in a collective.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from tjx.parallel.distributed import runtime_client

__all__ = [
    "STOP_NAME",
    "STOP_TIMEOUT_S",
    "Disagreement",
    "Exchange",
    "StopAgreement",
    "coordination_exchange",
    "digest_words",
    "disagreements",
    "process_values",
    "stop_agreement",
]

#: Signals of this boundary: (step, this process's signal name or None) → {rank: signal name} of
#: every process that reported one at this boundary (the same dict on every process).
Exchange = Callable[[int, "str | None"], dict[int, str]]

#: The keys' folder and the barrier id of :func:`stop_agreement`.
STOP_NAME = "tjx/stop"
# The hosts' loops are coupled by the step's collectives, so they meet here within a step of
# each other; a first compile on a loaded host may lag by minutes. A dead peer is caught by the
# peer watch (watch_peers, ~15 s) long before this.
STOP_TIMEOUT_S = 3600.0


class StopAgreement:
    """Decides, the same way on every process, whether the run stops at a step boundary.

    Parameters
    ----------
    exchange : callable, optional
        Shares this process's signal with the others (see :data:`Exchange`); ``None`` for a
        single process, where the local flag alone decides.
    """

    def __init__(self, exchange: Exchange | None = None) -> None:
        self._exchange = exchange

    def decide(self, step: int, local: str | None) -> str | None:
        """Whether to stop before ``step``: why (a signal name), or ``None`` to go on.

        Parameters
        ----------
        step : int
            The step about to run (every process calls this at every boundary, with the same
            steps in the same order).
        local : str or None
            The signal this process received (``"SIGTERM"``), if any.

        Returns
        -------
        str or None
            ``local`` when this process was signalled; ``"<SIGNAL> on process <rank>"`` (the
            lowest signalled rank) when only others were; ``None`` when nobody was.
        """
        if self._exchange is None:
            return local
        signals = self._exchange(step, local)
        if local is not None:
            return local
        if not signals:
            return None
        rank = min(signals)
        return f"{signals[rank]} on process {rank}"


def coordination_exchange(
    client: Any, rank: int, *, name: str = STOP_NAME, timeout_s: float = STOP_TIMEOUT_S
) -> Exchange:
    """An :data:`Exchange` over jax's distributed runtime client (key-value store + barrier).

    Parameters
    ----------
    client : jaxlib DistributedRuntimeClient
        From :func:`tjx.parallel.runtime_client` (set by ``jax.distributed.initialize``); any
        object with ``key_value_set``, ``wait_at_barrier`` and ``key_value_dir_get`` (a fake in
        tests).
    rank : int
        This process's index.
    name : str
        The keys' folder (``<name>/<step>/<rank>``) and the barrier id; one per agreement.
    timeout_s : float
        How long to wait at the barrier for the other processes.

    Returns
    -------
    Exchange
        Raises :class:`RuntimeError` naming the step when the barrier times out.
    """
    timeout_ms = max(1, int(timeout_s * 1000))

    def exchange(step: int, local: str | None) -> dict[int, str]:
        if local is not None:
            # Overwrite: harmless if this boundary were ever asked twice.
            client.key_value_set(f"{name}/{step}/{rank}", local, True)
        try:
            client.wait_at_barrier(name, timeout_ms)
        except Exception as err:  # jax's runtime error type; name the step and the cause
            raise RuntimeError(
                f"stop agreement at step {step}: not every process reached the step boundary "
                f"within {timeout_s:g} s (process {rank}): {err}"
            ) from err
        entries = client.key_value_dir_get(f"{name}/{step}/")
        return {int(key.rstrip("/").rsplit("/", 1)[-1]): value for key, value in entries}

    return exchange


def stop_agreement(name: str = STOP_NAME) -> StopAgreement:
    """The agreement for the current run: local-only for one process, else over ``jax.distributed``.

    Parameters
    ----------
    name : str
        The keys' folder and barrier id in the coordination service (one per agreement).

    Returns
    -------
    StopAgreement

    Raises
    ------
    RuntimeError
        Several processes but ``jax.distributed`` was not initialised.
    """
    import jax

    if jax.process_count() == 1:
        return StopAgreement()
    client, rank, _ = runtime_client("stop agreement")
    return StopAgreement(coordination_exchange(client, rank, name=name))


def digest_words(text: str) -> list[int]:
    """128 bits of sha256 of ``text`` as four int32 words (all-gathered as one small array).

    Parameters
    ----------
    text : str

    Returns
    -------
    list of int
        Four signed 32-bit integers; equal texts give equal words.
    """
    raw = hashlib.sha256(text.encode()).digest()[:16]
    return [int(w) for w in np.frombuffer(raw, dtype=np.int32)]


def process_values(values: Mapping[str, int | str]) -> dict[str, list[Any]]:
    """Every process's value of each named field, gathered in one tiny all-gather.

    Call it on every process with the same names in the same order, after joining (it is a
    collective). Integers arrive as they are, so an app can name what each process was told;
    strings (a whole config, a path) arrive as their 128-bit digests (:func:`digest_words`),
    enough to tell whether they are equal and which process differs.

    Parameters
    ----------
    values : mapping of str to int or str
        This process's fields; integers must fit in int32.

    Returns
    -------
    dict
        For each name, a list indexed by process: the ints, or a tuple of four digest words per
        string. One process: each list has its own value alone (no collective runs).

    Raises
    ------
    ValueError
        An integer outside int32 or a value of another type.
    """
    import jax
    from jax.experimental import multihost_utils

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
    if jax.process_count() == 1:
        rows = mine[None]
    else:
        rows = np.asarray(multihost_utils.process_allgather(mine))  # [process_count, fields]
    out: dict[str, list[Any]] = {}
    for key, (lo, hi, is_text) in spans.items():
        column = rows[:, lo:hi]
        if is_text:
            out[key] = [tuple(int(w) for w in r) for r in column]
        else:
            out[key] = [int(r[0]) for r in column]
    return out


@dataclass(frozen=True)
class Disagreement:
    """A named value that the processes do not all hold alike (from :func:`disagreements`).

    Attributes
    ----------
    name : str
        The value's name, as given to :func:`disagreements`.
    values : tuple
        Each process's value, by process index: the int, or a string's four digest words.
    expected : int, str or None
        What every process had to hold, when the caller said; else process 0's value is the
        reference (jax itself takes process 0's word on the run's shape).
    """

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
        """One line about this disagreement, in the caller's words.

        Parameters
        ----------
        template : str, optional
            A format string with any of the fields ``{name}``, ``{expected}``, ``{each}``
            (:meth:`each`) and ``{differ}`` (:attr:`differ`); ``None`` gives ``str(self)``.

        Returns
        -------
        str

        Examples
        --------
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


def disagreements(
    values: Mapping[str, int | str], *, expected: Mapping[str, int | str] | None = None
) -> list[Disagreement]:
    """The named values that not every process holds alike: what differs, and on which process.

    A collective (one tiny all-gather, :func:`process_values`): call it on every process, after
    joining, with the same names in the same order. Every process gets the same answer, so an app
    that refuses the run on a non-empty list refuses it everywhere at once.

    Parameters
    ----------
    values : mapping of str to int or str
        This process's values (what it was told: counts, flags, a whole config as text);
        integers must fit in int32, strings are compared by their 128-bit digests.
    expected : mapping of str to int or str, optional
        Values that every process must hold (``{"num_processes": jax.process_count()}``); a name
        not listed here must only be equal on all processes.

    Returns
    -------
    list of Disagreement
        In the order of ``values``; empty when the processes agree. One process agrees with
        itself unless it differs from ``expected`` (no collective runs).

    Raises
    ------
    ValueError
        ``expected`` names a value not in ``values``, or a value cannot be sent
        (:func:`process_values`).

    Examples
    --------
    >>> disagreements({"steps": 10, "config": "lr: 0.1"})  # one process
    []
    >>> [str(d) for d in disagreements({"num_processes": 2}, expected={"num_processes": 1})]
    ['num_processes: expected 1, but process 0: 2']
    """
    expected = dict(expected or {})
    unknown = sorted(set(expected) - set(values))
    if unknown:
        raise ValueError(f"disagreements: expected names no value of this process: {unknown}")
    found = []
    for name, told in process_values(values).items():
        found.append(Disagreement(name, tuple(told), expected.get(name)))
    return [d for d in found if d.differ]
