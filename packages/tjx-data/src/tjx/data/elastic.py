"""Resuming a loader from a checkpoint's state on any process of a run, on any process count
that keeps the global batch (elastic resume)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tjx.data.errors import DataError

__all__ = ["restore_loader_state"]


def restore_loader_state(loader: Any, state: Mapping[str, Any], *, process_index: int) -> None:
    """Continue ``loader`` (a `PackedLoader`, `ImageLoader` or one wrapped by
    `prefetch_to_device`) from a checkpoint's loader state, on any process of the run, with any
    process count that keeps the global batch.

    A checkpoint holds process 0's state (JSON items are written by the primary only). Every
    process steps in lockstep, so all are at the same (epoch, step) — a position in the global
    window order, which the process count only cuts into per-process slices
    (:mod:`tjx.data.packing`). So a run saved by N processes of ``B / N`` rows resumes on M
    processes of ``B / M`` rows at the same global batch: each takes the saved position with its
    own index, count and per-process batch (elastic resume). Another global batch would be
    another sequence of batches and fails, in one line.

    Raises
    ------
    DataError
        Another global batch (``batch_size × process_count``), or other settings or shards
        (``load_state_dict``).
    """
    state = dict(state)
    if "process_index" in state:
        mine = loader.state_dict()
        saved = int(state["batch_size"]) * int(state["process_count"])
        now = int(mine["batch_size"]) * int(mine["process_count"])
        if saved != now:
            raise DataError(
                f"loader state: the checkpoint's global batch is {saved} rows "
                f"({state['batch_size']} × {state['process_count']} processes), this run's is "
                f"{now} ({mine['batch_size']} × {mine['process_count']}); resume with the "
                "saved global batch size"
            )
        state.update(
            process_index=process_index,
            process_count=mine["process_count"],
            batch_size=mine["batch_size"],
        )
    loader.load_state_dict(state)
