"""Local text sources: ``.txt`` (one file = one document), ``.jsonl`` (one row = one document)
and ``.parquet`` (one row = one document), given as a file, a folder or a glob.

Text and JSON Lines may come compressed (`COMPRESSIONS`: ``.gz``, ``.bz2``, ``.xz``, read by the
standard library, and ``.zst``, by zstandard): ``notes.txt.gz``, ``rows.jsonl.gz``, The Pile's and
SlimPajama's ``.jsonl.zst``, and ``.json.gz`` as JSON Lines, which is how C4
(``c4-train.00000-of-01024.json.gz``) and Dolma ship. A plain ``.json`` is not read: in a
dataset's folder it is more often metadata (``dataset_info.json``) than rows.
"""

from __future__ import annotations

import bz2
import glob as globlib
import gzip
import io
import itertools
import json
import logging
import lzma
import zlib
from collections.abc import Callable, Iterator, Mapping, Set
from pathlib import Path
from typing import Any

import zstandard

from tjx.data.documents import Origin
from tjx.data.errors import DataError

__all__ = [
    "COMPRESSIONS",
    "Compressed",
    "ERRORS",
    "SUFFIXES",
    "compressions",
    "file_type",
    "iter_file",
    "iter_file_located",
    "left_out_files",
    "resolve_files",
]

SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".parquet")


class _ZstdReader(io.RawIOBase):
    """A zstd file's bytes, frame after frame (pzstd and zstd -T write several). A file that
    ends inside a frame raises EOFError: zstandard's own reader returns the frames before it
    without a word, which would cut a corpus short in silence."""

    def __init__(self, path: Path) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close())
        self._maker = zstandard.ZstdDecompressor()
        self._frame: Any = None  # the frame being read (a decompressobj), None between frames
        self._pending = b""  # the input after a frame's end
        self._out = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._out:
            if not self._fill():
                return 0
        n = min(len(buffer), len(self._out))
        buffer[:n] = self._out[:n]
        self._out = self._out[n:]
        return n

    def _fill(self) -> bool:
        chunk, self._pending = self._pending or self._file.read(1 << 20), b""
        if not chunk:
            if self._frame is not None:
                raise EOFError("the file ends inside a zstd frame")
            return False
        if self._frame is None:
            self._frame = self._maker.decompressobj()
        self._out = memoryview(self._frame.decompress(chunk))
        if self._frame.eof:  # the frame ended: what follows starts the next one
            self._pending, self._frame = self._frame.unused_data, None
        return True

    def close(self) -> None:
        self._file.close()
        super().close()


#: The compressions read, by the suffix after a file's own: ``.jsonl.gz`` is ``.jsonl`` gzipped.
COMPRESSIONS: dict[str, Callable[[Path], io.BufferedIOBase]] = {
    ".gz": lambda path: gzip.open(path, "rb"),
    ".bz2": lambda path: bz2.open(path, "rb"),
    ".xz": lambda path: lzma.open(path, "rb"),
    ".zst": lambda path: io.BufferedReader(_ZstdReader(path)),
}
#: Which compressed files a source reads: True, each of `COMPRESSIONS`; False, none (as tjx-data
#: before 0.23); or those suffixes (``COMPRESSIONS`` but ``.zst``: as tjx-data 0.23).
Compressed = bool | Set[str]
#: The types that may come compressed, and what each is read as (``.json.gz`` as JSON Lines).
_COMPRESSED_TYPES = {".txt": ".txt", ".text": ".text", ".md": ".md", ".jsonl": ".jsonl",
                     ".json": ".jsonl"}  # fmt: skip
#: What a folder or glob reads, for messages.
READ = (
    f"{', '.join(SUFFIXES)} files ({', '.join(_COMPRESSED_TYPES)} ones also compressed: "
    f"{', '.join(COMPRESSIONS)})"
)
#: What a folder or glob reads with ``compressed=False``.
PLAIN = f"{', '.join(SUFFIXES)} files"
ERRORS = ("strict", "replace")


def compressions(compressed: Compressed) -> frozenset[str]:
    """The suffixes of `COMPRESSIONS` that ``compressed`` reads.

    >>> sorted(compressions(True)), compressions(False), compressions({".gz"})
    (['.bz2', '.gz', '.xz', '.zst'], frozenset(), frozenset({'.gz'}))
    """
    if isinstance(compressed, bool):
        return frozenset(COMPRESSIONS) if compressed else frozenset()
    return frozenset(compressed) & frozenset(COMPRESSIONS)


def file_type(path: Path, *, compressed: Compressed = True) -> str | None:
    """The type ``path`` is read as, one of `SUFFIXES` (``rows.json.gz`` is ``".jsonl"``), or
    None for a file tjx does not read; ``compressed=False`` reads none compressed (as tjx-data
    before 0.23), a set of suffixes those (`Compressed`).

    >>> file_type(Path("c4-train.00000-of-01024.json.gz")), file_type(Path("a.parquet.gz"))
    ('.jsonl', None)
    """
    if path.suffix not in COMPRESSIONS:
        return path.suffix if path.suffix in SUFFIXES else None
    read = path.suffix in compressions(compressed)
    return _COMPRESSED_TYPES.get(Path(path.stem).suffix) if read else None


def _open(path: Path) -> io.BufferedIOBase:
    """``path`` opened for reading its (decompressed) bytes (the caller closes it)."""
    opener = COMPRESSIONS.get(path.suffix)
    return open(path, "rb") if opener is None else opener(path)  # noqa: SIM115


#: What a compressed file that does not decompress raises (gzip's BadGzipFile is an OSError; a
#: cut file ends in EOFError).
_BROKEN = (OSError, EOFError, lzma.LZMAError, zlib.error, zstandard.ZstdError)


def _broken(path: Path, err: BaseException) -> DataError:
    return DataError(
        f"{path}: does not decompress as {path.suffix} ({err or type(err).__name__}); replace it "
        "with a complete copy (gzip -t, bzip2 -t, xz -t or zstd -t checks one)"
    )


def _read_bytes(path: Path) -> bytes:
    try:
        with _open(path) as handle:
            return handle.read()
    except _BROKEN as err:
        if path.suffix not in COMPRESSIONS:
            raise
        raise _broken(path, err) from None


def _decode(data: bytes, path: Path, offset: int, errors: str) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: text is not valid UTF-8 at byte offset {offset + exc.start} ({exc.reason}); "
            "convert it to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 FILE > FILE.utf8)"
        ) from None


def _reads(compressed: Compressed) -> str:
    """What a folder or glob reads with ``compressed``, for messages (`READ`, `PLAIN`)."""
    read = compressions(compressed)
    if read == compressions(True):
        return READ
    return PLAIN + (f" (also compressed: {', '.join(sorted(read))})" if read else "")


def resolve_files(path_or_glob: str, split: str, *, compressed: Compressed = True) -> list[Path]:
    """Expand a file, folder or glob (``{split}`` is replaced by the split) to sorted files.

    A folder that has a sub-folder named like the split uses that sub-folder. Hidden files and
    files of other types (`file_type`; with ``compressed=False`` every compressed one) are
    ignored in folders and globs (they are `left_out_files`, which a run names); a compressed
    file named alone is read, or with ``compressed=False`` matches nothing.

    Raises
    ------
    DataError
        If nothing exists there, no supported file matched, or a folder or glob lists a file and
        its compressed copy (``a.jsonl`` and ``a.jsonl.gz``: the same rows twice).
    """
    spec, _, listed = _listed(path_or_glob, split)
    files = sorted(
        p
        for p in listed
        if p.is_file()
        and file_type(p, compressed=compressed) is not None
        and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{spec}: matched no {_reads(compressed)}")
    plain = set(files)
    twice = next(
        (p for p in files if p.suffix in COMPRESSIONS and p.with_suffix("") in plain), None
    )
    if twice is not None:
        raise DataError(
            f"{spec}: {twice.with_suffix('')} and its compressed copy {twice.name} would be read "
            "both (the same data twice); remove or move one of them"
        )
    return files


def left_out_files(path_or_glob: str, split: str, *, compressed: Compressed = True) -> list[Path]:
    """The files a folder or glob lists that `resolve_files` (with ``compressed``) leaves out
    for their type (a ``.json``, a ``.csv``, a ``.parquet.gz``): sorted, for a run to name rather
    than skip them silently. Hidden files and what hidden folders hold (``.git/``, ``.cache/``)
    are not data and not listed; a single file lists none (another type is refused there).

    Raises
    ------
    DataError
        As `resolve_files`, if nothing exists there.
    """
    _, root, listed = _listed(path_or_glob, split)

    def hidden(path: Path) -> bool:
        parts = path.relative_to(root).parts if root is not None else (path.name,)
        return any(part.startswith(".") for part in parts)

    return sorted(
        p
        for p in listed
        if p.is_file() and file_type(p, compressed=compressed) is None and not hidden(p)
    )


def _listed(path_or_glob: str, split: str) -> tuple[str, Path | None, list[Path]]:
    """``(spec, folder, paths)``: the source with its split, the folder listed (None for a glob)
    and every path the folder (recursively) or glob lists, or the one supported file named."""
    spec = path_or_glob.replace("{split}", split)
    expanded = str(Path(spec).expanduser())
    if any(ch in expanded for ch in "*?["):
        return spec, None, [Path(p) for p in globlib.glob(expanded, recursive=True)]
    path = Path(expanded)
    if not path.exists():
        raise DataError(f"no such file or folder: {path}")
    if path.is_file():
        if file_type(path) is None:
            raise DataError(f"{path}: unsupported file type; tjx reads {READ}")
        return spec, None, [path]
    if (path / split).is_dir():
        path = path / split
    return spec, path, list(path.rglob("*"))


def jsonl_rows(
    path: Path, decode: Callable[[bytes, int, int], str]
) -> Iterator[tuple[int, int, Any]]:
    """``(line number, byte offset, row)`` of each non-blank line of a JSON-lines file.

    Parameters
    ----------
    path:
        The file.
    decode:
        ``decode(raw, line number, byte offset)``: the line's text (raising the caller's
        `DataError` for bytes that are not text).

    Raises
    ------
    DataError
        A line that is not JSON, named by its number (the first line of a JSON array says so);
        a compressed file that does not decompress.
    """
    offset = 0
    for number, raw in enumerate(_lines(path), start=1):
        start, offset = offset, offset + len(raw)
        line = decode(raw, number, start).strip()
        if not line:
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            array = " (a JSON array, not JSON Lines: write one object per line)"
            hint = array if number == 1 and line.startswith("[") else ""
            raise DataError(f"{path}: line {number}: invalid JSON ({exc.msg}){hint}") from None
        yield number, start, row


def _lines(path: Path) -> Iterator[bytes]:
    """The (decompressed) lines of ``path``, each with its line break."""
    try:
        with _open(path) as handle:
            yield from handle
    except _BROKEN as err:
        if path.suffix not in COMPRESSIONS:
            raise
        raise _broken(path, err) from None


def no_text(where: str, text_field: str, row: object) -> DataError:
    """The error of a row without a string ``text_field``: ``where`` (``"<file>: line 3"``) and,
    where the row has string fields, which (The Stack's ``content``: the text field to set).
    Its ``argument`` is ``"text_field"`` for a row with fields (a run's message names that
    setting first), ``None`` for a row that is no object (``[1, 2]``: the file is at fault)."""
    if not isinstance(row, Mapping):
        return DataError(f"{where}: no string field {text_field!r} (the row is no JSON object)")
    fields = [str(k) for k, v in row.items() if isinstance(v, str)]
    hint = ""
    if fields:
        shown = ", ".join(fields[:8]) + (", ..." if len(fields) > 8 else "")
        hint = f" (its string fields: {shown}: name the one that holds the text)"
    return DataError(f"{where}: no string field {text_field!r}{hint}", argument="text_field")


def _iter_jsonl(path: Path, text_field: str, errors: str) -> Iterator[tuple[str, Origin]]:
    name = str(path.resolve())
    for number, start, row in jsonl_rows(path, lambda raw, _, at: _decode(raw, path, at, errors)):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise no_text(f"{path}: line {number}", text_field, row)
        yield row[text_field], Origin(name, line=number, byte=start)


#: The logger of datasets' Parquet reader, which logs "Failed to read schema from '…' with error
#: ArrowInvalid: …" (or "Failed to read file …") before raising: tjx says it in its own line.
PARQUET_LOGGER = "datasets.packaged_modules.parquet.parquet"


class _ParquetFailureLines(logging.Filter):
    """Drops the Parquet reader's own report of a file that fails to read (tjx reports it)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Failed to read ")


def _not_parquet(path: Path, err: BaseException) -> DataError:
    first = next((s.strip() for s in str(err).splitlines() if s.strip()), type(err).__name__)
    return DataError(
        f"{path}: not a readable Parquet file ({first}); replace it with a valid Parquet file, "
        "or give text as .txt and JSON lines as .jsonl"
    )


def _iter_parquet(path: Path, text_field: str) -> Iterator[tuple[str, Origin]]:
    import datasets  # lazy: importing datasets costs ~0.3-1 s

    logger = logging.getLogger(PARQUET_LOGGER)
    quiet = _ParquetFailureLines()
    logger.addFilter(quiet)
    try:
        rows = iter(
            datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
        )
        for number in itertools.count():
            try:
                row = next(rows)
            except StopIteration:
                return
            if not isinstance(row.get(text_field), str):
                raise no_text(f"{path}: row {number}", text_field, row)
            yield row[text_field], Origin(str(path.resolve()), row=number)
    except DataError:
        raise
    except (ValueError, OSError) as err:  # Arrow's errors: ArrowInvalid, ArrowIOError, ...
        raise _not_parquet(path, err) from None
    finally:
        logger.removeFilter(quiet)


def iter_file(path: Path, *, text_field: str = "text", errors: str = "strict") -> Iterator[str]:
    """Yield the documents of one local file (see the module docstring for what a document is)."""
    for text, _ in iter_file_located(path, text_field=text_field, errors=errors):
        yield text


def iter_file_located(
    path: Path, *, text_field: str = "text", errors: str = "strict"
) -> Iterator[tuple[str, Origin]]:
    """`iter_file`'s documents, each with its `Origin`: the file (resolved) and a JSON Lines
    row's line and byte offset (in the decompressed text of a compressed file), a Parquet row's
    number; a text file is line 1, byte 0."""
    kind = file_type(path)
    if kind == ".jsonl":
        yield from _iter_jsonl(path, text_field, errors)
    elif kind == ".parquet":
        yield from _iter_parquet(path, text_field)
    else:
        yield _decode(_read_bytes(path), path, 0, errors), Origin(str(path.resolve()), 1, byte=0)
