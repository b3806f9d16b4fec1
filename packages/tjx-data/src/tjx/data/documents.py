"""Where each document of a split's token stream lies and where it came from.

A split's stream is its documents' tokens, each document followed by EOS (`tjx.data.shards`).
`pretokenize` records, beside the shards, each kept document's first stream position and its
origin (the file and line, row or byte offset its text was read from)::

    <split>/documents.npy    int64 [documents, 5]: start, file, line, row, byte (-1: unknown)
    <split>/documents.json   {"format": "tjx-documents/1", "files": [path, ...]}

Both are written before ``index.json``, so a split that has them has them whole. Shards made by
an earlier tjx-data lack them: `load_documents` then finds the documents' starts from the EOS
tokens of the stream, and each document is named by its number alone.

Documents are numbered from 0 in stream order (the empty ones, which add no tokens, skipped):
that number is what a replay report names and what ``data.exclude`` takes (`exclude_ranges`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tjx.data.errors import DataError
from tjx.data.shards import ShardIndex, load_index

__all__ = [
    "DOCUMENTS_FORMAT",
    "DocumentIndex",
    "DocumentTable",
    "Origin",
    "exclude_ranges",
    "load_documents",
]

DOCUMENTS_FORMAT = "tjx-documents/1"
TABLE = "documents.npy"
FILES = "documents.json"
#: Tokens read at a time when the starts are found from the stream's EOS tokens.
_SCAN = 1 << 24


@dataclass(frozen=True)
class Origin:
    """Where a document's text was read from; None where the source does not say.

    Attributes
    ----------
    file : str or None
        The file (as resolved when the split was prepared; a built-in corpus's cached JSONL).
    line : int or None
        Its 1-based line in ``file`` (a JSON Lines row; 1 for a text file, which is one
        document).
    row : int or None
        Its 0-based row of a Parquet file or a Hugging Face dataset.
    byte : int or None
        The byte offset in ``file`` where its line (or its text) starts (in its decompressed
        text, for a compressed file).
    """

    file: str | None = None
    line: int | None = None
    row: int | None = None
    byte: int | None = None

    def shifted(self, text: str, lines: bool) -> Origin:
        """The origin of the text that follows ``text`` in this document (a held-out cut):
        ``byte`` moved by its UTF-8 length and, in a text file (``lines``), ``line`` by its line
        breaks."""
        byte = None if self.byte is None else self.byte + len(text.encode("utf-8"))
        line = self.line
        if lines and line is not None:
            line += text.count("\n")
        return Origin(self.file, line, self.row, byte)

    def describe(self) -> str:
        """``notes.jsonl line 17 (byte 1,234)``, ``row 5``; empty when nothing is known."""
        parts = [self.file] if self.file else []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.row is not None:
            parts.append(f"row {self.row}")
        text = " ".join(parts)
        if self.byte is not None:
            text += f" (byte {self.byte:,})"
        return text


class DocumentTable:
    """The rows `pretokenize` collects while it writes a split (see the module docstring)."""

    def __init__(self) -> None:
        self._rows: list[np.ndarray] = []
        self._files: dict[str, int] = {}

    def add(self, starts: np.ndarray, origins: Sequence[Origin | None]) -> None:
        """Record documents beginning at stream positions ``starts`` with their ``origins``."""
        rows = np.full((len(starts), 5), -1, dtype=np.int64)
        rows[:, 0] = starts
        for i, origin in enumerate(origins[: len(starts)]):
            if origin is None:
                continue
            if origin.file is not None:
                rows[i, 1] = self._files.setdefault(origin.file, len(self._files))
            for column, value in ((2, origin.line), (3, origin.row), (4, origin.byte)):
                if value is not None:
                    rows[i, column] = value
        self._rows.append(rows)

    def save(self, folder: Path) -> None:
        """Write ``documents.npy`` and ``documents.json`` into ``folder``."""
        table = np.concatenate(self._rows) if self._rows else np.zeros((0, 5), np.int64)
        np.save(folder / TABLE, table, allow_pickle=False)
        files = sorted(self._files, key=self._files.__getitem__)
        info = {"format": DOCUMENTS_FORMAT, "files": files}
        (folder / FILES).write_text(json.dumps(info, indent=1), encoding="utf-8")


@dataclass(frozen=True)
class DocumentIndex:
    """The documents of a split's token stream: where each starts and where it came from.

    Attributes
    ----------
    source : str
        The split's source label (``"notes.jsonl:train"``).
    tokens : int
        Tokens in the stream.
    starts : numpy.ndarray
        int64 ``[documents]``: each document's first stream position, ascending.
    table : numpy.ndarray or None
        int64 ``[documents, 5]`` as recorded (None: shards made before documents were recorded).
    files : list of str
        The files the table's ``file`` column numbers.
    """

    source: str
    tokens: int
    starts: np.ndarray
    table: np.ndarray | None
    files: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        """Documents in the stream."""
        return int(self.starts.shape[0])

    @property
    def recorded(self) -> bool:
        """Whether origins were recorded (shards made by this tjx-data or a later one)."""
        return self.table is not None

    def document_of(self, positions: np.ndarray) -> np.ndarray:
        """The document of each stream position (int64, same shape); -1 for a negative one."""
        positions = np.asarray(positions, dtype=np.int64)
        docs = np.searchsorted(self.starts, positions, side="right") - 1
        return np.where(positions < 0, -1, docs)

    def span(self, doc: int) -> tuple[int, int]:
        """``[start, stop)``: document ``doc``'s stream positions, its EOS included."""
        self._check(doc)
        stop = int(self.starts[doc + 1]) if doc + 1 < self.count else self.tokens
        return int(self.starts[doc]), stop

    def origin(self, doc: int) -> Origin:
        """Where document ``doc`` was read from (an empty `Origin` when not recorded)."""
        self._check(doc)
        if self.table is None:
            return Origin()
        _, file, line, row, byte = (int(v) for v in self.table[doc])

        def known(value: int) -> int | None:
            return None if value < 0 else value

        name = self.files[file] if 0 <= file < len(self.files) else None
        return Origin(name, known(line), known(row), known(byte))

    def describe(self, doc: int) -> str:
        """``document 17 of notes.jsonl:train: notes.jsonl line 18 (byte 2,048)``; shards made
        before origins were recorded say so."""
        where = self.origin(doc).describe()
        if not self.recorded:
            where = "origin not recorded (shards prepared by an earlier tjx-data)"
        return f"document {doc} of {self.source}" + (f": {where}" if where else "")

    def _check(self, doc: int) -> None:
        if not 0 <= doc < self.count:
            raise DataError(
                f"document {doc} is not in {self.source} (documents 0..{self.count - 1})",
                argument="exclude",
            )


def _starts_from_stream(index: ShardIndex) -> np.ndarray:
    """Each document's first position, from the EOS that ends the one before it."""
    eos, found, offset = index.eos_id, [np.zeros(1, np.int64)], 0
    for array in index.open():
        for lo in range(0, array.shape[0], _SCAN):
            part = np.asarray(array[lo : lo + _SCAN])
            found.append(np.flatnonzero(part == eos).astype(np.int64) + offset + lo + 1)
        offset += array.shape[0]
    starts = np.concatenate(found)
    return starts[starts < index.tokens]


def load_documents(shard_dir: str | Path, split: str | None = None) -> DocumentIndex:
    """The `DocumentIndex` of a split (``shard_dir`` as `load_index` takes it).

    Shards without ``documents.npy`` (made by an earlier tjx-data) get their starts from the
    stream's EOS tokens (a pass over the shards) and no origins.

    Raises
    ------
    DataError
        No index there, or a document table that does not fit the shards.
    """
    index = load_index(shard_dir, split)
    folder = index.path
    if not (folder / TABLE).is_file():
        return DocumentIndex(index.source, index.tokens, _starts_from_stream(index), None)
    try:
        table = np.load(folder / TABLE, allow_pickle=False)
        info = json.loads((folder / FILES).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"{folder / TABLE}: unreadable document table ({err})") from None
    shaped = table.ndim == 2 and table.shape[1] == 5 and info.get("format") == DOCUMENTS_FORMAT
    starts = table[:, 0] if shaped else np.zeros(0, np.int64)
    ordered = starts.size == 0 or (starts[-1] < index.tokens and bool(np.all(np.diff(starts) > 0)))
    if not shaped or not ordered:
        raise DataError(
            f"{folder / TABLE}: the document table does not fit the shards; prepare them again"
        )
    return DocumentIndex(index.source, index.tokens, starts, table, tuple(info.get("files", ())))


def exclude_ranges(documents: DocumentIndex, numbers: Iterable[int]) -> np.ndarray:
    """int64 ``[n, 2]``: the ``[start, stop)`` stream ranges of the documents ``numbers``,
    sorted (what `PackedLoader`'s ``exclude`` takes: their tokens are never targets).

    Raises
    ------
    DataError
        A number that is no document of the split (``argument="exclude"``).
    """
    spans = sorted(documents.span(int(n)) for n in set(numbers))
    return np.asarray(spans, dtype=np.int64).reshape(-1, 2)
