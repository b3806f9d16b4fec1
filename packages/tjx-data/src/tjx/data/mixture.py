"""Weighted mixtures of several prepared sources: the checked spec and the rule that says which
source each row of each global batch comes from.

The rule, exactly
-----------------
Rows are numbered globally (step ``s``, row ``j`` of a global batch of ``G``: ``s * G + j``) and
assigned one by one to the active source with the largest deficit ``p_i * (n + 1) - c_i``, where
``c_i`` counts the rows source ``i`` has given so far, ``n`` is the sum of the active sources'
counts and ``p_i`` their weights normalised over the active sources (ties: the first source).
So after any number of rows every active source is within one row of its share (the realised
shares match the weights), and the whole position is the count vector: a run resumes, on any
process count, from the counts alone (`MixtureRule.state`). Each source reads its windows in its
own shuffled order, epoch after epoch; a source that has given one epoch is either re-epoched
(``"repeat"``) or dropped from the rule (``"drop"``, the others' weights renormalised).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.errors import DataError

__all__ = ["ON_EXHAUSTED", "MixturePart", "MixtureRule", "MixtureSource", "check_mixture"]

#: What happens to a source that has given every window once.
ON_EXHAUSTED = ("repeat", "drop")


@dataclass(frozen=True)
class MixtureSource:
    """One source of a mixture: its name (``val_loss/<name>``), what to prepare and its weight,
    and the field of its rows that holds the text where it is not the run's (``None``)."""

    name: str
    source: str
    weight: float
    text_field: str | None = None


@dataclass(frozen=True)
class MixturePart:
    """One prepared source of a run's mixture: where its two splits' shards are.

    ``bytes_per_token`` is its validation split's (bits/byte of its ``val_loss/<name>``).
    """

    name: str
    source: str
    weight: float
    train_dir: Path
    val_dir: Path
    bytes_per_token: float | None

    def describe(self) -> dict[str, Any]:
        """The part as JSON (``data.json``'s ``mixture`` list)."""
        return {**asdict(self), "train_dir": str(self.train_dir), "val_dir": str(self.val_dir)}

    @classmethod
    def from_description(cls, info: Mapping[str, Any]) -> MixturePart:
        """The part `describe` wrote."""
        bpt = info.get("bytes_per_token")
        return cls(
            str(info["name"]),
            str(info["source"]),
            float(info["weight"]),
            Path(info["train_dir"]),
            Path(info["val_dir"]),
            None if bpt is None else float(bpt),
        )


def check_mixture(
    entries: Sequence[Mapping[str, object]], key: str = "sources"
) -> list[MixtureSource]:
    """The mixture ``entries`` (``{source, weight, name, text_field}`` each) as checked
    `MixtureSource`\\ s.

    ``name`` defaults to the source's last path part (``"./web/"`` → ``"web"``).

    Parameters
    ----------
    entries : sequence of mapping
        As written in a config.
    key : str
        The entries' name in messages (``"data.sources"``).

    Returns
    -------
    list of MixtureSource

    Raises
    ------
    DataError
        No entry, an entry without a source, a weight that is not a positive number, or a name
        used twice; one line naming the entry (``argument="sources"``).
    """
    if not entries:
        raise DataError(f"{key}: give at least one {{source, weight}} entry", argument="sources")
    out: list[MixtureSource] = []
    for i, entry in enumerate(entries):
        where = f"{key}[{i}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("source"), str):
            raise DataError(
                f"{where}: expected a mapping with a source (and weight, name), got {entry!r}",
                argument="sources",
            )
        unknown = sorted(set(entry) - {"source", "weight", "name", "text_field"})
        if unknown:
            raise DataError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed: source, weight, name, "
                "text_field",
                argument="sources",
            )
        field = entry.get("text_field")
        if field is not None and (not isinstance(field, str) or not field):
            raise DataError(
                f"{where}.text_field: must be a field's name, got {field!r}", argument="sources"
            )
        weight = entry.get("weight", 1.0)
        if (
            isinstance(weight, bool)
            or not isinstance(weight, int | float)
            or not math.isfinite(weight)
            or weight <= 0
        ):
            raise DataError(
                f"{where}.weight: must be a positive number, got {weight!r}", argument="sources"
            )
        source = str(entry["source"])
        name = entry.get("name") or source.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        out.append(MixtureSource(str(name), source, float(weight), field))
    seen: dict[str, int] = {}
    for i, item in enumerate(out):
        if item.name in seen:
            raise DataError(
                f"{key}[{i}].name: {item.name!r} is already the name of {key}[{seen[item.name]}]; "
                "give every source its own name",
                argument="sources",
            )
        seen[item.name] = i
    return out


class MixtureRule:
    """The row-by-row source assignment (see the module docstring); mutable position.

    Attributes
    ----------
    weights : numpy.ndarray
        One positive weight per source.
    windows : numpy.ndarray
        Windows per epoch of each source (a ``"drop"`` source stops after that many rows).
    on_exhausted : str
        ``"repeat"`` or ``"drop"``.
    counts : numpy.ndarray
        Rows each source has given so far (the position).
    active : numpy.ndarray
        Sources still in the rule.
    """

    def __init__(self, weights: Any, windows: Any, on_exhausted: str = "repeat") -> None:
        if on_exhausted not in ON_EXHAUSTED:
            raise ValueError(f"on_exhausted must be one of {ON_EXHAUSTED}, got {on_exhausted!r}")
        self.on_exhausted = on_exhausted
        self.weights: np.ndarray = np.asarray(weights, dtype=np.float64)
        self.windows: np.ndarray = np.asarray(windows, dtype=np.int64)
        self.counts: np.ndarray = np.zeros(len(self.weights), dtype=np.int64)
        self.active: np.ndarray = np.ones(len(self.weights), dtype=bool)

    @property
    def finished(self) -> bool:
        """Every source dropped: no row left."""
        return not bool(self.active.any())

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        """Assign the next ``rows`` rows; advances the position.

        Returns
        -------
        (numpy.ndarray, numpy.ndarray)
            Each row's source and its row number within that source (its count before the row);
            ``-1`` / ``-1`` for rows after every source was dropped.
        """
        sources = np.full(rows, -1, dtype=np.int64)
        cursors = np.full(rows, -1, dtype=np.int64)
        for j in range(rows):
            if self.finished:
                break
            p = np.where(self.active, self.weights, 0.0)
            p /= p.sum()
            n = int(self.counts[self.active].sum())
            deficit = np.where(self.active, p * (n + 1) - self.counts, -np.inf)
            i = int(np.argmax(deficit))
            sources[j], cursors[j] = i, self.counts[i]
            self.counts[i] += 1
            if self.on_exhausted == "drop" and self.counts[i] >= self.windows[i]:
                self.active[i] = False
        return sources, cursors

    def state(self) -> dict[str, list[int] | list[bool]]:
        """The position, JSON-serialisable."""
        return {"counts": self.counts.tolist(), "active": self.active.tolist()}

    def load(self, state: Mapping[str, Sequence[int] | Sequence[bool]]) -> None:
        """Continue from `state`."""
        counts = np.asarray(state["counts"], dtype=np.int64)
        if counts.shape != self.counts.shape:
            raise DataError(
                f"mixture state has {counts.size} sources, this mixture {self.counts.size}"
            )
        self.counts = counts
        self.active = np.asarray(state["active"], dtype=bool)
