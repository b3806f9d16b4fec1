"""Batches of a weighted mixture of prepared sources: `MixtureLoader` (training, resumable on any
process count at the same global batch) and `mixture_validation_batches` (each source's own
held-out split, for ``val_loss/<name>``).

Each global batch's rows get their sources from `tjx.data.mixture.MixtureRule`; a row of source
``i`` whose number within that source is ``c`` reads window ``order_i(e)[c mod W_i]`` of epoch
``e = c // W_i``, where ``order_i(e) = default_rng([seed, i, e]).permutation(W_i)`` (the source's
windows, cut as in :mod:`tjx.data.packing`). Process ``p`` builds rows ``[p * b, (p + 1) * b)``
of each global batch; every process computes the same assignment.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.errors import DataError
from tjx.data.loader import validation_batches
from tjx.data.mixture import MixtureRule
from tjx.data.packing import IGNORE_INDEX, PackingPlan, TokenStream, differs, make_batch
from tjx.data.shards import ShardIndex, load_index

__all__ = ["STATE_KIND", "MixtureLoader", "mixture_validation_batches"]

Batch = dict[str, np.ndarray]
STATE_KIND = "mixture"


class MixtureLoader:
    """Endless (or, with ``"drop"``, until every source has given one epoch) mixture batches.

    Parameters
    ----------
    sources : sequence of (name, shard_dir, weight)
        The prepared sources (a split folder or a ``pretokenize`` out_dir each).
    seq_len, batch_size : int
        Row length and rows per process per step (the global batch is
        ``batch_size * process_count``).
    seed : int
        Seed of every source's window order.
    process_index, process_count : int
        This process's share of each global batch.
    on_exhausted : str
        ``"repeat"`` (a source that has given every window starts another epoch) or ``"drop"``.
    split : str
        Split read from an out_dir.
    """

    def __init__(
        self,
        sources: Sequence[tuple[str, str | Path, float]],
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        process_index: int = 0,
        process_count: int = 1,
        on_exhausted: str = "repeat",
        split: str = "train",
    ) -> None:
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
        self.names = [name for name, _, _ in sources]
        self.indexes: list[ShardIndex] = [load_index(d, split) for _, d, _ in sources]
        eos = {index.eos_id for index in self.indexes}
        if len(eos) != 1:
            raise DataError(f"mixture sources were tokenized differently (EOS ids {sorted(eos)})")
        self.eos_id = eos.pop()
        self.streams = [TokenStream(list(index.open())) for index in self.indexes]
        windows = []
        for name, index in zip(self.names, self.indexes, strict=True):
            if index.tokens < seq_len + 1:  # a source's rows come one at a time: one must fit
                raise DataError(
                    f"mixture source {name!r}: too few tokens for one row ({index.tokens} "
                    f"tokens, a row needs seq_len + 1 = {seq_len + 1}); lower seq_len or give "
                    "it more data"
                )
            plan = PackingPlan(num_tokens=index.tokens, seq_len=seq_len, batch_size=1, seed=seed)
            windows.append(plan.num_windows)
        self.seq_len, self.batch_size, self.seed = seq_len, batch_size, seed
        self.process_index, self.process_count = process_index, process_count
        self.rule = MixtureRule(
            np.array([w for _, _, w in sources]), np.array(windows), on_exhausted
        )
        self.step = 0
        self._orders: dict[tuple[int, int], np.ndarray] = {}

    @property
    def total_rows(self) -> int | None:
        """Rows the mixture gives before it ends: every window of every source once with
        ``"drop"``; ``None`` (endless) with ``"repeat"``."""
        return int(self.rule.windows.sum()) if self.rule.on_exhausted == "drop" else None

    @property
    def global_batch(self) -> int:
        """Rows per step over all processes."""
        return self.batch_size * self.process_count

    def _window(self, source: int, cursor: np.ndarray) -> np.ndarray:
        windows = int(self.rule.windows[source])
        epochs, positions = np.divmod(cursor, windows)
        out = np.empty_like(cursor)
        for epoch in np.unique(epochs).tolist():
            key = (source, epoch)
            if key not in self._orders:
                if len(self._orders) > 4 * len(self.names):
                    self._orders.clear()  # memory stays flat over many epochs
                rng = np.random.default_rng([self.seed, source, epoch])
                self._orders[key] = rng.permutation(windows)
            mask = epochs == epoch
            out[mask] = self._orders[key][positions[mask]]
        return out

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        if self.rule.finished:
            raise StopIteration
        sources, cursors = self.rule.take(self.global_batch)
        self.step += 1
        lo = self.process_index * self.batch_size
        mine, mine_cursors = sources[lo : lo + self.batch_size], cursors[lo : lo + self.batch_size]
        rows = self.batch_size
        batch: Batch = {
            "inputs": np.zeros((rows, self.seq_len), np.int32),
            "targets": np.full((rows, self.seq_len), IGNORE_INDEX, np.int32),
            "segment_ids": np.zeros((rows, self.seq_len), np.int32),
            "positions": np.zeros((rows, self.seq_len), np.int32),
        }
        for source in np.unique(mine[mine >= 0]).tolist():
            at = np.flatnonzero(mine == source)
            part = make_batch(
                self.streams[source],
                self._window(source, mine_cursors[at]),
                self.seq_len,
                self.eos_id,
            )
            for key, value in batch.items():
                value[at] = part[key]
        batch["source"] = mine.astype(np.int32)  # -1: padding after every source was dropped
        return batch

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The global position (the rule's counts) and the settings it is only valid with."""
        return {
            "kind": STATE_KIND,
            "step": self.step,
            **self.rule.state(),
            "names": list(self.names),
            "weights": self.rule.weights.tolist(),
            "on_exhausted": self.rule.on_exhausted,
            "seq_len": self.seq_len,
            "seed": self.seed,
            "global_batch": self.global_batch,
            "fingerprints": [index.fingerprint for index in self.indexes],
            "digests": [index.digest for index in self.indexes],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (any process count with the same global batch).

        Raises
        ------
        DataError
            The state is not a mixture's or was made with other settings or sources.
        """
        if state.get("kind") != STATE_KIND:
            raise DataError("loader state is not a mixture's")
        mine = self.state_dict()
        keys = ("names", "weights", "on_exhausted", "seq_len", "seed", "global_batch",
                "fingerprints")  # fmt: skip
        wrong = [f"{k}: saved {state.get(k)!r}, now {mine[k]!r}" for k in keys
                 if state.get(k) != mine[k]]  # fmt: skip
        # A source's digest (tjx-data 0.21; a state or shards made before have none): a source
        # edited since the state was saved is another token stream, whatever its length.
        saved = state.get("digests") or [None] * len(self.names)
        wrong += [
            f"{name}: its source changed since the state was saved (its tokens' digest was "
            f"{old[:12]}..., now {new[:12]}...)"
            for name, old, new in zip(self.names, saved, mine["digests"], strict=False)
            if differs("digest", old, new)
        ]
        if wrong:
            raise DataError(
                f"mixture state does not match this mixture: {'; '.join(wrong)}; it would not "
                "continue the saved sequence of batches: resume with the sources and settings it "
                "was saved with"
            )
        self.rule.load(state)
        self.step = int(state["step"])


def mixture_validation_batches(
    sources: Sequence[tuple[str, str | Path]],
    seq_len: int,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    split: str = "validation",
) -> dict[str, Iterator[Batch]]:
    """Each source's own held-out batches, by name (for ``val_loss/<name>``)."""
    return {
        name: validation_batches(
            shard_dir,
            seq_len,
            batch_size,
            split=split,
            process_index=process_index,
            process_count=process_count,
        )
        for name, shard_dir in sources
    }
