"""Chat and preference datasets as rows, and their encoded splits in the shared cache.

Rows come from local ``.jsonl`` (one JSON object per line, compressed too: ``.jsonl.gz``,
``.json.gz``, as `tjx.data.sources.local.file_type` reads) or ``.parquet`` files, a folder or a
glob (``{split}`` and ``<folder>/<split>/`` as for text sources), or a Hugging Face hub dataset
by name (``owner/name`` or ``owner/name:config``). A local source without a validation split of
its own holds out every 10th row (rows 9, 19, ...), or its last row when it has fewer than 10.

`prepare_chat_data` encodes each split once into
``<cache>/chat/<source key>-<kind>-<tokenizer fp>-<template fp>/<split>/`` (the trainer and the
evaluator find the same folder); a cached split's rows are not read again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjx.data.cache import Staging, cache_root, staged
from tjx.data.chat.encode import ChatEncoder
from tjx.data.chat.store import KINDS, SequenceIndex, load_sequences, write_sequences
from tjx.data.errors import DataError
from tjx.data.prepare import SPLITS, SplitFolders, needs_held_out, shard_key
from tjx.data.sources import is_local_source
from tjx.data.sources.hub import hub_error, open_hub_dataset
from tjx.data.sources.local import Compressed, file_type, jsonl_rows, resolve_files

__all__ = ["PreparedSequences", "Rows", "load_rows", "prepare_chat_data", "split_rows"]


Located = Iterator[tuple[str, Any]]


@dataclass(frozen=True)
class Rows:
    """A re-iterable collection of dataset rows (dicts) labelled with where they came from.

    `located` gives each row with where a user finds it: ``"<file>: line 538"`` for a
    ``.jsonl`` file (the line an editor shows), ``"<file>: row 12"`` for a Parquet file (from 0),
    ``"row 12"`` of the split for a hub dataset.
    """

    source: str
    _factory: Callable[[], Iterator[Any]]
    _located: Callable[[], Located] | None = None

    def __iter__(self) -> Iterator[Any]:
        return self._factory()

    def located(self) -> Located:
        """``(where, row)`` of every row, in order."""
        if self._located is not None:
            return self._located()
        return ((f"row {i}", row) for i, row in enumerate(self._factory()))


def _jsonl_located(path: Path) -> Located:
    def decode(raw: bytes, number: int, offset: int) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid UTF-8 ({exc.reason})") from None

    for number, _, row in jsonl_rows(path, decode):
        yield f"{path}: line {number}", row


def _parquet_located(path: Path) -> Located:
    import datasets  # lazy: importing datasets costs ~0.3-1 s

    rows = datasets.load_dataset("parquet", data_files=str(path), split="train", streaming=True)
    for number, row in enumerate(rows):
        yield f"{path}: row {number}", row


def _local_rows(spec: str, split: str, compressed: Compressed) -> list[Path]:
    files = resolve_files(spec, split, compressed=compressed)
    text = [p for p in files if file_type(p) not in (".jsonl", ".parquet")]
    if text:
        raise DataError(
            f"{text[0]}: chat and preference data are rows (.jsonl or .parquet), not text files",
            argument="source",
        )
    return files


def load_rows(
    name_or_path: str, *, split: str = "train", compressed: Compressed = True, **hub_kwargs: Any
) -> Rows:
    """The rows of a split of a local or hub dataset (no held-out cut: see `split_rows`); a
    local folder or glob reads its compressed files unless ``compressed`` is False (as tjx-data
    before 0.23).

    Raises
    ------
    DataError
        Missing files, text files, an unreachable hub dataset (files are resolved and hub datasets
        opened now; bad JSON is reported by line when read).
    """
    label = f"{name_or_path}:{split}"
    if is_local_source(name_or_path):
        files = _local_rows(name_or_path, split, compressed)

        def located() -> Located:
            for path in files:
                read = _jsonl_located if file_type(path) == ".jsonl" else _parquet_located
                yield from read(path)

        return Rows(label, lambda: (row for _, row in located()), located)
    rows = open_hub_dataset(name_or_path, split=split, **hub_kwargs)

    def hub() -> Iterator[Any]:
        try:
            for row in rows:
                yield dict(row)
        except Exception as exc:  # pragma: no cover - needs a network failure mid-stream
            raise hub_error(name_or_path, exc) from exc

    return Rows(label, hub)


def split_rows(source: str, split: str, *, compressed: Compressed = True) -> Rows:
    """`load_rows`, with the held-out cut of a local source that has no validation split."""
    if not needs_held_out(source, compressed=compressed):
        return load_rows(source, split=split, compressed=compressed)
    if split not in SPLITS:
        raise DataError(f"{source!r} has no split {split!r}; its held-out splits are {SPLITS}")
    whole = load_rows(source, split="train", compressed=compressed)

    def cut() -> Located:
        rows = list(whole.located())  # the file's own line of each row, through the cut
        if len(rows) < 2:
            raise DataError(
                f"{source}: {len(rows)} row(s) cannot be cut into train and validation; give at "
                "least 2 rows or a validation split",
                argument="source",
            )
        last = len(rows) - 1
        for i, located in enumerate(rows):
            held = i % 10 == 9 if len(rows) >= 10 else i == last
            if held == (split == "validation"):
                yield located

    return Rows(f"{source}:{split}", lambda: (row for _, row in cut()), cut)


def _lazy(source: str, split: str, compressed: Compressed) -> Rows:
    """`split_rows`, resolved only when iterated: a cached split's files are not even listed."""
    return Rows(
        f"{source}:{split}",
        lambda: iter(split_rows(source, split, compressed=compressed)),
        lambda: split_rows(source, split, compressed=compressed).located(),
    )


@dataclass(frozen=True)
class PreparedSequences(SplitFolders):
    """The encoded splits `prepare_chat_data` made or found.

    Attributes
    ----------
    source, kind, key, root:
        The source as given, ``"chat"`` or ``"preference"``, the folder name under
        ``<cache>/chat/`` and that folder (split ``s`` is ``root / s``).
    indexes:
        The `SequenceIndex` of every prepared split.
    held_out:
        Whether the splits were cut from one set of rows (`split_rows`).
    """

    source: str
    kind: str
    key: str
    root: Path
    indexes: Mapping[str, SequenceIndex]
    held_out: bool


def prepare_chat_data(
    source: str,
    encoder: ChatEncoder,
    cache_dir: str | Path | None = None,
    *,
    kind: str = "chat",
    splits: Iterable[str] = SPLITS,
    staging: Staging | None = None,
    compressed: Compressed = True,
) -> PreparedSequences:
    """Encode ``source``'s splits into the shared cache, or find them there.

    Parameters
    ----------
    source:
        A local ``.jsonl``/``.parquet`` file, folder or glob, or a hub dataset name.
    encoder:
        The tokenizer and chat template (their fingerprints are part of the folder name).
    cache_dir:
        The cache folder (default: `tjx.data.cache_dir`).
    kind:
        ``"chat"`` (conversations, prompt/completion) or ``"preference"`` (prompt, chosen,
        rejected).
    splits:
        The splits to prepare.
    staging:
        Build missing splits there (`Staging`), for its owner to publish once it has checked
        them (default: published here once every split is made, so a bad row in any split
        leaves the cache as it was).
    compressed:
        Read a local folder's or glob's compressed files (`load_rows`).

    Raises
    ------
    DataError
        Missing files, a bad row (named by its file and line, or by split and number), an empty
        split, an unreachable hub dataset.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    splits = tuple(splits)
    if not splits:
        raise ValueError("splits must name at least one split")
    template = encoder.template.fingerprint[:12] if encoder.template is not None else "plain"
    read = shard_key(source, compressed=compressed)
    key = f"{read}-{kind}-{encoder.tokenizer.fingerprint[:12]}-{template}"
    root = cache_root(cache_dir) / "chat" / key  # what killed preparations left there goes first
    indexes = {}
    with staged(staging) as stage:
        for split in splits:
            rows = _lazy(source, split, compressed)
            try:
                indexes[split] = write_sequences(
                    rows, encoder, stage.place(root / split), kind=kind, split=split,
                    source=rows.source,
                )  # fmt: skip
            except DataError as exc:
                # A row by its number in the split, or the split itself, needs the split's name;
                # a file's line (or anything else) names its place already.
                if not str(exc).startswith(("row ", "empty dataset:")):
                    raise
                raise DataError(f"{rows.source}: {exc}", argument=exc.argument) from None
    if staging is None:  # published now: the indexes where they lie
        indexes = {split: load_sequences(root / split) for split in indexes}
    held_out = needs_held_out(source, compressed=compressed)
    return PreparedSequences(source, kind, key, root, indexes, held_out)
