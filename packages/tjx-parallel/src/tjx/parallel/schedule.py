"""Pipeline schedules as static tables: which microbatch each stage runs forward or backward at
each tick.

A tick is one unit of work on one stage: the forward of one microbatch through the stage's
layers, or its backward (recompute + vector-Jacobian product), counted as equal units as in the
GPipe and PipeDream papers' pictures. Activations and cotangents sent at the end of a tick are
usable from the next tick on. The tables are built by a small event simulation of each stage's op
order under those dependencies, so the same engine runs every schedule, and the idle slots of the
table are exactly the bubble the compiled program executes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = [
    "BACKWARD",
    "FORWARD",
    "IDLE",
    "SCHEDULES",
    "Schedule",
    "bubble_formula",
    "forward_schedule",
    "make_schedule",
]

#: Schedule names: ``gpipe`` (fill-drain: all forwards, then all backwards) and ``1f1b`` (one
#: forward, one backward: after a warm-up of ``stages - 1 - s`` forwards, stage ``s`` alternates).
SCHEDULES: tuple[str, ...] = ("gpipe", "1f1b")

IDLE, FORWARD, BACKWARD = 0, 1, 2


@dataclasses.dataclass(frozen=True, eq=False)
class Schedule:
    """A pipeline schedule over ``ticks`` time units.

    Attributes
    ----------
    name : str
        One of :data:`SCHEDULES`.
    stages, microbatches : int
        ``S`` and ``M``.
    ops : np.ndarray
        int32 ``[ticks, S]``: :data:`IDLE`, :data:`FORWARD` or :data:`BACKWARD`.
    mb : np.ndarray
        int32 ``[ticks, S]``: the microbatch of that op (0 when idle).
    recv_fwd, recv_bwd : np.ndarray
        int32 ``[ticks, S]``: the microbatch whose activation (from stage ``s-1``) or cotangent
        (from stage ``s+1``) stage ``s`` receives at the end of the tick, or -1.
    slots : int
        Buffer slots per stage: the most microbatches a stage ever holds between receiving an
        activation and finishing its backward (``M`` for GPipe, ``S`` for 1F1B). Microbatch
        ``i`` lives in slot ``i % slots``.
    """

    name: str
    stages: int
    microbatches: int
    ops: np.ndarray
    mb: np.ndarray
    recv_fwd: np.ndarray
    recv_bwd: np.ndarray
    slots: int

    @property
    def ticks(self) -> int:
        """Number of time units of the whole step."""
        return int(self.ops.shape[0])

    def bubble_fraction(self) -> float:
        """Idle share of all (tick, stage) slots."""
        return float(np.mean(self.ops == IDLE))


def bubble_formula(stages: int, microbatches: int) -> float:
    """The textbook pipeline bubble ``(S - 1) / (M + S - 1)``.

    Parameters
    ----------
    stages, microbatches : int
        ``S`` and ``M``.

    Returns
    -------
    float
    """
    return (stages - 1) / (microbatches + stages - 1)


def _op_order(name: str, stages: int, microbatches: int) -> list[list[tuple[int, int]]]:
    """Each stage's ops in the order it runs them, as ``(kind, microbatch)``."""
    orders = []
    for s in range(stages):
        if name == "gpipe":
            order = [(FORWARD, i) for i in range(microbatches)]
            order += [(BACKWARD, i) for i in range(microbatches)]
        else:
            warm = min(stages - 1 - s, microbatches)
            order = [(FORWARD, i) for i in range(warm)]
            for j in range(microbatches - warm):
                order += [(FORWARD, warm + j), (BACKWARD, j)]
            order += [(BACKWARD, j) for j in range(microbatches - warm, microbatches)]
        orders.append(order)
    return orders


def make_schedule(name: str, stages: int, microbatches: int) -> Schedule:
    """Build the tick table of a schedule.

    Parameters
    ----------
    name : str
        ``"gpipe"`` or ``"1f1b"``.
    stages : int
        Pipeline stages ``S >= 1``.
    microbatches : int
        Microbatches ``M >= 1`` per step.

    Returns
    -------
    Schedule

    Raises
    ------
    ValueError
        Unknown name or non-positive sizes.
    """
    if name not in SCHEDULES:
        raise ValueError(f"pipeline schedule must be one of {SCHEDULES}; got {name!r}")
    if stages < 1 or microbatches < 1:
        raise ValueError(f"stages ({stages}) and microbatches ({microbatches}) must be >= 1")
    orders = _op_order(name, stages, microbatches)
    done: dict[tuple[int, int, int], int] = {}  # (kind, mb, stage) -> tick it ran
    pos = [0] * stages
    rows: list[list[tuple[int, int]]] = []
    t = 0
    while any(p < len(o) for p, o in zip(pos, orders, strict=True)):
        row = []
        for s in range(stages):
            if pos[s] == len(orders[s]):
                row.append((IDLE, 0))
                continue
            kind, i = orders[s][pos[s]]
            if kind == FORWARD:
                dep = (FORWARD, i, s - 1) if s > 0 else None
            else:
                dep = (BACKWARD, i, s + 1) if s < stages - 1 else (FORWARD, i, s)
            if dep is None or done.get(dep, t) < t:
                row.append((kind, i))
                pos[s] += 1
            else:
                row.append((IDLE, 0))
        for s, (kind, i) in enumerate(row):
            if kind != IDLE:
                done[(kind, i, s)] = t
        rows.append(row)
        t += 1
    table = np.asarray(rows, dtype=np.int32)  # [ticks, S, 2]
    ops, mb = table[..., 0], table[..., 1]
    recv_fwd = np.full_like(ops, -1)
    recv_bwd = np.full_like(ops, -1)
    recv_fwd[:, 1:] = np.where(ops[:, :-1] == FORWARD, mb[:, :-1], -1)
    recv_bwd[:, :-1] = np.where(ops[:, 1:] == BACKWARD, mb[:, 1:], -1)
    slots = _slots(ops, mb, recv_fwd, recv_bwd, stages)
    return Schedule(name, stages, microbatches, ops, mb, recv_fwd, recv_bwd, slots)


def _slots(
    ops: np.ndarray, mb: np.ndarray, recv_fwd: np.ndarray, recv_bwd: np.ndarray, stages: int
) -> int:
    """The most microbatches any stage holds at once in either buffer: activations (received,
    backward not yet run) and cotangents (received, backward not yet run).

    Microbatches run in order on every stage, so the held ones are consecutive and ``i % slots``
    never collides.
    """
    most = 1
    for s in range(stages):
        acts: set[int] = set()
        cots: set[int] = set()
        for t in range(ops.shape[0]):
            if ops[t, s] == BACKWARD:
                acts.discard(int(mb[t, s]))
                cots.discard(int(mb[t, s]))
            if recv_fwd[t, s] >= 0:
                acts.add(int(recv_fwd[t, s]))
            if recv_bwd[t, s] >= 0:
                cots.add(int(recv_bwd[t, s]))
            most = max(most, len(acts), len(cots))
    return most


def forward_schedule(stages: int, microbatches: int) -> Schedule:
    """Forwards only (evaluation, or a loss without gradients): stage ``s`` runs microbatch ``i``
    at tick ``i + s``, ``M + S - 1`` ticks; one buffer slot (an activation is used the tick after
    it arrives)."""
    ticks = microbatches + stages - 1
    t = np.arange(ticks)[:, None]
    i = t - np.arange(stages)[None, :]
    busy = (i >= 0) & (i < microbatches)
    ops = np.where(busy, FORWARD, IDLE).astype(np.int32)
    mb = np.where(busy, i, 0).astype(np.int32)
    recv_fwd = np.full_like(ops, -1)
    recv_fwd[:, 1:] = np.where(busy[:, :-1], mb[:, :-1], -1)
    recv_bwd = np.full_like(ops, -1)
    return Schedule("forward", stages, microbatches, ops, mb, recv_fwd, recv_bwd, 1)
