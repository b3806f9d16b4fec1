"""Local text sources: ``.txt`` (one file = one document), ``.jsonl`` (one row = one document)
and ``.parquet`` (one row = one document), given as a file, a folder or a glob."""

from __future__ import annotations

import glob as globlib
import itertools
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tjx.data.documents import Origin
from tjx.data.errors import DataError

__all__ = [
    "ERRORS",
    "SUFFIXES",
    "iter_file",
    "iter_file_located",
    "left_out_files",
    "resolve_files",
]

SUFFIXES = (".txt", ".text", ".md", ".jsonl", ".parquet")
ERRORS = ("strict", "replace")


def _decode(data: bytes, path: Path, offset: int, errors: str) -> str:
    try:
        return data.decode("utf-8", errors=errors)
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}: text is not valid UTF-8 at byte offset {offset + exc.start} ({exc.reason}); "
            "convert it to UTF-8 (e.g. iconv -f LATIN1 -t UTF-8 FILE > FILE.utf8)"
        ) from None


def resolve_files(path_or_glob: str, split: str) -> list[Path]:
    """Expand a file, folder or glob (``{split}`` is replaced by the split) to sorted files.

    A folder that has a sub-folder named like the split uses that sub-folder. Hidden files and
    files with other suffixes than ``SUFFIXES`` are ignored in folders and globs (the latter are
    `left_out_files`, which a run names).

    Raises
    ------
    DataError
        If nothing exists there or no supported file matched.
    """
    spec, _, listed = _listed(path_or_glob, split)
    files = sorted(
        p for p in listed if p.is_file() and p.suffix in SUFFIXES and not p.name.startswith(".")
    )
    if not files:
        raise DataError(f"{spec}: matched no {'/'.join(SUFFIXES)} files")
    return files


def left_out_files(path_or_glob: str, split: str) -> list[Path]:
    """The files a folder or glob lists that `resolve_files` leaves out for their type (a
    ``.json``, a ``.jsonl.gz``, a ``.csv``): sorted, for a run to name rather than skip them
    silently. Hidden files and what hidden folders hold (``.git/``, ``.cache/``) are not data
    and not listed; a single file lists none (another type is refused there).

    Raises
    ------
    DataError
        As `resolve_files`, if nothing exists there.
    """
    _, root, listed = _listed(path_or_glob, split)

    def hidden(path: Path) -> bool:
        parts = path.relative_to(root).parts if root is not None else (path.name,)
        return any(part.startswith(".") for part in parts)

    return sorted(p for p in listed if p.is_file() and p.suffix not in SUFFIXES and not hidden(p))


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
        if path.suffix not in SUFFIXES:
            raise DataError(f"{path}: unsupported file type; use one of {SUFFIXES}")
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
        A line that is not JSON, named by its number.
    """
    offset = 0
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            start, offset = offset, offset + len(raw)
            line = decode(raw, number, start).strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}: line {number}: invalid JSON ({exc.msg})") from None
            yield number, start, row


def _iter_jsonl(path: Path, text_field: str, errors: str) -> Iterator[tuple[str, Origin]]:
    name = str(path.resolve())
    for number, start, row in jsonl_rows(path, lambda raw, _, at: _decode(raw, path, at, errors)):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            raise DataError(f"{path}: line {number}: no string field {text_field!r}")
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
                raise DataError(f"{path}: row {number}: no string column {text_field!r}")
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
    row's line and byte offset, a Parquet row's number; a text file is line 1, byte 0."""
    if path.suffix == ".jsonl":
        yield from _iter_jsonl(path, text_field, errors)
    elif path.suffix == ".parquet":
        yield from _iter_parquet(path, text_field)
    else:
        yield _decode(path.read_bytes(), path, 0, errors), Origin(str(path.resolve()), 1, byte=0)
