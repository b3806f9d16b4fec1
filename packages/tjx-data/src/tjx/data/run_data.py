"""The data of one training run: tokenizer, checked shards, loaders and the run's description.

`prepare_run_data` turns a source and a tokenizer spec into a `RunData`: the tokenizer (``"byte"``,
``"gpt2"``, ``"bpe"`` trained on the source and cached, or a path), the source's shards in the
shared cache (`prepare_shards`), checked to hold a sequence per split and to fit a model
vocabulary. `prepare_image_run_data` gives the digits images instead. A `RunData` makes the
run's loaders (every process its own rows of each global batch), its first validation batches
and ``data.json`` (`RunData.describe`), which `RunData.from_description` reads back, so the
program that trains and the one that evaluates share one definition of that file.

Every check raises `DataError` with ``argument`` set to the argument at fault; ``names`` words
the messages by the caller's own names for the arguments (``{"seq_len": "data.seq_len"}``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjx.data.bpe import load_tokenizer, save_tokenizer
from tjx.data.cache import cache_dir as default_cache_dir
from tjx.data.elastic import restore_loader_state
from tjx.data.errors import DataError
from tjx.data.images import ImageDataset, ImageLoader, image_batches, load_digits
from tjx.data.loader import PackedLoader, validation_batches
from tjx.data.prepare import bpe_tokenizer, prepare_shards
from tjx.data.shards import load_index
from tjx.data.tokenizers import ByteTokenizer, Tokenizer

__all__ = [
    "BUILTIN_TOKENIZERS",
    "RunData",
    "prepare_image_run_data",
    "prepare_run_data",
    "restore_loader_state",
    "run_tokenizer",
]

#: Tokenizer specs that name themselves in ``data.json``; any other tokenizer is saved beside it.
BUILTIN_TOKENIZERS = ("byte", "bytes", "gpt2")
Names = Mapping[str, str] | None


def _fault(names: Names, argument: str, message: str) -> DataError:
    """``DataError("<name of argument>: message", argument=argument)``."""
    return DataError(f"{_name(names, argument)}: {message}", argument=argument)


def _name(names: Names, argument: str) -> str:
    return (names or {}).get(argument, argument)


def _cache_root(cache_dir: str | Path | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir else default_cache_dir()


def run_tokenizer(
    spec: str,
    source: str,
    *,
    vocab: int = 2048,
    cache_dir: str | Path | None = None,
    names: Names = None,
) -> Tokenizer:
    """The tokenizer ``spec`` names for a run on ``source``.

    ``"bpe"`` is a byte-level BPE of ``vocab`` ids trained on ``source``'s train split once and
    cached (`bpe_tokenizer`); anything else goes to `load_tokenizer` (``"byte"``, ``"gpt2"``, a
    path). A corpus the BPE cannot train on is a `DataError` with ``argument="source"``, a
    tokenizer that does not load one with ``argument="tokenizer"``.
    """
    if spec != "bpe":
        try:
            return load_tokenizer(spec)
        except DataError as err:
            raise _fault(names, "tokenizer", str(err)) from None
    try:
        return bpe_tokenizer(source, vocab, _cache_root(cache_dir))
    except DataError as err:  # the corpus it trains on is the source
        raise _fault(names, "source", str(err)) from None


@dataclass(frozen=True)
class RunData:
    """What a run reads: the tokenizer and the shard folders, or the images.

    Attributes
    ----------
    source:
        The source as given (``"shakespeare"``, ``"./notes.txt"``, ``"digits"``, ...).
    tokenizer, tokenizer_spec:
        The tokenizer and how it was asked for (``"byte"``, ``"bpe"``, a path; ``None`` when a
        tokenizer object was given); both ``None`` for images.
    train_dir, val_dir:
        The shard folders of the two splits (``None`` for images, ``train_dir`` also when read
        from a description without it).
    vocab_size:
        The tokenizer's vocabulary (0 for images).
    bytes_per_token:
        UTF-8 bytes per token of the validation split (bits/byte = bits/token ÷ this).
    seq_len:
        Tokens per sequence the checks used (``None`` for images).
    cache_dir:
        The cache folder of the shards and a trained BPE (``None`` for images).
    images:
        ``{"train": ImageDataset, "validation": ImageDataset}`` of an image run.
    """

    source: str
    tokenizer: Tokenizer | None
    tokenizer_spec: str | None
    train_dir: Path | None
    val_dir: Path | None
    vocab_size: int
    bytes_per_token: float | None
    seq_len: int | None
    cache_dir: Path | None
    images: Mapping[str, ImageDataset] | None = None

    # -- loaders -----------------------------------------------------------------------------
    def train_loader(
        self,
        batch_size: int,
        *,
        seed: int,
        shuffle: bool = True,
        process_index: int = 0,
        process_count: int = 1,
        names: Names = None,
    ) -> PackedLoader | ImageLoader:
        """The resumable, shuffled training iterator (``state_dict``/``load_state_dict``).

        ``batch_size`` is the global batch: each of ``process_count`` processes reads its own
        ``batch_size // process_count`` rows of every global batch (disjoint, complete across
        processes). Images come as an `ImageLoader` (every process the same batches). A split
        too small for one batch is a `DataError` with ``argument="batch_size"``.
        """
        if self.images is not None:
            try:
                return ImageLoader(self.images["train"], batch_size, seed=seed)
            except DataError as err:
                raise _fault(names, "batch_size", str(err)) from None
        train_dir, seq_len = self._text("train_dir"), self._text("seq_len")
        try:
            return PackedLoader(
                train_dir,
                seq_len=seq_len,
                batch_size=batch_size // process_count,
                seed=seed,
                shuffle=shuffle,
                process_index=process_index,
                process_count=process_count,
            )
        except DataError as err:
            if err.argument != "batch_size":
                raise
        tokens = load_index(train_dir).tokens
        b, s = _name(names, "batch_size"), _name(names, "seq_len")
        raise _fault(
            names,
            "batch_size",
            f"the train split of {self.source!r} is too small for one batch of {batch_size} "
            f"sequences of {s} + 1 = {seq_len + 1} tokens ({tokens} tokens make "
            f"{(tokens - 1) // seq_len} such windows); lower {b} or {s}, or give more data",
        )

    def validation_batches(
        self,
        batch_size: int,
        max_batches: int | None = None,
        *,
        process_index: int = 0,
        process_count: int = 1,
    ) -> Iterator[dict[str, Any]]:
        """The first ``max_batches`` validation batches (all if ``None``), always the same.

        Tokens: `validation_batches` of this process's ``batch_size // process_count`` rows,
        the last batch padded. Images: in order, every batch full (one compiled shape), the same
        on every process.
        """
        if self.images is not None:
            batches: Iterator[dict[str, Any]] = image_batches(
                self.images["validation"], batch_size, seed=0, shuffle=False, drop_remainder=True
            )
        else:
            batches = validation_batches(
                self._text("val_dir"),
                self._text("seq_len"),
                batch_size // process_count,
                process_index=process_index,
                process_count=process_count,
            )
        return itertools.islice(batches, max_batches)

    def _text(self, field: str) -> Any:
        value = getattr(self, field)
        if value is None:
            raise DataError(f"this run's data has no {field} (an image run, or not described)")
        return value

    # -- data.json ---------------------------------------------------------------------------
    def describe(self, run_dir: str | Path) -> dict[str, Any]:
        """The run's ``data.json``: what `from_description` needs to read its data again.

        A tokenizer other than ``BUILTIN_TOKENIZERS`` (trained, or loaded from a path) is saved
        as ``run_dir/tokenizer/tokenizer.json`` and named by that file's absolute path; an
        identical saved copy is kept (a resume rewrites no file it does not change).
        """
        spec = self.tokenizer_spec if self.tokenizer is not None else None
        if self.tokenizer is not None and spec not in BUILTIN_TOKENIZERS:
            folder = Path(run_dir) / "tokenizer"
            spec = str(save_tokenizer(self.tokenizer, folder).resolve())  # type: ignore[arg-type]
        return {
            "source": self.source,
            "tokenizer": spec,
            "train_dir": str(self.train_dir) if self.train_dir else None,
            "val_dir": str(self.val_dir) if self.val_dir else None,
            "bytes_per_token": self.bytes_per_token,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
        }

    @classmethod
    def from_description(cls, info: Mapping[str, Any]) -> RunData:
        """The `RunData` a ``data.json`` describes, its tokenizer loaded (images are not).

        Missing keys read as ``None``; a tokenizer of ``None`` or ``"none"`` (older image runs
        wrote that) is none. A tokenizer that does not load is a `DataError` with
        ``argument="tokenizer"``.
        """
        spec = info.get("tokenizer")
        tokenizer = None
        if spec and spec != "none":
            try:
                tokenizer = load_tokenizer(spec)
            except DataError as err:
                raise _fault(None, "tokenizer", str(err)) from None

        def path(key: str) -> Path | None:
            return Path(info[key]) if info.get(key) else None

        vocab = info.get("vocab_size") or (tokenizer.vocab_size if tokenizer else 0)
        return cls(
            source=info.get("source") or "",
            tokenizer=tokenizer,
            tokenizer_spec=spec if tokenizer is not None else None,
            train_dir=path("train_dir"),
            val_dir=path("val_dir"),
            vocab_size=int(vocab),
            bytes_per_token=info.get("bytes_per_token"),
            seq_len=info.get("seq_len"),
            cache_dir=path("cache_dir"),
        )

    def heldout_shards(
        self, source: str | None = None, *, progress: bool = False, names: Names = None
    ) -> tuple[Path, float | None]:
        """Validation shards and bytes/token: the run's own, or ``source``'s with its tokenizer.

        ``source`` goes through `prepare_shards` in the run's cache folder exactly as the run's
        own source did (same folder, same held-out split of a local file, fresh shards after a
        local file changes). Its errors, and a run without tokenizer, are a `DataError` with
        ``argument="source"``.
        """
        if source is None:
            return self._text("val_dir"), self.bytes_per_token
        if self.tokenizer is None:
            raise _fault(names, "source", "this run has no tokenizer (an image model)")
        try:
            shards = prepare_shards(
                source,
                self.tokenizer,
                self.cache_dir,
                splits=("validation",),
                progress=progress,
            )
        except DataError as err:
            raise _fault(names, "source", str(err)) from None
        return shards.dirs["validation"], shards.bytes_per_token["validation"]


def prepare_run_data(
    source: str,
    tokenizer: str | Tokenizer,
    *,
    seq_len: int,
    tokenizer_vocab: int = 2048,
    cache_dir: str | Path | None = None,
    num_workers: int = 1,
    vocab_size: int | None = None,
    progress: bool = False,
    names: Names = None,
    max_tokens: int | None = None,
) -> RunData:
    """Tokenizer and shards of both splits of ``source``, checked for a run (cheap when cached).

    Parameters
    ----------
    source:
        Anything `load_source` reads.
    tokenizer:
        A tokenizer, or a spec for `run_tokenizer` (``"byte"``, ``"gpt2"``, ``"bpe"``, a path).
    seq_len:
        Tokens per sequence: each split must hold at least ``seq_len + 1`` tokens.
    tokenizer_vocab:
        The vocabulary of a ``"bpe"`` tokenizer.
    cache_dir:
        Where the shards (and a trained BPE) live (default: `cache_dir`).
    num_workers, progress:
        Passed to `prepare_shards`.
    vocab_size:
        A model vocabulary that must hold the tokenizer's ids (``None``: the tokenizer's).
    names:
        How messages name the arguments (default: their own names).
    max_tokens:
        Prepare at most this many tokens per split (`prepare_shards`); check it against the
        batch first with `check_max_tokens`.

    Raises
    ------
    DataError
        With ``argument`` ``"tokenizer"`` (does not load), ``"vocab_size"`` (smaller than the
        tokenizer's vocabulary) or ``"source"`` (unreadable, empty, or a split shorter than one
        sequence; a BPE that cannot train on it).
    """
    root = _cache_root(cache_dir)
    if isinstance(tokenizer, str):
        spec: str | None = tokenizer
        tok = run_tokenizer(tokenizer, source, vocab=tokenizer_vocab, cache_dir=root, names=names)
    else:
        spec, tok = ("bytes" if isinstance(tokenizer, ByteTokenizer) else None), tokenizer
    if vocab_size is not None and vocab_size < tok.vocab_size:
        raise _fault(
            names,
            "vocab_size",
            f"{vocab_size} is smaller than the tokenizer's vocabulary ({tok.vocab_size}); "
            f"leave it unset (the tokenizer's size) or use >= {tok.vocab_size}",
        )
    try:
        shards = prepare_shards(
            source, tok, root, num_workers=num_workers, progress=progress, max_tokens=max_tokens
        )
    except DataError as err:
        raise _fault(names, "source", str(err)) from None
    for split, tokens in shards.tokens.items():
        if tokens < seq_len + 1:
            raise _fault(
                names,
                "source",
                f"the {split} split of {source!r} has {tokens} tokens, fewer than one sequence "
                f"({_name(names, 'seq_len')} + 1 = {seq_len + 1})",
            )
    return RunData(
        source=source,
        tokenizer=tok,
        tokenizer_spec=spec,
        train_dir=shards.dirs["train"],
        val_dir=shards.dirs["validation"],
        vocab_size=tok.vocab_size,
        bytes_per_token=shards.bytes_per_token["validation"],
        seq_len=seq_len,
        cache_dir=root,
    )


def prepare_image_run_data(
    source: str, *, image_size: int | None = None, names: Names = None
) -> RunData:
    """The digits images of an image run (`load_digits`'s fixed train/validation split).

    ``source`` must be ``"digits"`` and ``image_size``, if given, its side (8): else a
    `DataError` with ``argument`` ``"source"`` or ``"image_size"``.
    """
    if source != "digits":
        raise _fault(names, "source", f"image runs read 'digits', got {source!r}")
    train, val = load_digits("train"), load_digits("validation")
    side = train.images.shape[1]
    if image_size is not None and image_size != side:
        raise _fault(names, "image_size", f"{image_size} does not match the digits images ({side})")
    images = {"train": train, "validation": val}
    return RunData(source, None, None, None, None, 0, None, None, None, images)
