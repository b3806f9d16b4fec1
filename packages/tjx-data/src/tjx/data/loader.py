"""``PackedLoader``: packed, shuffled, process-sharded, resumable batches from token shards."""

from __future__ import annotations

import abc
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.packing import (
    PackingPlan,
    TokenStream,
    make_batch,
    resume_position,
    target_positions,
)
from tjx.data.shards import ShardIndex, check_tokenizer, load_index
from tjx.data.tokenizers import Tokenizer

__all__ = ["SWITCH_AFTER", "PackedLoader", "PlannedLoader", "validation_batches"]

Batch = dict[str, np.ndarray]
STATE_VERSION = 1
#: Batches in a row that switch between building in ``__next__`` and the prefetch thread.
SWITCH_AFTER = 8
# A thread's gain must beat its cost per batch: a queue hand-off and a GIL switch (~10-30 µs).
_HANDOFF_S = 50e-6
_MUST_MATCH = ("seq_len", "batch_size", "seed", "shuffle", "drop_last", "process_index",
               "process_count", "fingerprint", "tokens", "digest")  # fmt: skip


def _advance(plan: PackingPlan, epoch: int, step: int) -> tuple[int, int]:
    step += 1
    return (epoch + 1, 0) if step == plan.steps_per_epoch else (epoch, step)


def _put(out: queue.Queue[Any], stop: threading.Event, item: Any) -> None:
    while not stop.is_set():
        try:
            out.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def _produce(
    plan: PackingPlan,
    stream: TokenStream,
    eos_id: int,
    exclude: np.ndarray | None,
    num_epochs: int | None,
    epoch: int,
    step: int,
    out: queue.Queue[Any],
    stop: threading.Event,
) -> None:
    """Prefetch thread body: build batches from (epoch, step) on, with the position after each."""
    try:
        order, order_epoch = None, -1
        while not stop.is_set() and (num_epochs is None or epoch < num_epochs):
            if order is None or order_epoch != epoch:
                order, order_epoch = plan.epoch_order(epoch), epoch
            start = time.perf_counter()
            batch = make_batch(stream, order[step], plan.seq_len, eos_id, exclude)
            build_s = time.perf_counter() - start
            epoch, step = _advance(plan, epoch, step)
            _put(out, stop, (batch, epoch, step, build_s))
        _put(out, stop, StopIteration)
    except BaseException as exc:  # hand errors to the consumer instead of dying silently
        _put(out, stop, exc)


class PlannedLoader(abc.ABC):
    """What `PackedLoader` and the chat loaders share: the facts of their `PackingPlan`, the
    order of the current epoch, the iterator protocol (a subclass sets ``plan``, ``_epoch``
    and ``_orders`` and defines ``__next__``)."""

    plan: PackingPlan
    _epoch: int
    _orders: dict[int, np.ndarray]

    @property
    def steps_per_epoch(self) -> int:
        """Batches per epoch, the same on every process."""
        return self.plan.steps_per_epoch

    @property
    def epoch(self) -> int:
        """Epoch of the next batch."""
        return self._epoch

    def epoch_order(self, epoch: int) -> np.ndarray:
        """This process's window (or row) ids for ``epoch``, ``[steps_per_epoch, batch_size]``
        (-1: padding)."""
        if epoch not in self._orders:
            self._orders = {epoch: self.plan.epoch_order(epoch)}  # keep one: memory stays flat
        return self._orders[epoch]

    def __iter__(self) -> Iterator[Batch]:
        return self

    @abc.abstractmethod
    def __next__(self) -> Batch:
        """The next batch (each loader makes its own kind)."""


class PackedLoader(PlannedLoader):
    """Iterator of packed batches ``{"inputs", "targets", "segment_ids", "positions"}``.

    Each value is int32 ``[batch_size, seq_len]`` (the per-process batch). The exact order,
    padding and segment conventions are in :mod:`tjx.data.packing`. Iteration runs epoch after
    epoch (``num_epochs=None``) or stops after ``num_epochs``.

    Parameters
    ----------
    shard_dir:
        A split folder with ``index.json``, or the ``out_dir`` of ``pretokenize`` (then
        ``shard_dir/split`` is read).
    seq_len, batch_size:
        Row length and rows per process per step.
    seed:
        Shuffle seed; epoch ``e`` uses ``default_rng([seed, e])``.
    shuffle:
        Shuffle windows each epoch (False: stream order).
    process_index, process_count:
        This host's share: disjoint from the others', all together the whole epoch.
    drop_last:
        Drop the incomplete last global batch and the short tail window (True), or pad them.
    split:
        Split read when ``shard_dir`` is an ``out_dir``.
    num_epochs:
        Stop after this many epochs; ``None`` = never stop.
    prefetch:
        Batches a background thread may build ahead (0 = always build in ``__next__``). The
        thread runs only while it pays: see Notes.
    tokenizer:
        A tokenizer or fingerprint the shards must have been made with (else ``DataError``).
    exclude:
        Sorted, disjoint ``[start, stop)`` stream ranges (int64 ``[n, 2]``: whole documents,
        `tjx.data.documents.exclude_ranges`) whose tokens are never targets. The batches are
        otherwise the same, so a loader state resumes with another ``exclude`` (a run goes on
        around documents found bad).

    Notes
    -----
    ``state_dict()`` describes the batches handed out by ``__next__`` (not those prefetched), so
    a loader restored with ``load_state_dict`` yields exactly the batches an uninterrupted run
    would have yielded next.

    A thread only helps when the consumer is away long enough for a batch to be built meanwhile
    (a device step); a consumer that asks again at once only pays the hand-off and the GIL
    contention (measured: half the throughput of building in ``__next__``). So with
    ``prefetch > 0`` the loader starts building in ``__next__``, starts the thread after
    `SWITCH_AFTER` batches in a row where the consumer's time away could have hidden a build,
    and goes back (stopping the thread) after as many batches in a row that it waited for the
    thread about as long as a build takes. Either way it yields the same batches.
    """

    def __init__(
        self,
        shard_dir: str | Path,
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        drop_last: bool = True,
        split: str = "train",
        num_epochs: int | None = None,
        prefetch: int = 2,
        tokenizer: Tokenizer | str | None = None,
        exclude: np.ndarray | None = None,
    ):
        if prefetch < 0:
            raise ValueError(f"prefetch must be >= 0, got {prefetch}")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
        self.index: ShardIndex = load_index(shard_dir, split)
        if tokenizer is not None:
            check_tokenizer(self.index, tokenizer)
        self.stream = TokenStream(list(self.index.open()))
        self.plan = PackingPlan(
            num_tokens=self.index.tokens,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            drop_last=drop_last,
            process_index=process_index,
            process_count=process_count,
        )
        self.num_epochs = num_epochs
        self.prefetch = prefetch
        self.exclude = None if exclude is None else np.asarray(exclude, np.int64).reshape(-1, 2)
        self._epoch, self._step = 0, 0
        self._orders: dict[int, np.ndarray] = {}
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Any] | None = None
        self._stop = threading.Event()
        self._streak = 0  # batches in a row that argue for switching mode
        self._switches = 0  # thread -> inline switches so far (each doubles the next streak)
        self._build_s = 0.0  # the last measured build time of one batch
        self._returned: float | None = None  # when __next__ last returned

    # -- facts -------------------------------------------------------------------------------
    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes per token of the split, for bits/byte."""
        return self.index.bytes_per_token

    def batch_at(self, epoch: int, step: int) -> Batch:
        """The batch of ``(epoch, step)``: a pure function of the plan (used by ``__next__``)."""
        windows = self.epoch_order(epoch)[step]
        return make_batch(self.stream, windows, self.plan.seq_len, self.index.eos_id, self.exclude)

    def target_positions(self, epoch: int, step: int) -> np.ndarray:
        """int64 ``[batch_size, seq_len]``: the stream position of each target of the batch of
        ``(epoch, step)`` (-1: none), where `tjx.data.documents.DocumentIndex.document_of`
        finds the document each comes from."""
        windows = self.epoch_order(epoch)[step]
        return target_positions(windows, self.plan.seq_len, self.stream.size)

    @property
    def position(self) -> tuple[int, int]:
        """``(epoch, step)`` of the next batch ``__next__`` hands out."""
        return self._epoch, self._step

    # -- iteration ---------------------------------------------------------------------------
    def _advance(self, epoch: int, step: int) -> tuple[int, int]:
        return _advance(self.plan, epoch, step)

    def _finished(self, epoch: int) -> bool:
        return self.num_epochs is not None and epoch >= self.num_epochs

    def _start(self) -> None:
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self.prefetch)
        # The thread holds no reference to self, so an abandoned loader is collected and __del__
        # stops the thread.
        self._thread = threading.Thread(
            target=_produce,
            args=(self.plan, self.stream, self.index.eos_id, self.exclude, self.num_epochs,
                  self._epoch, self._step, self._queue, self._stop),  # fmt: skip
            name="tjx-data-prefetch",
            daemon=True,
        )
        self._thread.start()

    def close(self) -> None:
        """Stop the prefetch thread (it restarts on the next ``__next__``)."""
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread, self._queue = None, None

    def __next__(self) -> Batch:
        arrived = time.perf_counter()
        away = None if self._returned is None else arrived - self._returned
        if self._thread is None:
            if self._finished(self._epoch):
                raise StopIteration
            batch = self.batch_at(self._epoch, self._step)
            self._epoch, self._step = self._advance(self._epoch, self._step)
            if self.prefetch:
                self._build_s = time.perf_counter() - arrived
                # A thread would have built this batch while the consumer was away.
                self._vote(away is not None and min(away, self._build_s) > _HANDOFF_S)
                if self._streak >= self._needed():
                    self._streak = 0
                    self._start()
        else:
            assert self._queue is not None
            item = self._queue.get()
            if item is StopIteration:
                self.close()
                raise StopIteration
            if isinstance(item, BaseException):
                self.close()
                raise item
            batch, self._epoch, self._step, self._build_s = item
            # Waited about a whole build: the thread hid nothing, the hand-off is pure cost.
            self._vote(time.perf_counter() - arrived > 0.8 * self._build_s)
            if self._streak >= self._needed():
                self._streak, self._switches = 0, self._switches + 1
                self.close()
        self._returned = time.perf_counter()
        return batch

    def _vote(self, switch: bool) -> None:
        self._streak = self._streak + 1 if switch else 0

    def _needed(self) -> int:
        # Each thread -> inline switch doubles the evidence needed next time: no flapping.
        return SWITCH_AFTER << min(self._switches, 7)

    def __del__(self) -> None:
        stop = getattr(self, "_stop", None)  # absent if __init__ raised
        if stop is not None:
            stop.set()

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position (+ the settings it is only valid with)."""
        return {
            "version": STATE_VERSION,
            "epoch": self._epoch,
            "step": self._step,
            **self.plan.settings(),
            "fingerprint": self.index.fingerprint,
            "tokens": self.index.tokens,
            "digest": self.index.digest,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (from ``state_dict()`` of a loader with the same settings).

        Raises
        ------
        DataError
            If the state was made with other settings or other shards (it would not resume the
            same sequence of batches).
        """
        position = resume_position(
            state, self.state_dict(), _MUST_MATCH, self.steps_per_epoch, "loader"
        )
        self.close()
        self._epoch, self._step = position


def validation_batches(
    shard_dir: str | Path,
    seq_len: int,
    batch_size: int,
    *,
    split: str = "validation",
    process_index: int = 0,
    process_count: int = 1,
    tokenizer: Tokenizer | str | None = None,
) -> Iterator[Batch]:
    """Every window of the held-out split once, in stream order, the last batch padded.

    Padding rows / columns have ``segment_ids == 0`` and ``targets == -100``, so summed metrics
    count every validation token exactly once.
    """
    return PackedLoader(
        shard_dir,
        seq_len=seq_len,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        split=split,
        num_epochs=1,
        prefetch=0,
        process_index=process_index,
        process_count=process_count,
        tokenizer=tokenizer,
    )
