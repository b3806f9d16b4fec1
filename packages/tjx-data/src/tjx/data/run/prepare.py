"""Preparing a run's data: one source, a weighted mixture of sources, or the digits images.

`prepare_run_data` turns a source and a tokenizer spec into a `RunData`: the tokenizer (``"byte"``,
``"gpt2"``, ``"bpe"`` trained on the source and cached, or a path), the source's shards in the
shared cache (`prepare_shards`), checked to hold a sequence per split and to fit a model
vocabulary. `prepare_mixture_run_data` does that for every source of a checked mixture with one
tokenizer; `prepare_image_run_data` gives the digits images.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tjx.data.cache import Staging, cache_root, staged
from tjx.data.errors import DataError
from tjx.data.images import load_digits
from tjx.data.mixture import ON_EXHAUSTED, MixturePart, MixtureSource
from tjx.data.prepare import prepare_shards
from tjx.data.run.data import RunData
from tjx.data.run.tokenizer import Names, fault, name_of, run_tokenizer, source_or_field
from tjx.data.sources.local import Compressed
from tjx.data.tokenizers import ByteTokenizer, Tokenizer

__all__ = ["prepare_image_run_data", "prepare_mixture_run_data", "prepare_run_data"]


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
    staging: Staging | None = None,
    compressed: Compressed = True,
    text_field: str = "text",
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
    staging:
        Build what is missing (a BPE, shards) there, for its owner to publish once it has
        checked the run (`Staging`); default: published here once every check passed, so a
        refused source leaves the cache as it was.
    compressed:
        Read a local folder's or glob's compressed files (`prepare_shards`); False: as tjx-data
        before 0.23, none (a run started then goes on so).
    text_field:
        The field or column of a row that holds its text (`prepare_shards`).

    Raises
    ------
    DataError
        With ``argument`` ``"tokenizer"`` (does not load), ``"vocab_size"`` (smaller than the
        tokenizer's vocabulary) or ``"source"`` (unreadable, empty, or a split shorter than one
        sequence; a BPE that cannot train on it).
    """
    root = cache_root(cache_dir)
    with staged(staging) as stage:
        if isinstance(tokenizer, str):
            spec: str | None = tokenizer
            tok = run_tokenizer(tokenizer, source, vocab=tokenizer_vocab, cache_dir=root,
                                names=names, staging=stage, compressed=compressed,
                                text_field=text_field)  # fmt: skip
        else:
            spec, tok = ("bytes" if isinstance(tokenizer, ByteTokenizer) else None), tokenizer
        if vocab_size is not None and vocab_size < tok.vocab_size:
            raise fault(
                names,
                "vocab_size",
                f"{vocab_size} is smaller than the tokenizer's vocabulary ({tok.vocab_size}); "
                f"leave it unset (the tokenizer's size) or use >= {tok.vocab_size}",
            )
        try:
            shards = prepare_shards(source, tok, root, num_workers=num_workers, progress=progress,
                                    max_tokens=max_tokens, staging=stage, compressed=compressed,
                                    text_field=text_field)  # fmt: skip
        except DataError as err:
            raise fault(names, source_or_field(err), str(err)) from None
        for split, tokens in shards.tokens.items():
            if tokens < seq_len + 1:
                raise fault(
                    names,
                    "source",
                    f"the {split} split of {source!r} has {tokens} tokens, fewer than one "
                    f"sequence ({name_of(names, 'seq_len')} + 1 = {seq_len + 1})",
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
        text_field=text_field,
    )


def prepare_mixture_run_data(
    sources: Sequence[MixtureSource],
    tokenizer: str | Tokenizer,
    *,
    seq_len: int,
    on_exhausted: str = "repeat",
    names: Names = None,
    **options: Any,
) -> RunData:
    """Every source of a checked mixture (`check_mixture`) prepared as `prepare_run_data`
    prepares one, with one tokenizer (a ``"bpe"`` is trained on the first source).

    ``options`` are `prepare_run_data`'s other keyword arguments (``tokenizer_vocab``,
    ``cache_dir``, ``num_workers``, ``vocab_size``, ``progress``, ``max_tokens``: a cap on each
    source's splits; ``compressed``; ``text_field``: a source's own ``text_field`` wins;
    ``staging``: one `Staging` for every source, else every source's new shards are published
    together once all passed). A source's problem is a
    `DataError` with ``argument="sources"`` naming the entry (``data.sources[1].source: ...``);
    the other arguments' errors are as `prepare_run_data`'s.
    """
    if on_exhausted not in ON_EXHAUSTED:
        raise fault(names, "on_exhausted", f"{on_exhausted!r}; allowed: {', '.join(ON_EXHAUSTED)}")
    where = name_of(names, "sources")
    if not sources:
        raise fault(names, "sources", "give at least one {source, weight} entry")
    tok: str | Tokenizer = tokenizer
    runs: list[RunData] = []
    parts: list[MixturePart] = []
    with staged(options.pop("staging", None)) as stage:  # every source passes, or none is kept
        for i, item in enumerate(sources):
            own = {**(names or {}), "source": f"{where}[{i}].source"}
            field = {"text_field": item.text_field} if item.text_field is not None else {}
            if field:  # its own field, named by its entry
                own["text_field"] = f"{where}[{i}].text_field"
            try:
                run = prepare_run_data(item.source, tok, seq_len=seq_len, names=own,
                                       staging=stage, **{**options, **field})  # fmt: skip
            except DataError as err:
                if err.argument not in ("source", "text_field"):
                    raise
                raise DataError(str(err), argument="sources") from None
            tok = run.tokenizer or tok  # the first source's tokenizer serves them all
            runs.append(run)
            assert run.train_dir is not None and run.val_dir is not None
            parts.append(MixturePart(item.name, item.source, item.weight, run.train_dir,
                                     run.val_dir, run.bytes_per_token))  # fmt: skip
    first = runs[0]
    return RunData(
        source="mixture of " + ", ".join(p.name for p in parts),
        tokenizer=first.tokenizer,
        tokenizer_spec=first.tokenizer_spec,
        train_dir=None,
        val_dir=None,
        vocab_size=first.vocab_size,
        # The training stream's bytes/token: each source's, by its share of the rows.
        bytes_per_token=_mean_bytes_per_token(parts),
        seq_len=seq_len,
        cache_dir=first.cache_dir,
        mixture=tuple(parts),
        on_exhausted=on_exhausted,
        text_field=str(options.get("text_field", "text")),
    )


def _mean_bytes_per_token(parts: Sequence[MixturePart]) -> float | None:
    """The training stream's bytes/token: each source's, by its share of the rows."""
    weighted = [(p.weight, p.bytes_per_token) for p in parts]
    if any(bpt is None for _, bpt in weighted):
        return None
    return sum(w * float(bpt or 0.0) for w, bpt in weighted) / sum(w for w, _ in weighted)


def prepare_image_run_data(
    source: str, *, image_size: int | None = None, names: Names = None
) -> RunData:
    """The digits images of an image run (`load_digits`'s fixed train/validation split).

    ``source`` must be ``"digits"`` and ``image_size``, if given, its side (8): else a
    `DataError` with ``argument`` ``"source"`` or ``"image_size"``.
    """
    if source != "digits":
        raise fault(names, "source", f"image runs read 'digits', got {source!r}")
    train, val = load_digits("train"), load_digits("validation")
    side = train.images.shape[1]
    if image_size is not None and image_size != side:
        raise fault(names, "image_size", f"{image_size} does not match the digits images ({side})")
    images = {"train": train, "validation": val}
    return RunData(source, None, None, None, None, 0, None, None, None, images)
