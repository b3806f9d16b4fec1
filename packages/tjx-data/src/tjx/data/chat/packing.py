"""Whole sequences packed into rows: the truncation rule, best-fit packing, and the batch layout.

Truncation, exactly
-------------------
A sequence of ``n`` tokens gives ``n - 1`` training positions (inputs ``ids[:-1]``, targets
``ids[1:]``). One longer than a row (``n > seq_len + 1``) keeps its first ``seq_len + 1`` tokens:
the prompt and the start of the answer stay, the end of the answer is dropped (TRL's
``keep_start``). A chat sequence that keeps no trained target after that (a prompt longer than the
row) is dropped; a preference pair is dropped when either side keeps none. Both are counted
(`Truncation`), never skipped silently.

Packing, exactly
----------------
Chat sequences are never split across rows: best-fit decreasing puts each (longest first, ties in
file order) into the row with the least room that still holds it, else a new row. That is fixed
for a split and ``seq_len`` (no seed), typically within a few percent of no padding; the epochs
shuffle whole rows. Segments are isolated by the attention's segment ids, so which sequences
share a row changes no gradient. A preference pair takes two rows, chosen then rejected (rows
``2i`` and ``2i + 1`` of a batch), so any split of the batch into halves along rows keeps pairs
together.

Batch layout: ``inputs``, ``targets``, ``segment_ids`` (from 1 per row), ``positions`` (from 0
per segment), int32 ``[rows, seq_len]``; a target the model does not learn (a prompt token, a
user turn, padding) is ``IGNORE_INDEX``: the loss mask rides in the targets, so any objective
that skips ``-100`` scores only what the assistant wrote.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tjx.data.errors import DataError
from tjx.data.packing import IGNORE_INDEX, PackingPlan

__all__ = ["RowPlan", "Truncation", "build_rows", "kept_lengths", "pack_rows"]


@dataclass(frozen=True)
class Truncation:
    """What the truncation rule did to a split for one ``seq_len``.

    Attributes
    ----------
    kept : np.ndarray
        int64 tokens kept of each sequence (0: dropped).
    truncated : int
        Sequences cut to ``seq_len + 1`` tokens (the dropped ones included).
    dropped : int
        Rows (conversations or pairs) dropped: no trained target left.
    rows : int
        Rows kept.
    """

    kept: np.ndarray
    truncated: int
    dropped: int
    rows: int


def kept_lengths(
    offsets: np.ndarray, mask: np.ndarray, seq_len: int, *, pairs: bool = False
) -> Truncation:
    """Apply the truncation rule (module docstring) to every sequence of a split.

    Parameters
    ----------
    offsets : np.ndarray
        int64 ``[sequences + 1]`` boundaries.
    mask : np.ndarray
        uint8 trained-token mask of the whole split.
    seq_len : int
        Positions per row.
    pairs : bool
        Sequences ``2i``, ``2i + 1`` are one preference pair (dropped together).
    """
    lengths = np.diff(offsets).astype(np.int64)
    kept = np.minimum(lengths, seq_len + 1)
    # Trained targets inside the kept part: mask[off + 1 : off + kept], summed per sequence.
    starts, ends = offsets[:-1] + 1, offsets[:-1] + kept
    bounds = np.stack([np.minimum(starts, ends), ends], axis=1).reshape(-1)
    padded = np.concatenate([np.asarray(mask, np.uint8), np.zeros(1, np.uint8)])
    sums = np.add.reduceat(padded, bounds, dtype=np.int64)[::2] if bounds.size else bounds
    trained = np.where(ends > starts, sums, 0)
    alive = trained > 0
    if pairs:
        both = alive.reshape(-1, 2).all(axis=1)
        alive = np.repeat(both, 2)
        dropped, rows = int((~both).sum()), int(both.sum())
    else:
        dropped, rows = int((~alive).sum()), int(alive.sum())
    truncated = int((lengths > seq_len + 1).sum())
    return Truncation(np.where(alive, kept, 0), truncated, dropped, rows)


def pack_rows(positions: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Best-fit decreasing packing of sequences of ``positions`` (each 1..seq_len; 0 = skip).

    Returns
    -------
    (order, starts)
        ``order``: sequence ids grouped by row; row ``r`` holds ``order[starts[r]:starts[r+1]]``.
    """
    ids = np.flatnonzero(positions > 0)
    ids = ids[np.argsort(-positions[ids], kind="stable")]  # longest first, ties in file order
    free = np.zeros(seq_len + 1, np.int64)  # rows with exactly c positions of room
    rows_with: list[list[int]] = [[] for _ in range(seq_len + 1)]
    members: list[list[int]] = []
    for seq in ids.tolist():
        need = int(positions[seq])
        room = np.flatnonzero(free[need:])
        if room.size:
            c = need + int(room[0])
            row = rows_with[c].pop()
            free[c] -= 1
        else:
            c, row = seq_len, len(members)
            members.append([])
        members[row].append(seq)
        left = c - need
        rows_with[left].append(row)
        free[left] += 1
    # Rows in the order they were opened; inside a row, the sequences in file order.
    order = [sorted(m) for m in members]
    starts = np.cumsum([0] + [len(m) for m in order]).astype(np.int64)
    flat = np.asarray([s for m in order for s in m], np.int64)
    return flat, starts


@dataclass(frozen=True)
class RowPlan(PackingPlan):
    """`PackingPlan`'s epoch order and process split over ``num_rows`` prepared rows (packed
    chat rows, or preference pairs) instead of token windows."""

    num_rows: int = 0

    @property
    def num_windows(self) -> int:
        """The rows of one epoch."""
        return self.num_rows

    def __post_init__(self) -> None:
        try:
            super().__post_init__()
        except DataError:
            raise DataError(
                f"too little data: {self.num_rows} packed row(s) or pair(s) of seq_len "
                f"{self.seq_len}, fewer than one global batch of {self.global_batch} (batch_size "
                "× process_count); use drop_last=False, a smaller batch or more data",
                argument="batch_size",
            ) from None


def build_rows(
    groups: list[list[tuple[np.ndarray, np.ndarray]]], seq_len: int
) -> dict[str, np.ndarray]:
    """The batch of rows, each a list of ``(ids, mask)`` sequences (already truncated).

    A sequence of ``k`` tokens fills ``k - 1`` positions; targets whose token is not trained are
    ``IGNORE_INDEX``; padding has segment 0, position 0, input 0.
    """
    n = len(groups)
    inputs = np.zeros((n, seq_len), np.int32)
    targets = np.full((n, seq_len), IGNORE_INDEX, np.int32)
    segments = np.zeros((n, seq_len), np.int32)
    positions = np.zeros((n, seq_len), np.int32)
    for r, group in enumerate(groups):
        col = 0
        for j, (stored, mask) in enumerate(group):
            ids = np.asarray(stored, np.int32)  # uint16 would wrap IGNORE_INDEX
            k = ids.shape[0] - 1
            if col + k > seq_len:
                raise ValueError(f"row {r} overflows seq_len {seq_len}")  # a packing bug
            inputs[r, col : col + k] = ids[:-1]
            targets[r, col : col + k] = np.where(mask[1:] != 0, ids[1:], IGNORE_INDEX)
            segments[r, col : col + k] = j + 1
            positions[r, col : col + k] = np.arange(k, dtype=np.int32)
            col += k
    return {"inputs": inputs, "targets": targets, "segment_ids": segments, "positions": positions}
