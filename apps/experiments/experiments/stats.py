"""Seeds and error bars: a config's seed rows folded into one row of means ± standard deviations,
and the rule every study's text follows — a difference smaller than the combined noise of the two
configs is "no measurable difference", never a ranking.

The noise of one config is the sample standard deviation of its seeds (ddof 1). Two configs
differ measurably when their means differ by more than ``sqrt(std_a² + std_b²)``, the standard
deviation of the difference of one run of each: a deliberately cautious yardstick with 3 seeds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeGuard

from experiments.spec import Row

#: Row keys that are not measurements (never averaged).
NOT_MEASURED = frozenset({"label", "group", "seed", "load", "measured_at", "machine", "status"})
#: Per-seed step numbers of a failure: the aggregate keeps the earliest and counts the seeds.
FIRST_OF = ("diverged_at", "blew_up_at")
NO_DIFFERENCE = "no measurable difference"


def _number(x: object) -> TypeGuard[int | float]:
    return isinstance(x, int | float) and not isinstance(x, bool)


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample standard deviation, n) of the finite ``values``; (nan, nan, 0) if none.

    One value has a standard deviation of 0 (no spread measured).
    """
    xs = [float(v) for v in values if math.isfinite(float(v))]
    if not xs:
        return math.nan, math.nan, 0
    return statistics.fmean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0, len(xs)


def aggregate(seed_rows: list[Row]) -> Row:
    """One row for a config from its seeds' rows.

    Every numeric key becomes the mean over the seeds where it is finite, with ``<key>_std`` and,
    where fewer seeds have it, ``<key>_n``; the failure steps (`FIRST_OF`) keep the earliest and
    count the seeds in ``<key>_seeds``; ``seeds`` counts them all and ``per_seed`` keeps the rows.
    """
    if not seed_rows:
        raise ValueError("aggregate needs at least one seed row")
    first = seed_rows[0]
    out: Row = {k: v for k, v in first.items() if not _number(v) or k in NOT_MEASURED}
    n = len(seed_rows)
    keys = dict.fromkeys(k for r in seed_rows for k in r)
    for key in keys:
        if key in NOT_MEASURED:
            continue
        values = [r.get(key) for r in seed_rows]
        if key in FIRST_OF:
            hits = [int(v) for v in values if _number(v)]
            out[key] = min(hits) if hits else None
            out[f"{key}_seeds"] = len(hits)
            continue
        nums = [float(v) for v in values if _number(v)]
        if not nums:
            continue
        mean, std, got = mean_std(nums)
        out[key] = mean if got else math.nan
        out[f"{key}_std"] = std
        if got < n:
            out[f"{key}_n"] = got
    diverged = out.get("diverged_at_seeds", 0)
    out["status"] = (
        f"diverged in {diverged}/{n} seeds (first at step {out['diverged_at']})"
        if diverged
        else "finished"
    )
    out["seeds"] = n
    out["per_seed"] = seed_rows
    return out


def noise(a: Row, b: Row, key: str) -> float:
    """The combined noise of two rows' ``key``: ``sqrt(std_a² + std_b²)`` (0 where unmeasured)."""
    sa, sb = float(a.get(f"{key}_std") or 0.0), float(b.get(f"{key}_std") or 0.0)
    return math.hypot(sa, sb)


@dataclass(frozen=True)
class Difference:
    """``a − b`` in ``key`` against the combined noise."""

    diff: float
    noise: float

    @property
    def measurable(self) -> bool:
        """True when the difference exceeds the noise (and both are finite)."""
        return math.isfinite(self.diff) and abs(self.diff) > self.noise

    def words(self, fmt: str = ".4f", unit: str = "") -> str:
        """``+0.0123 ± 0.0040`` (then `` nats`` for ``unit="nats"``) followed by
        ``, no measurable difference`` when within noise."""
        text = f"{self.diff:+{fmt}} ± {self.noise:{fmt}}" + (f" {unit}" if unit else "")
        return text if self.measurable else f"{text}, {NO_DIFFERENCE}"


def difference(a: Row, b: Row, key: str) -> Difference:
    """``a[key] − b[key]`` and its combined noise (nan when either value is missing)."""
    va, vb = a.get(key), b.get(key)
    if _number(va) and _number(vb):
        return Difference(float(va) - float(vb), noise(a, b, key))
    return Difference(math.nan, math.nan)


def value_text(row: Row, key: str, fmt: str = ".4f") -> str:
    """``2.1247 ± 0.0123`` (``—`` when the row has no finite value)."""
    v = row.get(key)
    if _number(v) and math.isfinite(float(v)):
        std = row.get(f"{key}_std")
        return f"{v:{fmt}} ± {std:{fmt}}" if _number(std) else f"{v:{fmt}}"
    return "—"


def ranking(rows: list[Row], key: str, fmt: str = ".4f") -> str:
    """The rows by ascending ``key``: ``a 1.0 ± 0.1 < b 2.0 ± 0.1 ≈ c 2.1 ± 0.1``.

    ``<`` marks a measurable step up from the row before, ``≈`` one within the combined noise
    (no measurable difference); rows without a finite value are left out.
    """
    shown = [r for r in rows if _number(r.get(key)) and math.isfinite(float(r[key]))]
    shown.sort(key=lambda r: float(r[key]))
    parts: list[str] = []
    for i, r in enumerate(shown):
        if i:
            parts.append("<" if difference(r, shown[i - 1], key).measurable else "≈")
        parts.append(f"{r['label']} {value_text(r, key, fmt)}")
    return " ".join(parts)


def tied_with_best(rows: list[Row], key: str) -> list[Row]:
    """The rows whose ``key`` is not measurably above the lowest one's (the best included)."""
    shown = [r for r in rows if _number(r.get(key)) and math.isfinite(float(r[key]))]
    if not shown:
        return []
    top = min(shown, key=lambda r: float(r[key]))
    return [r for r in shown if r is top or not difference(r, top, key).measurable]
