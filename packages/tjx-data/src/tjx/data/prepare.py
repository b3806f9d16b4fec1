"""Shards of a source for a tokenizer in the shared cache, prepared once for every program.

The trainer and the evaluator both call `prepare_shards`, so the same source and tokenizer map to
the same folder, with the same held-out split, whoever asks first. Layout under the cache folder
(``cache_dir()``, i.e. ``$TJX_CACHE`` or ``~/.cache/tjx/data``, unless one is given)::

    shards/<shard_key(source)>-<tokenizer fingerprint[:12]>/<split>/   index.json + shard_*.bin
    tokenizers/<slug(source)>-bpe<vocab_size>/tokenizer.json          (bpe_tokenizer)

`shard_key` is a readable slug of the source plus, for local files, a hash of the path, size and
modification time of every file the source reads, so an edited local corpus gets fresh shards
instead of the stale ones.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjx.data.bpe import load_tokenizer, train_bpe
from tjx.data.cache import Staging, atomic_prepare, cache_root, staged
from tjx.data.documents import Origin
from tjx.data.errors import DataError
from tjx.data.pretokenize import pretokenize
from tjx.data.shards import ShardIndex, load_index
from tjx.data.sources import Documents, is_local_source, load_source
from tjx.data.sources.local import Compressed, resolve_files
from tjx.data.tokenizers import Tokenizer

__all__ = [
    "SPLITS",
    "PreparedShards",
    "bpe_tokenizer",
    "check_max_tokens",
    "held_out",
    "held_out_located",
    "needs_held_out",
    "prepare_shards",
    "shard_key",
    "slug",
    "split_documents",
]

SPLITS = ("train", "validation")


class SplitFolders:
    """The folder of each prepared split: ``root / split`` for each split in ``indexes`` (shared
    by the prepared shards and the prepared chat sequences, which lay their splits out alike)."""

    root: Path
    indexes: Mapping[str, Any]

    @property
    def dirs(self) -> dict[str, Path]:
        """The folder of each split (what the loaders of its kind read)."""
        return {split: self.root / split for split in self.indexes}


@dataclass(frozen=True)
class PreparedShards(SplitFolders):
    """The shards `prepare_shards` made or found.

    Attributes
    ----------
    source:
        The source as given (``"shakespeare"``, ``"./notes.txt"``, a hub name, ...).
    key:
        The folder name under ``<cache>/shards/``: ``<shard_key(source)>-<fingerprint[:12]>``.
    root:
        That folder; split ``s`` is ``root / s``.
    indexes:
        The `ShardIndex` of every prepared split.
    held_out:
        Whether the splits were cut from the source's documents by `held_out` (a local source
        without a validation split of its own).
    """

    source: str
    key: str
    root: Path
    indexes: Mapping[str, ShardIndex]
    held_out: bool

    @property
    def tokens(self) -> dict[str, int]:
        """Tokens per split, one EOS per document included."""
        return {split: index.tokens for split, index in self.indexes.items()}

    @property
    def bytes_per_token(self) -> dict[str, float]:
        """UTF-8 bytes per token of each split (bits/byte = bits/token ÷ this)."""
        return {split: float(index.bytes_per_token) for split, index in self.indexes.items()}


def _root(cache_dir: str | Path | None) -> Path:
    return cache_root(cache_dir)  # what killed preparations left there is removed first


def slug(text: str) -> str:
    """A folder-name-safe, stable name for ``text``: its last 40 safe characters and a hash.

    The hash is of the whole text, so two sources whose readable parts agree still differ.
    """
    readable = re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[-40:]
    return f"{readable}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def shard_key(source: str, *, compressed: Compressed = True) -> str:
    """The cache key of a source's shards, without the tokenizer.

    Built-in corpora and hub names are keyed by `slug` of the name (their contents are pinned by
    version or by the hub). Local sources add a hash of the resolved path, size and modification
    time (ns) of every file of both splits (as `resolve_files` with ``compressed`` lists them),
    so editing, adding or removing a file changes the key.
    """
    if not is_local_source(source):
        return slug(source)
    stamps = set()
    for split in SPLITS:
        try:
            files = resolve_files(source, split, compressed=compressed)
        except DataError:
            continue  # reported, with the fix, when the split is read
        for path in files:
            stat = path.stat()
            stamps.add(f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    signature = hashlib.sha256("\n".join(sorted(stamps)).encode()).hexdigest()[:12]
    return f"{slug(source)}-{signature}"


def needs_held_out(source: str, *, compressed: Compressed = True) -> bool:
    """Whether ``source`` is local and has no validation split of its own.

    True for a file, glob or folder without a ``{split}`` pattern and without a ``validation/``
    sub-folder: both splits would read the very same files.

    Raises
    ------
    DataError
        If a local source matches no file.
    """
    if "{split}" in source or not is_local_source(source):
        return False
    train = resolve_files(source, "train", compressed=compressed)
    return train == resolve_files(source, "validation", compressed=compressed)


def held_out(docs: list[str], split: str) -> list[str]:
    """A fixed train/validation cut of documents that come without a validation split.

    With ≥ 10 documents every 10th document (indices 9, 19, ...) is validation; with fewer, the
    last 10 % of each document's characters is (cut after a line break when one lies in the
    second half), so even a single file gives both splits. ``split`` other than
    ``"validation"`` gets the rest; empty pieces are dropped.
    """
    return [text for text, _ in held_out_located([(d, None) for d in docs], split)]


def held_out_located(
    docs: list[tuple[str, Origin | None]], split: str
) -> list[tuple[str, Origin | None]]:
    """`held_out` of documents with their origins: a validation piece cut from a document's end
    starts that many bytes (and, in a text file, lines) into it."""
    if len(docs) >= 10:
        return [d for i, d in enumerate(docs) if (i % 10 == 9) == (split == "validation")]
    out: list[tuple[str, Origin | None]] = []
    for doc, origin in docs:
        cut = int(len(doc) * 0.9)
        newline = doc.rfind("\n", 0, cut)
        cut = newline + 1 if newline > len(doc) // 2 else cut
        if split == "validation":
            # a text file's document is the file itself: its lines are the file's lines
            lines = origin is not None and origin.line == 1 and origin.byte == 0
            where = None if origin is None else origin.shifted(doc[:cut], lines)
            out.append((doc[cut:], where))
        else:
            out.append((doc[:cut], origin))
    return [d for d in out if d[0]]


def split_documents(
    source: str, split: str, *, compressed: Compressed = True, text_field: str = "text"
) -> Documents:
    """The documents of ``split`` of ``source``, as `prepare_shards` tokenizes them.

    `load_source`'s split, except for a local source without a validation split
    (`needs_held_out`): then `held_out` cuts its documents into ``"train"`` and
    ``"validation"``. Like `load_source`, files are resolved and hub datasets opened now.

    Raises
    ------
    DataError
        As `load_source`; or a split other than train/validation of a held-out source.
    """
    if not needs_held_out(source, compressed=compressed):
        return load_source(source, split=split, compressed=compressed, text_field=text_field)
    if split not in SPLITS:
        raise DataError(f"{source!r} has no split {split!r}; its held-out splits are {SPLITS}")
    whole = load_source(source, split="train", compressed=compressed, text_field=text_field)
    return Documents.of_located(
        f"{source}:{split}", lambda: iter(held_out_located(list(whole.located()), split))
    )


def _read_when_built(source: str, split: str, compressed: Compressed, text_field: str) -> Documents:
    """`split_documents`, opened only when iterated: pretokenize iterates only to build a split,
    so a cached split's text is not read again and a hub dataset whose shards are cached is not
    even opened (that works offline)."""
    return Documents.of_located(
        f"{source}:{split}",
        lambda: split_documents(
            source, split, compressed=compressed, text_field=text_field
        ).located(),
    )


def _field_key(text_field: str) -> str:
    """The part of a cache key that names the text field: none for ``text`` (so the keys made
    before another could be named are found again), else ``-field-<slug>``."""
    return "" if text_field == "text" else f"-field-{slug(text_field)}"


def bpe_tokenizer(
    source: str,
    vocab_size: int,
    cache_dir: str | Path | None = None,
    *,
    progress: bool = False,
    staging: Staging | None = None,
    compressed: Compressed = True,
    text_field: str = "text",
) -> Tokenizer:
    """A byte-level BPE trained on ``source``'s train split, trained once and then cached.

    Saved as ``<cache>/tokenizers/<slug(source)>-bpe<vocab_size>/tokenizer.json``, built under a
    lock and renamed into place when complete, so concurrent processes train it once. The key
    has no file stamps: a cached tokenizer stays valid for an edited corpus (the shards, keyed
    by its fingerprint, are re-made; a resumed run keeps its tokenizer).

    Parameters
    ----------
    source:
        Anything `load_source` reads; trained on `split_documents` ``(source, "train")``, so a
        local file's held-out part stays unseen.
    vocab_size:
        Vocabulary size, 256 byte symbols and the EOS token included.
    cache_dir:
        The cache folder (default: `cache_dir`).
    progress:
        Show the tokenizers library's training progress bar.
    staging:
        Build a new tokenizer there, for its owner to publish once the data made with it passed
        its checks (default: published at once).
    compressed, text_field:
        How documents are read (`load_source`); a field other than ``text`` has its own
        tokenizer (``...-field-<slug>``).

    Raises
    ------
    DataError
        As `load_source` (missing files, unknown corpus, unreachable hub).
    ValueError
        ``vocab_size`` below 257.
    """
    folder = (
        _root(cache_dir) / "tokenizers" / f"{slug(source)}-bpe{vocab_size}{_field_key(text_field)}"
    )
    saved = folder / "tokenizer.json"

    def build(staging: Path) -> None:
        read = {"chars": 0, "to_the_end": False}

        def documents() -> Iterator[str]:
            for doc in split_documents(
                source, "train", compressed=compressed, text_field=text_field
            ):
                read["chars"] += len(doc)
                yield doc
            read["to_the_end"] = True

        try:
            tokenizer = train_bpe(documents(), vocab_size, show_progress=progress)
        except DataError:
            if not read["to_the_end"] or read["chars"]:
                raise  # the source's own error (a file that does not decode, ...)
            raise DataError(  # train_bpe's "texts are empty", said of the source
                f"empty dataset: {source} has no text in its train split to train a BPE "
                "tokenizer on"
            ) from None
        tokenizer.save(staging)

    # A folder without tokenizer.json is a save interrupted by an older tjx: train it again.
    with staged(staging) as stage:
        where = stage.place(folder, complete=lambda f: (f / "tokenizer.json").is_file())
        atomic_prepare(where, build)
        tokenizer = load_tokenizer(str(where / "tokenizer.json"))
    tokenizer.name = str(saved)  # named by its place in the cache, wherever it was built
    return tokenizer


def check_max_tokens(
    max_tokens: int | None, seq_len: int, batch_size: int, names: Mapping[str, str] | None = None
) -> None:
    """Refuse a preparation cap below one global batch, before anything is prepared.

    Parameters
    ----------
    max_tokens : int or None
        The cap (``None``: none).
    seq_len, batch_size : int
        One global batch reads ``batch_size`` windows of ``seq_len + 1`` tokens (stride
        ``seq_len``): at least ``batch_size * seq_len + 1`` tokens.
    names : mapping, optional
        The caller's names for the arguments (``{"max_tokens": "data.max_tokens"}``).

    Raises
    ------
    DataError
        ``argument="max_tokens"``: below one batch (or not positive).
    """
    if max_tokens is None:
        return
    name = (names or {}).get
    least = batch_size * seq_len + 1
    if max_tokens < least:
        raise DataError(
            f"{name('max_tokens', 'max_tokens')}: {max_tokens} tokens are fewer than one batch "
            f"({name('batch_size', 'batch_size')} {batch_size} × {name('seq_len', 'seq_len')} "
            f"{seq_len} + 1 = {least}); raise it or leave it unset",
            argument="max_tokens",
        )


def prepare_shards(
    source: str,
    tokenizer: Tokenizer,
    cache_dir: str | Path | None = None,
    *,
    splits: Iterable[str] = SPLITS,
    num_workers: int = 1,
    progress: bool = False,
    max_tokens: int | None = None,
    staging: Staging | None = None,
    compressed: Compressed = True,
    text_field: str = "text",
) -> PreparedShards:
    """Tokenize ``source``'s splits into the shared shard cache, or find them there.

    Parameters
    ----------
    source:
        Anything `load_source` reads: a built-in corpus, a local file/folder/glob, a hub name.
        A local source without a validation split is cut by `held_out`.
    tokenizer:
        The tokenizer; its fingerprint is part of the folder name.
    cache_dir:
        The cache folder (default: `cache_dir`, i.e. ``$TJX_CACHE`` or ``~/.cache/tjx/data``).
    splits:
        The splits to prepare; the folder is the same whichever are asked for, so the evaluator's
        ``("validation",)`` finds the trainer's shards.
    num_workers, progress:
        Passed to `pretokenize`.
    max_tokens:
        Prepare at most this many tokens of each split (`pretokenize`'s cap); a capped
        preparation has its own folder (``...-max<N>``), so it never passes for the whole source.
    staging:
        Build missing splits there (`Staging`), for its owner to publish once it has checked
        them (default: published when every split is made).
    compressed:
        Read a local folder's or glob's compressed files (`load_source`; False: as tjx-data
        before 0.23, none).
    text_field:
        The field (JSON Lines), column (Parquet, hub) holding a document's text (`load_source`);
        another than ``text`` has its own folder (``...-field-<slug>``).

    Returns
    -------
    PreparedShards
        Folders (where they are published), token counts, bytes/token and the key. Cheap when
        cached: a cached split's text is not read again (a hub dataset is not even opened).
        Missing splits are built beside their folders and renamed into place only when all are
        made: a failed preparation leaves nothing in the cache (splits that were there before
        stay).

    Raises
    ------
    DataError
        Missing or undecodable files, an empty split, an unknown corpus or split, an
        unreachable hub dataset.
    """
    splits = tuple(splits)
    if not splits:
        raise ValueError("splits must name at least one split")
    key = f"{shard_key(source, compressed=compressed)}-{tokenizer.fingerprint[:12]}"
    key += _field_key(text_field)
    if max_tokens is not None:
        key += f"-max{max_tokens}"
    root = _root(cache_dir) / "shards" / key
    indexes = {}
    with staged(staging) as stage:
        for split in splits:
            where = stage.place(root / split)
            indexes[split] = pretokenize(
                _read_when_built(source, split, compressed, text_field),
                tokenizer,
                where.parent,
                split=split,
                num_workers=num_workers,
                source=f"{source}:{split}",
                progress=progress,
                max_tokens=max_tokens,
            )
    if staging is None:  # published now: the indexes where they lie
        indexes = {split: load_index(root / split) for split in indexes}
    held_out = needs_held_out(source, compressed=compressed)
    return PreparedShards(source, key, root, indexes, held_out)
