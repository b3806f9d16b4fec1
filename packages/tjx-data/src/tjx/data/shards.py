"""Token shards on disk: the JSON index, integrity checks and memory-mapped reading.

Layout of one split (written by :func:`tjx.data.pretokenize`)::

    <out_dir>/<split>/index.json        # ShardIndex as JSON
    <out_dir>/<split>/shard_00000.bin   # flat uint16 or uint32 tokens, native little-endian

The token stream is every non-empty document's tokens followed by EOS, documents in source
order, shards concatenated in index order.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data.errors import DataError
from tjx.data.tokenizers import Tokenizer

__all__ = ["FORMAT", "ShardIndex", "check_tokenizer", "dtype_for_vocab", "load_index"]

FORMAT = "tjx-shards/1"
INDEX = "index.json"


def dtype_for_vocab(vocab_size: int) -> str:
    """``"uint16"`` if every id fits (vocab ≤ 65,536 ids: 0..65,535), else ``"uint32"``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


@dataclass(frozen=True)
class ShardIndex:
    """What a split's shards hold; ``index.json`` is this as JSON (``path`` excluded).

    Attributes
    ----------
    split, source:
        The split name and where the documents came from (e.g. ``"shakespeare:train"``).
    dtype:
        ``"uint16"`` or ``"uint32"``.
    tokens:
        Tokens in the stream, the one EOS per document included.
    documents, empty_documents:
        Documents written, and documents skipped because they had no tokens.
    bytes:
        UTF-8 bytes of the written documents (for bits/byte).
    tokenizer:
        ``name``, ``fingerprint``, ``vocab_size``, ``eos_id`` of the tokenizer used.
    shards:
        ``[{"file": "shard_00000.bin", "tokens": n}, ...]`` in stream order.
    digest:
        SHA-256 (hex) of the token stream as stored: what a loader's saved position is only
        valid with, so a source edited to the same token count is not read as the same data.
        ``None`` for shards made before tjx-data 0.21.
    """

    split: str
    source: str
    dtype: str
    tokens: int
    documents: int
    empty_documents: int
    bytes: int
    tokenizer: dict[str, Any]
    shards: list[dict[str, Any]]
    format: str = FORMAT
    digest: str | None = None
    path: Path = field(default=Path("."), compare=False)

    @property
    def fingerprint(self) -> str:
        """The tokenizer fingerprint the shards were made with."""
        return str(self.tokenizer["fingerprint"])

    @property
    def eos_id(self) -> int:
        """The EOS id that separates documents in the stream."""
        return int(self.tokenizer["eos_id"])

    @property
    def bytes_per_token(self) -> float:
        """UTF-8 bytes per stream token: bits/byte = (nats/token) / ln 2 / bytes_per_token."""
        return self.bytes / self.tokens

    def to_json(self) -> str:
        """The index as pretty JSON (without ``path``)."""
        data = asdict(self)
        data.pop("path")
        data["bytes_per_token"] = self.bytes_per_token
        return json.dumps(data, indent=1)

    def save(self, folder: Path) -> None:
        """Write ``folder/index.json``."""
        (folder / INDEX).write_text(self.to_json(), encoding="utf-8")

    def validate(self) -> None:
        """Check the shard files exist and have exactly the sizes the index says.

        Raises
        ------
        DataError
            A missing or truncated shard, or counts that do not add up.
        """
        itemsize = np.dtype(self.dtype).itemsize
        if sum(int(s["tokens"]) for s in self.shards) != self.tokens:
            raise DataError(f"{self.path}: shard token counts do not add up to {self.tokens}")
        for shard in self.shards:
            file = self.path / shard["file"]
            if not file.is_file():
                raise DataError(f"{file}: shard missing")
            if file.stat().st_size != int(shard["tokens"]) * itemsize:
                raise DataError(
                    f"{file}: {file.stat().st_size} bytes, expected {shard['tokens']} tokens "
                    f"of {self.dtype}; the shard is damaged, run pretokenize(..., overwrite=True)"
                )

    def open(self) -> list[np.memmap]:
        """Memory-map every shard read-only (after :meth:`validate`)."""
        self.validate()
        return [
            np.memmap(self.path / s["file"], dtype=self.dtype, mode="r", shape=(int(s["tokens"]),))
            for s in self.shards
        ]

    def read_all(self) -> np.ndarray:
        """The whole token stream as one array (for tests and small splits)."""
        arrays = self.open()
        return np.concatenate(arrays) if arrays else np.zeros(0, self.dtype)


def load_index(shard_dir: str | Path, split: str | None = None) -> ShardIndex:
    """Read the index of a split.

    ``shard_dir`` is either the split folder itself (it holds ``index.json``) or the
    ``out_dir`` given to ``pretokenize`` (then ``shard_dir/split/index.json`` is read).

    Raises
    ------
    DataError
        No index there (never pre-tokenized, or an interrupted run), or an unknown format.
    """
    base = Path(shard_dir)
    candidates = [base / INDEX] + ([base / split / INDEX] if split else [])
    for file in candidates:
        if file.is_file():
            data = json.loads(file.read_text(encoding="utf-8"))
            if data.get("format") != FORMAT:
                raise DataError(f"{file}: unknown shard format {data.get('format')!r}")
            data.pop("bytes_per_token", None)
            return ShardIndex(**data, path=file.parent)
    where = " or ".join(str(c) for c in candidates)
    raise DataError(f"no shard index at {where}; run tjx.data.pretokenize first")


def check_tokenizer(index: ShardIndex, tokenizer: Tokenizer | str) -> None:
    """Raise ``DataError`` unless ``index`` was made with ``tokenizer`` (or that fingerprint)."""
    expected = tokenizer if isinstance(tokenizer, str) else tokenizer.fingerprint
    if expected != index.fingerprint:
        name = "" if isinstance(tokenizer, str) else f" ({tokenizer.name})"
        raise DataError(
            f"{index.path}: shards were made with tokenizer {index.tokenizer.get('name')!r} "
            f"(fingerprint {index.fingerprint}), but the requested tokenizer{name} has "
            f"fingerprint {expected}; pre-tokenize again with this tokenizer"
        )
