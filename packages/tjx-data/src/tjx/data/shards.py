"""Token shards on disk: the JSON index, integrity checks and memory-mapped reading.

Layout of one split (written by :func:`tjx.data.pretokenize`)::

    <out_dir>/<split>/index.json        # ShardIndex as JSON
    <out_dir>/<split>/shard_00000.bin   # flat uint16 or uint32 tokens, native little-endian
    <out_dir>/<split>/verified.json     # the shards' sizes and times when last checked

The token stream is every non-empty document's tokens followed by EOS, documents in source
order, shards concatenated in index order.

**Files changed after a split was made** (`check_unchanged`, `record_made`; the chat splits of
:mod:`tjx.data.chat.store` use them too). A split's index records the sha256 of its tokens as
stored (its ``digest``), and a loader's saved position is only valid with that digest. But the
index is written once, when the split is made: a file rewritten afterwards to the same size (a
tool that edits in place, another corpus's shard copied over it) kept the index's digest, and a
resumed run read other tokens without a word. Hashing every file at every start would read the
whole corpus each time (about a minute per 100 GB), so each split keeps, beside its index,
``verified.json``: each file's size and modification time when its bytes last matched the
digest. A start compares those (one ``stat`` a file); only when one differs (a file rewritten,
or the folder copied without its times) are the files read again: the same digest, the new
times are recorded and the run goes on; another, the split is refused in one line that names
the files and the fix. Not seen: a file changed with its time put back (``touch -r``), or bits a
disk flipped without a write. A split made before tjx-data 0.21 has no digest to compare with;
one made before 0.25 has no ``verified.json``, so its first open reads it once and records it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from tjx.data.errors import DataError
from tjx.data.tokenizers import Tokenizer

__all__ = [
    "FORMAT",
    "VERIFIED",
    "ShardIndex",
    "check_tokenizer",
    "check_unchanged",
    "dtype_for_vocab",
    "load_index",
    "record_made",
]

FORMAT = "tjx-shards/1"
INDEX = "index.json"


def dtype_for_vocab(vocab_size: int) -> str:
    """``"uint16"`` if every id fits (vocab ≤ 65,536 ids: 0..65,535), else ``"uint32"``."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


VERIFIED = "verified.json"

#: Reading this many bytes again shows a progress bar (a copied corpus of many GB takes a while).
SHOW_PROGRESS_BYTES = 1 << 30

Stamps = dict[str, list[int]]


def _stamps(folder: Path, names: Sequence[str]) -> Stamps:
    """Each file's ``[size, mtime_ns]``."""
    out: Stamps = {}
    for name in names:
        stat = (folder / name).stat()
        out[name] = [stat.st_size, stat.st_mtime_ns]
    return out


def _recorded(folder: Path) -> dict[str, object]:
    """What ``verified.json`` holds (empty when missing or unreadable: then the files are read)."""
    try:
        data = json.loads((folder / VERIFIED).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def record_made(folder: Path, names: Sequence[str], digest: str) -> None:
    """Record ``names``' sizes and times in ``folder/verified.json`` as matching ``digest``.

    Written whole or not at all (a temporary file renamed over it). A folder this process
    cannot write to keeps no record: its files are then read again at each check, which is
    slower, never wrong.
    """
    text = json.dumps({"digest": digest, "files": _stamps(folder, names)}, indent=1)
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{VERIFIED}.")
    except OSError:
        return
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, folder / VERIFIED)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)


def check_unchanged(
    folder: Path,
    names: Sequence[str],
    digest: str | None,
    stored: Callable[[], Iterable[bytes | memoryview]],
    *,
    remake: str,
) -> None:
    """Refuse a split whose files no longer hold the tokens its ``digest`` names.

    Parameters
    ----------
    folder, names:
        The split's folder and the files its digest covers (sizes already checked).
    digest:
        The index's sha256 of what it stored; ``None`` (made before tjx-data 0.21): nothing to
        compare with, so nothing is checked.
    stored:
        Yields the bytes the digest was computed over, in its order (read from the files).
    remake:
        How to make the split again, for the error's fix.

    Raises
    ------
    DataError
        The files' bytes give another digest: names the files whose time or size moved.
    """
    if digest is None:
        return
    now = _stamps(folder, names)
    before = _recorded(folder)
    if before == {"digest": digest, "files": now}:
        return  # as last verified: no file was written since
    total = sum(size for size, _ in now.values())
    bar = tqdm(
        total=total,
        desc=f"checking {folder.name} against its digest",
        unit="B",
        unit_scale=True,
        leave=False,
        disable=total < SHOW_PROGRESS_BYTES,
    )
    hasher = hashlib.sha256()
    with bar:
        for part in stored():
            hasher.update(part)
            bar.update(len(part) if isinstance(part, bytes) else part.nbytes)
    if hasher.hexdigest() != digest:
        files = before.get("files")
        moved = [n for n in names if isinstance(files, dict) and files.get(n) != now[n]]
        which = ", ".join(moved) if moved else "its files"
        raise DataError(
            f"{folder}: {which} changed after the split was made (their tokens' sha256 is "
            f"{hasher.hexdigest()[:12]}..., the index says {digest[:12]}...): a run would read "
            f"other tokens than the index describes; {remake}, or put the original files back"
        )
    record_made(folder, names, digest)


def _file_blocks(paths: Iterable[Path], block: int = 8 << 20) -> Iterable[bytes]:
    """The bytes of ``paths``, one after the other, ``block`` bytes at a time."""
    for path in paths:
        with open(path, "rb") as handle:
            yield from iter(lambda: handle.read(block), b"")


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
        """Check the shard files exist, have exactly the sizes the index says and still hold the
        tokens of its ``digest`` (see the module's doc: read again only when a file's time or
        size moved since it was last checked).

        Raises
        ------
        DataError
            A missing or truncated shard, counts that do not add up, or a shard changed since
            the split was made.
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
        files = [self.path / shard["file"] for shard in self.shards]
        check_unchanged(
            self.path,
            [shard["file"] for shard in self.shards],
            self.digest,
            lambda: _file_blocks(files),
            remake="make it again (pretokenize(..., overwrite=True), or delete the folder: a run "
            "makes it again from its source)",
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
