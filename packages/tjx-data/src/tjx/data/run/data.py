"""The data of one training run: tokenizer, checked shards, loaders and the run's description.

`tjx.data.run.prepare` makes a `RunData` (one source, a weighted mixture, or the digits images).
A `RunData` makes the run's loaders (every process its own rows of each global batch), its
first validation batches and ``data.json`` (`RunData.describe`), which
`RunData.from_description` reads back, so the program that trains and the one that evaluates
share one definition of that file.

Every check raises `DataError` with ``argument`` set to the argument at fault; ``names`` words
the messages by the caller's own names for the arguments (``{"seq_len": "data.seq_len"}``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tjx.data.bpe import load_tokenizer, save_tokenizer
from tjx.data.documents import exclude_ranges, load_documents
from tjx.data.elastic import restore_loader_state
from tjx.data.errors import DataError
from tjx.data.images import ImageDataset, ImageLoader, image_batches
from tjx.data.loader import PackedLoader, validation_batches
from tjx.data.mixture import MixturePart
from tjx.data.mixture_loader import MixtureLoader, mixture_validation_batches
from tjx.data.prepare import prepare_shards
from tjx.data.run.tokenizer import Names, fault, name_of, source_or_field
from tjx.data.shards import load_index
from tjx.data.tokenizers import Tokenizer
from tjx.data.urls import is_url

__all__ = ["BUILTIN_TOKENIZERS", "RunData", "restore_loader_state"]

#: Tokenizer specs that name themselves in ``data.json``; any other tokenizer is saved beside it.
BUILTIN_TOKENIZERS = ("byte", "bytes", "gpt2")


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
    mixture, on_exhausted:
        The prepared sources of a weighted mixture (``source`` then names them all,
        ``train_dir``/``val_dir`` are ``None`` and ``bytes_per_token`` is the weights' mean of
        theirs), and what a source that has given every window does (`MixtureLoader`).
    text_field:
        The field or column its rows' text was read from (`prepare_shards`); ``data.json``
        names it only when it is not ``text``.
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
    mixture: tuple[MixturePart, ...] | None = None
    on_exhausted: str = "repeat"
    text_field: str = "text"

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
        exclude: Sequence[int] = (),
    ) -> PackedLoader | ImageLoader | MixtureLoader:
        """The resumable, shuffled training iterator (``state_dict``/``load_state_dict``).

        ``batch_size`` is the global batch: each of ``process_count`` processes reads its own
        ``batch_size // process_count`` rows of every global batch (disjoint, complete across
        processes). Images come as an `ImageLoader` (every process the same batches). A split
        too small for one batch is a `DataError` with ``argument="batch_size"``. ``exclude``:
        documents of the train split (their numbers, `tjx.data.documents`) whose tokens are
        never targets; a number the split lacks is a `DataError` with ``argument="exclude"``.
        """
        if self.images is not None:
            try:
                return ImageLoader(self.images["train"], batch_size, seed=seed)
            except DataError as err:
                raise fault(names, "batch_size", str(err)) from None
        if self.mixture is not None:
            return self._mixture_loader(batch_size, seed, process_index, process_count, names)
        train_dir, seq_len = self._text("train_dir"), self._text("seq_len")
        ranges = None
        if exclude:
            try:
                ranges = exclude_ranges(load_documents(train_dir), exclude)
            except DataError as err:
                raise fault(names, "exclude", str(err)) from None
        try:
            return PackedLoader(
                train_dir,
                seq_len=seq_len,
                batch_size=batch_size // process_count,
                seed=seed,
                shuffle=shuffle,
                process_index=process_index,
                process_count=process_count,
                exclude=ranges,
            )
        except DataError as err:
            if err.argument != "batch_size":
                raise
        tokens = load_index(train_dir).tokens
        b, s = name_of(names, "batch_size"), name_of(names, "seq_len")
        raise fault(
            names,
            "batch_size",
            f"the train split of {self.source!r} is too small for one batch of {batch_size} "
            f"sequences of {s} + 1 = {seq_len + 1} tokens ({tokens} tokens make "
            f"{(tokens - 1) // seq_len} such windows); lower {b} or {s}, or give more data",
        )

    def _mixture_loader(
        self, batch_size: int, seed: int, process_index: int, process_count: int, names: Names
    ) -> MixtureLoader:
        parts = self.mixture or ()
        try:
            return MixtureLoader(
                [(p.name, p.train_dir, p.weight) for p in parts],
                seq_len=self._text("seq_len"),
                batch_size=batch_size // process_count,
                seed=seed,
                process_index=process_index,
                process_count=process_count,
                on_exhausted=self.on_exhausted,
            )
        except DataError as err:  # a source too small for one row, sources tokenized apart
            raise fault(names, "sources", str(err)) from None

    def mixture_validation(
        self,
        batch_size: int,
        max_batches: int | None = None,
        *,
        process_index: int = 0,
        process_count: int = 1,
    ) -> dict[str, tuple[Iterator[dict[str, Any]], float | None]]:
        """Each mixture source's first ``max_batches`` held-out batches and its bytes/token,
        by name (``val_loss/<name>``); as `validation_batches` does for one source."""
        if self.mixture is None:
            raise DataError("this run's data is one source, not a mixture", argument="sources")
        batches = mixture_validation_batches(
            [(p.name, p.val_dir) for p in self.mixture],
            self._text("seq_len"),
            batch_size // process_count,
            process_index=process_index,
            process_count=process_count,
        )
        return {
            p.name: (itertools.islice(batches[p.name], max_batches), p.bytes_per_token)
            for p in self.mixture
        }

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
            if is_url(run_dir):  # a run directory in object storage: the object's URL
                url = f"{str(run_dir).rstrip('/')}/tokenizer"
                spec = str(save_tokenizer(self.tokenizer, url))  # type: ignore[arg-type]
            else:
                saved = save_tokenizer(self.tokenizer, Path(run_dir) / "tokenizer")  # type: ignore[arg-type]
                spec = str(Path(saved).resolve())
        return {
            "source": self.source,
            "tokenizer": spec,
            "train_dir": str(self.train_dir) if self.train_dir else None,
            "val_dir": str(self.val_dir) if self.val_dir else None,
            "bytes_per_token": self.bytes_per_token,
            "vocab_size": self.vocab_size,
            "seq_len": self.seq_len,
            "cache_dir": str(self.cache_dir) if self.cache_dir else None,
            **({} if self.text_field == "text" else {"text_field": self.text_field}),
            **(
                {}
                if self.mixture is None
                else {
                    "mixture": [p.describe() for p in self.mixture],
                    "on_exhausted": self.on_exhausted,
                }
            ),
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
                raise fault(None, "tokenizer", str(err)) from None

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
            mixture=(
                None
                if info.get("mixture") is None
                else tuple(MixturePart.from_description(p) for p in info["mixture"])
            ),
            on_exhausted=str(info.get("on_exhausted") or "repeat"),
            text_field=str(info.get("text_field") or "text"),
        )

    def heldout_shards(
        self, source: str | None = None, *, progress: bool = False, names: Names = None
    ) -> tuple[Path, float | None]:
        """Validation shards and bytes/token: the run's own, or ``source``'s with its tokenizer.

        ``source`` goes through `prepare_shards` in the run's cache folder exactly as the run's
        own source did (same folder, same held-out split of a local file, the same text field,
        fresh shards after a local file changes). Its errors, and a run without tokenizer, are a
        `DataError` with ``argument="source"``.
        """
        if source is None and self.mixture is not None:
            raise fault(
                names,
                "source",
                "this run trained on a mixture ("
                + ", ".join(f"{p.name}: {p.source}" for p in self.mixture)
                + f"); name the held-out data to score, e.g. {self.mixture[0].source}",
            )
        if source is None:
            return self._text("val_dir"), self.bytes_per_token
        if self.tokenizer is None:
            raise fault(names, "source", "this run has no tokenizer (an image model)")
        try:
            shards = prepare_shards(
                source,
                self.tokenizer,
                self.cache_dir,
                splits=("validation",),
                progress=progress,
                text_field=self.text_field,
            )
        except DataError as err:
            raise fault(names, source_or_field(err), str(err)) from None
        return shards.dirs["validation"], shards.bytes_per_token["validation"]
