"""keep-N and best-K on object stores, where tjx-ckpt deletes old steps itself.

On a local disk orbax deletes an old step by renaming it into ``_deleted/`` (atomic) and
removing it there. An object store has no rename (orbax would copy the whole step, object by
object) and orbax's plain recursive delete removes objects in any order, so a crash in the
middle could leave a step that still has its commit marker and lacks arrays. On a store the
manager therefore tells orbax to keep every step and removes the old ones itself, once the new
one is committed, marker first (`tjx.ckpt.objects.remove_step`), with the same rule as orbax's
policies: keep the newest ``keep_last`` and the ``keep_best`` best by the metric; steps without
the metric are kept only among the newest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from tjx.ckpt.objects import read_bytes, remove_step

#: Where a step records the metrics given to ``save`` (the tjx manifest item).
MANIFEST_FILE = "manifest/metadata"


def steps_to_remove(
    steps: Sequence[int],
    *,
    keep_last: int | None,
    keep_best: int | None,
    metric_of: Callable[[int], float | None],
    best_mode: str = "min",
) -> list[int]:
    """The committed ``steps`` that keep-N and best-K let go, oldest first.

    Parameters
    ----------
    steps:
        Committed steps, any order.
    keep_last:
        Keep the newest this many (None: keep every step).
    keep_best:
        Also keep this many best by ``metric_of`` (None: off). A step whose metric is None or
        not finite is not ranked.
    metric_of:
        The step's metric (called only with ``keep_best``).
    best_mode:
        ``"min"`` or ``"max"``.
    """
    if keep_last is None:
        return []
    ordered = sorted(steps)
    keep = set(ordered[-keep_last:])
    if keep_best is not None:
        ranked = [
            (value, step)
            for step in ordered
            if (value := metric_of(step)) is not None and math.isfinite(value)
        ]
        ranked.sort(key=lambda vs: vs[0], reverse=best_mode == "max")
        keep.update(step for _, step in ranked[:keep_best])
    return [step for step in ordered if step not in keep]


def saved_metric(step_dir: Any, metric: str) -> float | None:
    """``metric`` as recorded in a step's tjx manifest, or None (missing, unreadable)."""
    try:
        manifest = json.loads(read_bytes(f"{str(step_dir).rstrip('/')}/{MANIFEST_FILE}"))
        value = (manifest.get("metrics") or {}).get(metric)
        return None if value is None else float(value)
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def prune(
    directory: Any,
    steps: Sequence[int],
    *,
    keep_last: int | None,
    keep_best: int | None,
    best_metric: str | None,
    best_mode: str,
    known: dict[int, float | None],
) -> list[int]:
    """Delete (marker first) the committed ``steps`` of ``directory`` that keep-N / best-K let
    go; returns them. ``known``: the metric of steps saved by this process (filled from the
    steps' manifests for the others, one read each, remembered there)."""
    metric = str(best_metric)

    def metric_of(step: int) -> float | None:
        if step not in known:
            known[step] = saved_metric(f"{str(directory).rstrip('/')}/{step}", metric)
        return known[step]

    gone = steps_to_remove(
        steps, keep_last=keep_last, keep_best=keep_best, metric_of=metric_of, best_mode=best_mode
    )
    for step in gone:
        remove_step(f"{str(directory).rstrip('/')}/{step}")
    return gone


__all__ = ["MANIFEST_FILE", "prune", "saved_metric", "steps_to_remove"]
