"""Resumable, shuffled, process-sharded batches of chat conversations and preference pairs.

`ChatLoader` packs whole conversations into rows (:mod:`tjx.data.chat.packing`), the targets
``-100`` wherever the model does not learn the token, so the batch has the pre-training layout and
any objective that skips ``-100`` trains on the assistant's tokens only. `PreferenceLoader` gives
each pair two rows, chosen then rejected. `PromptLoader` gives GRPO's prompts, right-padded, with
their lengths and row numbers (the rewards read the rows). All shuffle rows per epoch with
``default_rng([seed, epoch])`` and split each global batch between processes exactly as
`PackedLoader` does, and resume from ``state_dict()`` to the batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.chat.packing import RowPlan, Truncation, build_rows, kept_lengths, pack_rows
from tjx.data.chat.store import SequenceIndex, load_sequences
from tjx.data.errors import DataError
from tjx.data.loader import PlannedLoader
from tjx.data.packing import resume_position
from tjx.data.tokenizers import Tokenizer

__all__ = ["ChatLoader", "PreferenceLoader", "PromptLoader", "chat_validation_batches"]

Batch = dict[str, np.ndarray]
STATE_VERSION = 1
_MUST_MATCH = ("kind", "seq_len", "batch_size", "seed", "shuffle", "drop_last", "process_index",
               "process_count", "fingerprint", "template", "sequences", "tokens",
               "digest")  # fmt: skip


class _RowLoader(PlannedLoader):
    """What both loaders share: the split, the truncation, the row plan, iteration and resume."""

    kind = ""

    def __init__(
        self,
        folder: str | Path,
        *,
        seq_len: int,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        drop_last: bool = True,
        num_epochs: int | None = None,
        tokenizer: Tokenizer | str | None = None,
        template: str | None = None,
    ) -> None:
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.index: SequenceIndex = load_sequences(folder)
        if self.index.kind != self.kind:
            raise DataError(
                f"{self.index.path}: holds {self.index.kind} data, not {self.kind} data",
                argument="data",
            )
        self._check(tokenizer, template)
        self.tokens, self.mask, self.offsets = self.index.open()
        self.seq_len = seq_len
        #: What the truncation rule did (counts for the run's log).
        self.truncation: Truncation = self._truncate()
        if self.truncation.rows == 0:
            # Named by the rows' source (the user's file and split), not the folder: a run checks
            # new data in its staging folder, a hidden path in the cache no user knows.
            raise DataError(
                f"{self.index.source}: all {self.index.rows} {self.kind} row(s) {self._lost} "
                f"(seq_len {seq_len}); raise seq_len",
                argument="seq_len",
            )
        self._layout()
        self.plan = RowPlan(
            num_tokens=0,
            seq_len=seq_len,
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            drop_last=drop_last,
            process_index=process_index,
            process_count=process_count,
            num_rows=self._num_rows(),
        )
        self.num_epochs = num_epochs
        self._epoch, self._step = 0, 0
        self._orders: dict[int, np.ndarray] = {}

    def _check(self, tokenizer: Tokenizer | str | None, template: str | None) -> None:
        index = self.index
        if tokenizer is not None:
            expected = tokenizer if isinstance(tokenizer, str) else tokenizer.fingerprint
            if expected != index.fingerprint:
                raise DataError(
                    f"{index.path}: made with tokenizer {index.fingerprint}, not {expected}; "
                    "prepare the data again with this tokenizer",
                    argument="tokenizer",
                )
        if template is not None and template != index.template:
            raise DataError(
                f"{index.path}: rendered with chat template {index.template}, not {template}; "
                "prepare the data again with this template",
                argument="tokenizer",
            )

    # -- subclass hooks ----------------------------------------------------------------------
    #: What the truncation did to a row that is dropped (for the error when none is left).
    _lost = "lose every trained token when cut to seq_len + 1 tokens (their prompts are longer)"

    def _truncate(self) -> Truncation:
        return kept_lengths(self.offsets, self.mask, self.seq_len, pairs=self.kind == "preference")

    def _layout(self) -> None:
        raise NotImplementedError

    def _num_rows(self) -> int:
        raise NotImplementedError

    def _rows(self, ids: np.ndarray) -> Batch:
        raise NotImplementedError

    def _sequence(self, seq: int) -> tuple[np.ndarray, np.ndarray]:
        start, keep = int(self.offsets[seq]), int(self.truncation.kept[seq])
        return self.tokens[start : start + keep], self.mask[start : start + keep]

    # -- facts -------------------------------------------------------------------------------
    def batch_at(self, epoch: int, step: int) -> Batch:
        """The batch of ``(epoch, step)``: a pure function of the split and the settings."""
        return self._rows(self.epoch_order(epoch)[step])

    # -- iteration ---------------------------------------------------------------------------
    def __next__(self) -> Batch:
        if self.num_epochs is not None and self._epoch >= self.num_epochs:
            raise StopIteration
        batch = self.batch_at(self._epoch, self._step)
        self._step += 1
        if self._step == self.steps_per_epoch:
            self._epoch, self._step = self._epoch + 1, 0
        return batch

    def close(self) -> None:
        """Nothing to stop (batches are built in ``__next__``); for `PackedLoader`'s interface."""

    # -- resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position (+ the settings and data it is only valid with)."""
        index = self.index
        return {
            "version": STATE_VERSION,
            "kind": self.kind,
            "epoch": self._epoch,
            "step": self._step,
            **self.plan.settings(),
            "fingerprint": index.fingerprint,
            "template": index.template,
            "sequences": index.sequences,
            "tokens": index.tokens,
            "digest": index.digest,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state`` (``state_dict()`` of a loader with the same settings).

        Raises
        ------
        DataError
            Another version, setting, tokenizer, chat template or split (it would not continue
            the same sequence of batches); the message names each difference.
        """
        self._epoch, self._step = resume_position(
            state, self.state_dict(), _MUST_MATCH, self.steps_per_epoch, "chat loader"
        )


class ChatLoader(_RowLoader):
    """Packed conversations: ``{"inputs", "targets", "segment_ids", "positions"}``, int32
    ``[batch_size, seq_len]``, targets ``-100`` except where the assistant writes.

    Parameters
    ----------
    folder:
        A ``kind="chat"`` split (`tjx.data.prepare_chat_data` or `write_sequences`).
    seq_len, batch_size, seed, shuffle, process_index, process_count, drop_last, num_epochs:
        As for `PackedLoader`; an epoch is every packed row once.
    tokenizer, template:
        A tokenizer (or fingerprint) and a chat-template fingerprint the split must have been
        made with (else ``DataError``).
    """

    kind = "chat"

    def _layout(self) -> None:
        self.order, self.row_starts = pack_rows(
            np.maximum(self.truncation.kept - 1, 0), self.seq_len
        )

    def _num_rows(self) -> int:
        return int(self.row_starts.size - 1)

    @property
    def fill(self) -> float:
        """Share of row positions that hold a sequence (1 - padding share)."""
        used = int(np.maximum(self.truncation.kept - 1, 0).sum())
        return used / max(self._num_rows() * self.seq_len, 1)

    def _rows(self, ids: np.ndarray) -> Batch:
        groups: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for row in ids.tolist():
            if row < 0:
                groups.append([])
                continue
            members = self.order[self.row_starts[row] : self.row_starts[row + 1]]
            groups.append([self._sequence(int(s)) for s in members])
        return build_rows(groups, self.seq_len)


class PreferenceLoader(_RowLoader):
    """Preference pairs: the chat layout with ``2 * batch_size`` rows, pair ``i`` in rows ``2i``
    (chosen) and ``2i + 1`` (rejected); targets ``-100`` outside the completions.

    Parameters are `ChatLoader`'s, with a ``kind="preference"`` split; ``batch_size`` counts
    pairs, and an epoch is every kept pair once.
    """

    kind = "preference"

    def _layout(self) -> None:
        self.pairs = np.flatnonzero(self.truncation.kept[0::2] > 0)

    def _num_rows(self) -> int:
        return int(self.pairs.size)

    def _rows(self, ids: np.ndarray) -> Batch:
        groups: list[list[tuple[np.ndarray, np.ndarray]]] = []
        for row in ids.tolist():
            if row < 0:
                groups += [[], []]
                continue
            pair = int(self.pairs[row])
            groups += [[self._sequence(2 * pair)], [self._sequence(2 * pair + 1)]]
        return build_rows(groups, self.seq_len)


class PromptLoader(_RowLoader):
    """GRPO's prompts: ``{"prompts"`` int32 ``[batch_size, seq_len]`` right-padded with 0,
    ``"lengths"`` int32 ``[batch_size]``, ``"row_ids"`` int64 ``[batch_size]``} (a padding row:
    length 0, row -1). A prompt longer than ``seq_len`` is left out (``truncation.dropped``
    counts them): cut, it would ask another question.

    Parameters are `ChatLoader`'s, with a ``kind="prompts"`` split; an epoch is every kept
    prompt once. `tjx.data.chat.store.read_prompt_rows` gives the rows ``row_ids`` point into.
    """

    kind = "prompts"
    _lost = "are longer than seq_len tokens"

    def _truncate(self) -> Truncation:
        lengths = np.diff(self.offsets).astype(np.int64)
        fits = lengths <= self.seq_len
        long = int((~fits).sum())
        return Truncation(np.where(fits, lengths, 0), long, long, int(fits.sum()))

    def _layout(self) -> None:
        self.prompts = np.flatnonzero(self.truncation.kept > 0)

    def _num_rows(self) -> int:
        return int(self.prompts.size)

    def _rows(self, ids: np.ndarray) -> Batch:
        n = ids.size
        out: Batch = {
            "prompts": np.zeros((n, self.seq_len), np.int32),
            "lengths": np.zeros(n, np.int32),
            "row_ids": np.full(n, -1, np.int64),
        }
        for i, row in enumerate(ids.tolist()):
            if row < 0:
                continue
            seq = int(self.prompts[row])
            tokens, _ = self._sequence(seq)
            out["prompts"][i, : tokens.size] = tokens
            out["lengths"][i] = tokens.size
            out["row_ids"][i] = seq
        return out


def chat_validation_batches(
    folder: str | Path,
    seq_len: int,
    batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    tokenizer: Tokenizer | str | None = None,
    template: str | None = None,
) -> Iterator[Batch]:
    """Every packed row (or pair, or prompt) of a held-out split once, in order, the last batch
    padded, so summed metrics count every trained token (or prompt) exactly once."""
    kind = load_sequences(folder).kind
    cls = {"chat": ChatLoader, "preference": PreferenceLoader, "prompts": PromptLoader}[kind]
    return cls(
        folder,
        seq_len=seq_len,
        batch_size=batch_size,
        shuffle=False,
        drop_last=False,
        num_epochs=1,
        process_index=process_index,
        process_count=process_count,
        tokenizer=tokenizer,
        template=template,
    )
