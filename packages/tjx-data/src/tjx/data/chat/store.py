"""Encoded chat and preference sequences on disk: ids, trained-token mask and boundaries.

Layout of one split (written by :func:`write_sequences`, atomically)::

    <dir>/index.json     # SequenceIndex as JSON
    <dir>/tokens.bin     # every sequence's ids back to back (uint16 or uint32)
    <dir>/mask.bin       # one uint8 per token: 1 = a token the model learns to write
    <dir>/offsets.bin    # int64 [sequences + 1]: sequence i is tokens[offsets[i]:offsets[i+1]]

A ``prompts`` split (GRPO's) also holds ``rows.jsonl``, each row's JSON object on one line in
sequence order: the rewards read their values (an ``answer``) from it.

Unlike pre-training shards no EOS separates the sequences: a chat template writes its own
end-of-turn tokens, and sequence boundaries are explicit (an EOS inside a conversation must not
start a new packed segment). A preference split stores each pair as two sequences, chosen then
rejected. Nothing here depends on the training sequence length: truncation and packing happen
when a loader reads the split.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.cache import atomic_prepare
from tjx.data.chat.encode import ChatEncoder, Encoded
from tjx.data.errors import DataError
from tjx.data.shards import check_unchanged, dtype_for_vocab, record_made

__all__ = [
    "FORMAT",
    "KINDS",
    "SequenceIndex",
    "load_sequences",
    "read_prompt_rows",
    "write_sequences",
]

FORMAT = "tjx-seqs/1"
#: ``chat``: one sequence per conversation; ``preference``: two per pair (chosen, rejected);
#: ``prompts``: one per prompt (nothing trained), its row kept in ``rows.jsonl``.
KINDS = ("chat", "preference", "prompts")
INDEX = "index.json"
ROWS = "rows.jsonl"
_FILES = ("tokens.bin", "mask.bin", "offsets.bin")


@dataclass(frozen=True)
class SequenceIndex:
    """What a split of encoded sequences holds; ``index.json`` is this as JSON.

    Attributes
    ----------
    split, source, kind:
        Split name, where the rows came from, and ``"chat"`` or ``"preference"``.
    dtype:
        ``"uint16"`` or ``"uint32"`` for the ids.
    tokens, sequences, rows:
        Token and sequence counts, and the rows they came from (conversations or pairs).
    trained_tokens:
        Tokens with mask 1 (what a chat objective scores, before truncation).
    tokenizer:
        ``name``, ``fingerprint``, ``vocab_size`` of the tokenizer used.
    template:
        The chat template's fingerprint (``None`` when the encoder had none: plain text only).
    digest:
        SHA-256 (hex) of the sequences as stored (each one's length, ids and mask): what a
        loader's saved position is only valid with. ``None`` for splits made before tjx-data 0.21.
    """

    split: str
    source: str
    kind: str
    dtype: str
    tokens: int
    sequences: int
    rows: int
    trained_tokens: int
    tokenizer: dict[str, Any]
    template: str | None
    format: str = FORMAT
    digest: str | None = None
    path: Path = field(default=Path("."), compare=False)

    @property
    def fingerprint(self) -> str:
        """The tokenizer fingerprint the sequences were made with."""
        return str(self.tokenizer["fingerprint"])

    def save(self, folder: Path) -> None:
        """Write ``folder/index.json``."""
        data = asdict(self)
        data.pop("path")
        (folder / INDEX).write_text(json.dumps(data, indent=1), encoding="utf-8")

    def open(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Memory-mapped ``(tokens, mask, offsets)``, after checking every file's size.

        Raises
        ------
        DataError
            A missing or truncated file (the split is damaged: prepare it again).
        """
        sizes = {
            "tokens.bin": self.tokens * np.dtype(self.dtype).itemsize,
            "mask.bin": self.tokens,
            "offsets.bin": (self.sequences + 1) * 8,
        }
        for name, size in sizes.items():
            file = self.path / name
            if not file.is_file() or file.stat().st_size != size:
                raise DataError(
                    f"{file}: missing or not {size} bytes; the split is damaged, prepare it again"
                )

        def mapped(name: str, dtype: str, n: int) -> np.ndarray:
            if n == 0:
                return np.zeros(0, dtype)
            return np.memmap(self.path / name, dtype=dtype, mode="r", shape=(n,))

        tokens = mapped("tokens.bin", self.dtype, self.tokens)
        mask = mapped("mask.bin", "uint8", self.tokens)
        offsets = mapped("offsets.bin", "int64", self.sequences + 1)

        def stored() -> Iterator[bytes | memoryview]:
            # As `write_sequences` hashed them: each sequence's length, ids and mask.
            for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist(), strict=True):
                yield np.int64(end - start).tobytes()
                yield tokens[start:end].data
                yield mask[start:end].data

        check_unchanged(
            self.path,
            _FILES,
            self.digest,
            stored,
            remake="prepare it again (delete the folder: a run makes it again from its rows)",
        )
        return tokens, mask, offsets


def load_sequences(folder: str | Path) -> SequenceIndex:
    """Read a split's index.

    Raises
    ------
    DataError
        No index there, or another format.
    """
    file = Path(folder) / INDEX
    if not file.is_file():
        raise DataError(f"no sequence index at {file}; prepare the chat data first")
    data = json.loads(file.read_text(encoding="utf-8"))
    if data.get("format") != FORMAT:
        raise DataError(f"{file}: unknown sequence format {data.get('format')!r}")
    return SequenceIndex(**data, path=file.parent)


def _encoded(
    rows: Iterable[Any], encoder: ChatEncoder, kind: str, kept: list[Any] | None = None
) -> Iterator[tuple[str, list[Encoded]]]:
    """Each row's sequences, with where the row is (`Rows.located`: a file's line; else its
    number); ``kept`` collects the rows themselves (a prompts split stores them)."""
    located = getattr(rows, "located", None)
    pairs = located() if callable(located) else ((f"row {i}", r) for i, r in enumerate(rows))
    for where, row in pairs:
        if kept is not None:
            kept.append(row)
        if kind == "chat":
            yield where, [encoder.encode(row, where)]
        elif kind == "prompts":
            yield where, [encoder.encode_prompt_row(row, where)]
        else:
            pair = encoder.encode_pair(row, where)
            yield where, [pair.chosen, pair.rejected]


def write_sequences(
    rows: Iterable[Any],
    encoder: ChatEncoder,
    folder: str | Path,
    *,
    kind: str,
    split: str,
    source: str,
    replace: bool = False,
) -> SequenceIndex:
    """Encode ``rows`` into ``folder`` (one split), or find it there already.

    Parameters
    ----------
    rows:
        Chat rows (``kind="chat"``) or preference rows (``"preference"``): see
        :mod:`tjx.data.chat.encode`. Rows with a ``located()`` (`Rows`) are named by where
        they are in their file in errors, others by their number.
    encoder:
        The tokenizer and template.
    folder:
        The split's folder; it appears in one rename once complete (an interrupted run leaves
        nothing that looks complete).
    kind, split, source:
        Stored in the index.
    replace:
        Rebuild even if the folder exists.

    Raises
    ------
    DataError
        A bad row (named by its place), no rows, an id outside the vocabulary, or an existing
        split of another kind or tokenizer.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    tok = encoder.tokenizer
    dtype = dtype_for_vocab(tok.vocab_size)
    final = Path(folder)

    def build(staging: Path) -> None:
        handles = {name: open(staging / name, "wb") for name in _FILES}  # noqa: SIM115
        offsets, tokens, trained, count = [0], 0, 0, 0
        stored = hashlib.sha256()  # of what is written, as it is written
        kept: list[Any] | None = [] if kind == "prompts" else None
        try:
            for where, sequences in _encoded(rows, encoder, kind, kept):
                count += 1
                for seq in sequences:
                    if seq.ids.size and (seq.ids.min() < 0 or seq.ids.max() >= tok.vocab_size):
                        raise DataError(f"{where}: an id lies outside the vocabulary")
                    ids, mask = seq.ids.astype(dtype), seq.mask.astype(np.uint8)
                    ids.tofile(handles["tokens.bin"])
                    mask.tofile(handles["mask.bin"])
                    for part in (np.int64(ids.size).tobytes(), ids.data, mask.data):
                        stored.update(part)
                    tokens += int(seq.ids.size)
                    trained += int(seq.mask.sum())
                    offsets.append(tokens)
            np.asarray(offsets, np.int64).tofile(handles["offsets.bin"])
        finally:
            for handle in handles.values():
                handle.close()
        if count == 0:
            raise DataError(f"empty dataset: {source} has no rows")
        if kept is not None:
            with open(staging / ROWS, "w", encoding="utf-8") as out:
                for row in kept:
                    out.write(json.dumps(row, ensure_ascii=False) + "\n")
        record_made(staging, _FILES, stored.hexdigest())  # see SequenceIndex.open
        info = {"name": tok.name, "fingerprint": tok.fingerprint, "vocab_size": tok.vocab_size}
        SequenceIndex(split, source, kind, dtype, tokens, len(offsets) - 1, count, trained, info,
                      template, digest=stored.hexdigest()).save(staging)  # fmt: skip

    template = encoder.template.fingerprint if encoder.template is not None else None
    atomic_prepare(final, build, replace=replace)
    index = load_sequences(final)
    if (index.kind, index.fingerprint, index.template) != (kind, tok.fingerprint, template):
        raise DataError(
            f"{final}: holds {index.kind} sequences of tokenizer {index.fingerprint} and template "
            f"{index.template}, not {kind} of {tok.fingerprint} and {template}; use another folder "
            "or replace=True"
        )
    index.open()
    return index


def read_prompt_rows(index: SequenceIndex) -> list[dict[str, Any]]:
    """A ``prompts`` split's rows (``rows.jsonl``), in sequence order.

    Raises
    ------
    DataError
        Another kind of split, or a rows file missing or of another length (damaged: prepare
        it again).
    """
    if index.kind != "prompts":
        raise DataError(f"{index.path}: holds {index.kind} data, not prompts", argument="data")
    file = index.path / ROWS
    try:
        with open(file, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle]
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(
            f"{file}: unreadable ({exc}); the split is damaged, prepare it again"
        ) from None
    if len(rows) != index.sequences:
        raise DataError(
            f"{file}: {len(rows)} rows for {index.sequences} prompts; the split is damaged, "
            "prepare it again"
        )
    return rows
