"""Sweeps that bracket their optimum: a swept value whose best point lies at an edge of the sweep
is extended past that edge, one factor at a time, until the best lies inside — or the point past
the edge diverged (which brackets it too: nothing better lies that way), or the extensions ran
out, which the report then says.

A study with a `Sweep` marks its swept configs by ``RunSpec.group`` (one sweep per group, e.g.
one optimizer) and ``RunSpec.param(sweep.param)`` (the swept value); `Sweep.make` builds the
config of a new value from one of the group's.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from experiments.spec import Row, RunSpec, Sweep


def _score(row: Row, metric: str) -> float:
    """The row's metric, +inf when missing or not finite (a diverged point is the worst)."""
    v = row.get(metric)
    return float(v) if isinstance(v, int | float) and math.isfinite(float(v)) else math.inf


def points(rows: list[Row], specs: list[RunSpec], sweep: Sweep) -> list[tuple[float, Row]]:
    """(value, row) of one group's configs, sorted by value."""
    values = {s.label: float(s.param(sweep.param)) for s in specs}
    return sorted(((values[r["label"]], r) for r in rows), key=lambda p: p[0])


def next_value(pts: list[tuple[float, Row]], sweep: Sweep) -> float | None:
    """The value to run next: past the edge where the best point lies, or None when the best is
    inside (or every point failed: no best to bracket)."""
    if not pts:
        return None
    scores = [_score(r, sweep.metric) for _, r in pts]
    if all(math.isinf(s) for s in scores):
        return None
    best = scores.index(min(scores))
    if len(pts) > 1 and 0 < best < len(pts) - 1:
        return None
    if best == len(pts) - 1:
        return pts[-1][0] * sweep.factor
    return pts[0][0] / sweep.factor


def bracket_note(group: str, pts: list[tuple[float, Row]], extended: int, sweep: Sweep) -> str:
    """One sentence: where the group's best value lies and why the sweep stopped."""
    if not pts:
        return f"{group}: no points."
    scores = [_score(r, sweep.metric) for _, r in pts]
    span = f"{pts[0][0]:g} … {pts[-1][0]:g}"
    grown = f", extended {extended}× past its first edge" if extended else ""
    if all(math.isinf(s) for s in scores):
        return f"{group}: every point of {span} failed; nothing to bracket."
    i = scores.index(min(scores))
    best = f"{group}: best {sweep.param} {pts[i][0]:g} of {span}{grown}"
    if 0 < i < len(pts) - 1:
        beyond = [j for j in (i - 1, i + 1) if math.isinf(scores[j])]
        why = " (the point past it diverged)" if beyond else ""
        return f"{best}: inside the sweep{why}."
    return (
        f"{best}: still at the edge after {extended} extensions — not bracketed, the optimum "
        "may lie further out."
    )


def extend(
    specs: list[RunSpec],
    rows_of: Callable[[list[RunSpec]], list[Row]],
    sweep: Sweep,
    limit: int | None = None,
) -> tuple[list[RunSpec], list[str]]:
    """Run the sweep (through ``rows_of``: the runner's aggregated rows of the given specs) and
    extend every group until its best is bracketed, at most ``limit`` times (default
    ``sweep.max_extensions``); returns (all specs, one note per group)."""
    limit = sweep.max_extensions if limit is None else limit
    groups: dict[str, list[RunSpec]] = {}
    for s in specs:
        groups.setdefault(s.group, []).append(s)
    notes = []
    for group, mine in groups.items():
        extended = 0
        while True:
            pts = points(rows_of(mine), mine, sweep)
            value = next_value(pts, sweep)
            if value is None or extended >= limit:
                break
            mine.append(sweep.make(mine[0], value))
            extended += 1
        notes.append(bracket_note(group, pts, extended, sweep))
    return [s for g in groups.values() for s in g], notes
