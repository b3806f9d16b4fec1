"""Pure, vectorised packing: the window order of an epoch and the batches built from it.

The order, exactly
------------------
The token stream (documents, each followed by EOS; see :mod:`tjx.data.shards`) of ``N`` tokens is
cut into windows of ``seq_len + 1`` tokens with stride ``seq_len``: window ``k`` is
``stream[k*S : k*S + S + 1]``; its first ``S`` tokens are the inputs and its last ``S`` the
targets, so every stream token except the first is a target exactly once per epoch. There are
``(N - 1) // S`` full windows, plus one shorter, padded window when ``drop_last=False`` and
``(N - 1) % S > 0``.

Epoch ``e``'s window order is ``numpy.random.default_rng([seed, e]).permutation(W)`` (or
``arange(W)`` without shuffle). That order is cut into global batches of
``process_count * batch_size`` windows; process ``p`` takes windows
``[p * batch_size, (p + 1) * batch_size)`` of each global batch. ``drop_last=True`` drops the
final incomplete global batch (its windows are seen in other epochs, in other positions);
``drop_last=False`` pads it with empty rows (window ``-1``), so every token is used.

Segment ids count documents inside a row from 1 (a new segment starts after each EOS input);
positions restart at 0 with each segment; padding has segment id 0, position 0, input 0 and
target ``IGNORE_INDEX`` (-100).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tjx.data.errors import DataError

__all__ = [
    "IGNORE_INDEX",
    "PackingPlan",
    "TokenStream",
    "excluded",
    "make_batch",
    "random_batch",
    "resume_position",
    "segments_and_positions",
    "target_positions",
]

IGNORE_INDEX = -100


class TokenStream:
    """Shards seen as one array; ``gather`` reads many windows at once."""

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = arrays
        sizes = np.array([a.shape[0] for a in arrays], dtype=np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(sizes)])
        self.size = int(self.offsets[-1])
        self._views: dict[tuple[int, int], np.ndarray] = {}

    def _windows(self, shard: int, length: int) -> np.ndarray:
        """Read-only view ``[n - length + 1, length]`` of all windows of a shard (no copy)."""
        key = (shard, length)
        if key not in self._views:
            self._views[key] = sliding_window_view(self.arrays[shard], length)
        return self._views[key]

    def gather(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Tokens ``[starts[i], starts[i] + length)`` as int32 ``[len(starts), length]``.

        Positions past the end of the stream read as 0 (callers mask them). Rows inside one
        shard are read with one fancy index into a sliding-window view of the memmap (a
        contiguous copy per row, no per-token index arithmetic).
        """
        if len(self.arrays) == 1 and starts.size and int(starts.max()) + length <= self.size:
            return self._windows(0, length)[starts].astype(np.int32)  # the common fast path
        out = np.zeros((starts.shape[0], length), dtype=np.int32)
        shard_of = np.searchsorted(self.offsets, starts, side="right") - 1
        local = starts - self.offsets[shard_of]
        sizes = np.diff(self.offsets)
        inside = local + length <= sizes[shard_of]
        for shard in np.unique(shard_of[inside]).tolist():
            rows = np.flatnonzero(inside & (shard_of == shard))
            out[rows] = self._windows(shard, length)[local[rows]]
        for row in np.flatnonzero(~inside).tolist():  # across shards or past the end (rare)
            start = int(starts[row])
            stop = min(start + length, self.size)
            out[row, : stop - start] = self._read(start, stop)
        return out

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        for shard, array in enumerate(self.arrays):
            lo, hi = int(self.offsets[shard]), int(self.offsets[shard + 1])
            if lo < stop and start < hi:
                parts.append(array[max(start, lo) - lo : min(stop, hi) - lo])
        return np.concatenate(parts)


@dataclass(frozen=True)
class PackingPlan:
    """Which windows each process reads in each step of each epoch (see the module docstring)."""

    num_tokens: int
    seq_len: int
    batch_size: int
    seed: int
    shuffle: bool = True
    drop_last: bool = True
    process_index: int = 0
    process_count: int = 1

    def __post_init__(self) -> None:
        for name in ("seq_len", "batch_size", "process_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.process_index < self.process_count:
            raise ValueError(
                f"process_index must be in [0, {self.process_count}), got {self.process_index}"
            )
        if self.steps_per_epoch == 0:
            raise DataError(
                f"too little data: {self.num_tokens} tokens make {self.num_windows} window(s) of "
                f"seq_len+1={self.seq_len + 1}, fewer than one global batch of "
                f"{self.global_batch} (batch_size × process_count); use drop_last=False, a "
                "smaller batch or more data",
                argument="batch_size",
            )

    @property
    def num_windows(self) -> int:
        """Windows per epoch (the padded tail window included when ``drop_last=False``)."""
        full, rest = divmod(max(self.num_tokens - 1, 0), self.seq_len)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def global_batch(self) -> int:
        """Rows per step over all processes."""
        return self.batch_size * self.process_count

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch (the same on every process)."""
        if self.drop_last:
            return self.num_windows // self.global_batch
        return -(-self.num_windows // self.global_batch)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Window ids of this process, ``[steps_per_epoch, batch_size]``; -1 marks padding rows."""
        windows = self.num_windows
        if self.shuffle:
            order = np.random.default_rng([self.seed, epoch]).permutation(windows)
        else:
            order = np.arange(windows)
        total = self.steps_per_epoch * self.global_batch
        if total > windows:
            order = np.concatenate([order, np.full(total - windows, -1, dtype=order.dtype)])
        grid = order[:total].reshape(self.steps_per_epoch, self.process_count, self.batch_size)
        return np.ascontiguousarray(grid[:, self.process_index, :])

    def settings(self) -> dict[str, Any]:
        """The settings a loader's saved position is only valid with (for its ``state_dict``)."""
        return {
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
            "process_index": self.process_index,
            "process_count": self.process_count,
        }


#: What a loader state's data keys stand for, said where they differ (the settings' keys say it
#: themselves): a source whose text changed since the state was saved is a new token stream.
_MEANING = {
    "fingerprint": " (the tokenizer: another one reads other ids)",
    "tokens": " (the split's tokens: its source changed since the state was saved)",
    "digest": " (the split's token ids: its source changed since the state was saved, though "
    "not its token count)",
}
#: Keys that states and shards made before tjx-data 0.21 do not have (``None``): compared only
#: where both sides know them, so what those runs saved resumes as it did.
_KNOWN_SINCE_0_21 = ("digest",)


def differs(key: str, saved: Any, now: Any) -> bool:
    """Whether a loader state's ``key`` was ``saved`` otherwise than it is ``now`` (a key made
    in 0.21, such as ``digest``, only where both sides have it)."""
    if key in _KNOWN_SINCE_0_21 and (saved is None or now is None):
        return False
    return bool(saved != now)


def _shown(key: str, value: Any) -> str:
    # A digest is 64 hex digits: its first 12 tell two apart.
    return repr(value[:12] + "...") if key == "digest" and isinstance(value, str) else repr(value)


def resume_position(
    state: dict[str, Any],
    mine: dict[str, Any],
    must_match: Sequence[str],
    steps_per_epoch: int,
    name: str,
) -> tuple[int, int]:
    """The ``(epoch, step)`` a loader continues from, after checking a saved ``state``.

    Parameters
    ----------
    state:
        A loader's saved ``state_dict()``.
    mine:
        This loader's ``state_dict()`` (its ``"version"`` is the one it reads).
    must_match:
        The keys that must be equal in both (settings and data).
    steps_per_epoch:
        This loader's batches per epoch (the saved step must lie inside).
    name:
        The loader named in the errors (``"loader"``, ``"chat loader"``).

    Returns
    -------
    tuple[int, int]
        The saved epoch and step.

    Raises
    ------
    DataError
        Another version, a key of ``must_match`` that differs (the message names each
        difference), or a step outside the epoch: the loader would not continue the same
        sequence of batches.
    """
    if state.get("version") != mine["version"]:
        raise DataError(f"{name} state version {state.get('version')!r} is not supported")
    differ = [k for k in must_match if differs(k, state.get(k), mine[k])]
    if "digest" in differ and {"tokens", "sequences"} & set(differ):
        differ.remove("digest")  # the same change: said once
    wrong = [f"{k}: saved {_shown(k, state.get(k))}, now {_shown(k, mine[k])}{_MEANING.get(k, '')}"
             for k in differ]  # fmt: skip
    if wrong:
        raise DataError(
            f"{name} state does not match this loader: {'; '.join(wrong)}; it would not continue "
            "the saved sequence of batches: resume with the data and settings it was saved with"
        )
    step = int(state["step"])
    if not 0 <= step < steps_per_epoch:
        raise DataError(f"{name} state step {step} outside [0, {steps_per_epoch})")
    return int(state["epoch"]), step


@functools.lru_cache(maxsize=8)
def _arange(n: int) -> np.ndarray:
    out = np.arange(n, dtype=np.int32)
    out.flags.writeable = False
    return out


def segments_and_positions(inputs: np.ndarray, eos_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Segment ids (from 1 per row) and positions (from 0 per segment) of packed rows.

    A segment starts at column 0 and after every EOS input. Computed on the flat batch from the
    (few) segment starts with ``np.repeat``, which is ~3x faster than 2-D cumsum/accumulate.
    """
    rows, seq_len = inputs.shape
    n = rows * seq_len
    is_start = np.empty((rows, seq_len), dtype=bool)
    is_start[:, 0] = True
    np.equal(inputs[:, :-1], eos_id, out=is_start[:, 1:])
    starts = np.flatnonzero(is_start)  # flat indices; every row start is among them
    lengths = np.diff(starts, append=n)
    positions = _arange(n) - np.repeat(starts.astype(np.int32), lengths)
    first_of_row = np.searchsorted(starts, _arange(rows) * seq_len)
    segment_of_start = np.arange(1, starts.size + 1, dtype=np.int32)
    segment_of_start -= first_of_row[starts // seq_len].astype(np.int32)
    segment_ids = np.repeat(segment_of_start, lengths)
    return segment_ids.reshape(rows, seq_len), positions.reshape(rows, seq_len)


def target_positions(windows: np.ndarray, seq_len: int, stream_size: int) -> np.ndarray:
    """int64 ``[rows, seq_len]``: the stream position of each target of the rows of
    ``windows`` (window ``k``'s column ``t`` predicts ``stream[k * seq_len + t + 1]``); -1 where
    no target is (a padding row, past the stream's end)."""
    starts = np.asarray(windows, dtype=np.int64)[:, None] * seq_len
    where = starts + 1 + np.arange(seq_len, dtype=np.int64)[None, :]
    return np.where((np.asarray(windows)[:, None] >= 0) & (where < stream_size), where, -1)


def excluded(positions: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    """Whether each stream position lies in one of the sorted, disjoint ``[start, stop)``
    ``ranges`` (int64 ``[n, 2]``)."""
    if ranges.size == 0:
        return np.zeros(positions.shape, dtype=bool)
    i = np.searchsorted(ranges[:, 0], positions, side="right") - 1
    inside = positions < ranges[np.maximum(i, 0), 1]
    return (i >= 0) & inside & (positions >= 0)


def make_batch(
    stream: TokenStream,
    windows: np.ndarray,
    seq_len: int,
    eos_id: int,
    exclude: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Build one batch of int32 ``inputs``, ``targets``, ``segment_ids``, ``positions``.

    ``windows`` are window ids (-1 = padding row). Everything is whole-batch numpy.
    ``exclude``: sorted, disjoint ``[start, stop)`` stream ranges (whole documents,
    `tjx.data.documents.exclude_ranges`) whose tokens are never targets: their targets are
    ``IGNORE_INDEX``, everything else as without them (the windows, so a loader's position,
    are the same).
    """
    starts = np.maximum(windows, 0).astype(np.int64) * seq_len
    tokens = stream.gather(starts, seq_len + 1)
    inputs = np.ascontiguousarray(tokens[:, :-1])
    targets = np.ascontiguousarray(tokens[:, 1:])
    segment_ids, positions = segments_and_positions(inputs, eos_id)
    # A target exists at column t iff stream position start + t + 1 < N (and the row is real).
    limit = np.where(windows >= 0, stream.size - 1 - starts, 0)
    if np.any(limit < seq_len):
        valid = _arange(seq_len)[None, :] < limit[:, None]
        inputs[~valid] = 0
        targets[~valid] = IGNORE_INDEX
        segment_ids[~valid] = 0
        positions[~valid] = 0
    if exclude is not None and exclude.size:
        targets[excluded(target_positions(windows, seq_len, stream.size), exclude)] = IGNORE_INDEX
    return {
        "inputs": inputs,
        "targets": targets,
        "segment_ids": segment_ids,
        "positions": positions,
    }


def random_batch(
    batch_size: int, seq_len: int, vocab_size: int, *, seed: int = 0
) -> dict[str, np.ndarray]:
    """A batch in the loader's layout of uniform random tokens, one document per row (for
    benchmarks and memory measurements that need a step's shapes, not text)."""
    tokens = np.random.default_rng(seed).integers(
        0, vocab_size, (batch_size, seq_len + 1), dtype=np.int32
    )
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": np.ones((batch_size, seq_len), np.int32),
        "positions": np.broadcast_to(_arange(seq_len), (batch_size, seq_len)).copy(),
    }
