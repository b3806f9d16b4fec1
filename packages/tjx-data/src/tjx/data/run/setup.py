"""A run's data from its `DataConfig`: the checked mixture, the tokenizer, the prepared data of
its format (text windows, a weighted mixture, chat or preference rows, the digits images) and the
training loader, checked against the run's length.

Each function reads the settings of one `DataConfig` and calls the preparing functions
(`prepare_run_data`, `prepare_mixture_run_data`, `prepare_chat_run_data`,
`prepare_image_run_data`) with them, so an app passes its ``data:`` section as it is. Errors are
`DataError`\\ s naming the argument at fault; ``names`` words them in the caller's keys
(``{"seq_len": "data.seq_len", "steps": "train.steps"}``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tjx.data.bpe import load_tokenizer
from tjx.data.builtin import SPLITS
from tjx.data.cache import Staging, staged
from tjx.data.chat.run import ChatRunData, prepare_chat_run_data
from tjx.data.errors import DataError
from tjx.data.mixture import MixtureSource, check_mixture
from tjx.data.run.config import DataConfig
from tjx.data.run.data import RunData
from tjx.data.run.prepare import prepare_image_run_data, prepare_mixture_run_data, prepare_run_data
from tjx.data.run.tokenizer import Names, fault, name_of, run_tokenizer
from tjx.data.sources import is_local_source
from tjx.data.sources.local import READ, SUFFIXES, Compressed, compressions, left_out_files
from tjx.data.tokenizers import Tokenizer

__all__ = [
    "compressed_files",
    "compressions_of",
    "config_tokenizer",
    "config_vocab",
    "describe_sources",
    "left_out_note",
    "left_out_summary",
    "prepare_run",
    "run_loader",
    "run_sources",
    "truncation_summary",
]


def run_sources(config: DataConfig, *, names: Names = None) -> list[MixtureSource] | None:
    """``config.sources`` as a checked mixture (`check_mixture`); ``None``: one ``source``.

    Raises
    ------
    DataError
        With ``argument="sources"``: an entry `check_mixture` refuses.
    """
    if config.sources is None:
        return None
    return check_mixture(config.sources, key=name_of(names, "sources"))


def describe_sources(config: DataConfig, *, names: Names = None) -> str:
    """What a run reads, for its progress lines: the source, or the mixture's names and weights
    (``"a mixture of web (3), code (1)"``)."""
    parts = run_sources(config, names=names)
    if parts is None:
        return config.source
    return "a mixture of " + ", ".join(f"{p.name} ({p.weight:g})" for p in parts)


def compressions_of(config: DataConfig) -> Compressed:
    """The compressed files ``config``'s local sources read: none without ``compressed``, else
    every kind, or all but ``.zst`` without ``zstd`` (what tjx-data 0.23 read).

    >>> sorted(compressions_of(DataConfig(zstd=False))), compressions_of(DataConfig())
    (['.bz2', '.gz', '.xz'], True)
    """
    if not config.compressed:
        return False
    return True if config.zstd else compressions(True) - {".zst"}


def left_out_summary(config: DataConfig, *, names: Names = None) -> str | None:
    """`left_out_note` of the run's sources (its ``source``, or its mixture's), in one line for
    the run's output; ``None`` when its folders and globs leave no file out."""
    parts = run_sources(config, names=names)
    sources = [config.source] if parts is None else [p.source for p in parts]
    return left_out_note(sources, compressed=compressions_of(config), names=names)


def left_out_note(
    sources: list[str], *, compressed: Compressed = True, names: Names = None
) -> str | None:
    """The files of other types that the local folders and globs among ``sources`` hold but that
    are not read (`left_out_files`: a ``.json``, a ``.csv``, a ``.parquet.gz``; with
    ``compressed=False`` a ``.jsonl.gz`` too), both splits, in one line for a run's output, so
    that none is skipped without a word; ``None`` when there are none.

    A source that lists nothing is left to its preparation, which names it.
    """
    left = _left_out(sources, compressed)
    if not left:
        return None
    found = sorted(left)
    shown = ", ".join(str(path) for path in found[:3])
    more = f" and {len(found) - 3} more" if len(found) > 3 else ""
    read = compressions(compressed)
    if read == compressions(True):
        reads = f"tjx reads {READ}; convert them to one of these to read them"
    elif not read:
        flag = _off(name_of(names, "compressed"))
        reads = f"this run reads {', '.join(SUFFIXES)} files and, as {flag}, no compressed one"
    else:  # zstd=false: the compressions before tjx-data 0.24
        flag = _off(name_of(names, "zstd"))
        reads = (
            f"this run reads {', '.join(SUFFIXES)} files, compressed too ("
            f"{', '.join(sorted(read))}) but, as {flag}, no .zst one"
        )
    return f"left out {len(found)} file(s) of other types: {shown}{more} ({reads})"


def _off(name: str) -> str:
    """A switch named ``name`` turned off, as its caller writes it: ``data.zstd=false``, or a
    command line's ``--no-zstd`` (``name`` ``--zstd``)."""
    return f"--no-{name[2:]}" if name.startswith("--") else f"{name}=false"


def compressed_files(sources: list[str], among: Compressed = True) -> list[Path]:
    """The files that the local folders and globs among ``sources`` read only as they read the
    compressed files ``among`` (True: every compression; ``{".zst"}``), both splits, sorted:
    what a run started before tjx-data 0.23 (which read none), or before 0.24 (which read no
    ``.zst``), would read now. A source that lists nothing has none.
    """
    without = compressions(True) - compressions(among)
    return sorted(_left_out(sources, without) - _left_out(sources, True))


def _left_out(sources: list[str], compressed: Compressed) -> set[Path]:
    """`left_out_files` of both splits of the local sources among ``sources``."""
    left: set[Path] = set()
    for source in sources:
        for split in SPLITS if is_local_source(source) else ():
            try:
                left.update(left_out_files(source, split, compressed=compressed))
            except DataError:
                continue  # a source with no file: its preparation says so, with the fix
    return left


def config_tokenizer(config: DataConfig, *, names: Names = None) -> Tokenizer:
    """`run_tokenizer` of ``config.tokenizer``: ``byte``, ``gpt2``, ``bpe`` (trained once on the
    source, or a mixture's first source, and cached) or a path."""
    parts = run_sources(config, names=names)
    source = config.source if parts is None else parts[0].source
    field = config.text_field if parts is None else parts[0].text_field or config.text_field
    return run_tokenizer(config.tokenizer, source, vocab=config.tokenizer_vocab,
                         cache_dir=config.cache_dir, names=names,
                         compressed=compressions_of(config), text_field=field)  # fmt: skip


def config_vocab(config: DataConfig) -> int:
    """The vocabulary `config_tokenizer` gives, read without preparing anything: a ``bpe`` not
    trained yet counts its ``tokenizer_vocab`` ids; any other tokenizer is loaded.

    Raises
    ------
    DataError
        `load_tokenizer`'s, for a tokenizer that does not load.
    """
    if config.tokenizer == "bpe":
        return int(config.tokenizer_vocab)
    return int(load_tokenizer(config.tokenizer).vocab_size)


def prepare_run(
    config: DataConfig,
    *,
    images: bool = False,
    image_size: int | None = None,
    num_channels: int = 1,
    vocab_size: int | None = None,
    progress: bool = False,
    names: Names = None,
    steps: int | None = None,
    check: Callable[[RunData | ChatRunData], object] | None = None,
) -> RunData | ChatRunData:
    """The tokenizer and checked data of both splits (of every mixture source), cheap when
    cached.

    Parameters
    ----------
    config:
        The run's data settings; ``format`` picks text windows or chat/preference rows.
    images:
        An image model's run: the digits images (``source`` must be ``"digits"``), whatever
        ``format`` says.
    image_size, num_channels:
        An image model's input: ``image_size`` must be the digits' side (``None``: not checked),
        ``num_channels`` 1 (they are grey).
    vocab_size:
        A model vocabulary that must hold the tokenizer's ids (``None``: the tokenizer's).
    progress:
        Show the tokenizing progress (`prepare_shards`).
    names:
        How messages name the arguments.
    steps:
        The run's steps: its training loader (`run_loader`) must give a batch (and ``steps``
        of them where a mixture drops its exhausted sources). Checked before anything newly
        prepared is published, so data a run refuses leaves the cache as it was; ``None``: not
        checked (the other checks still come first).
    check:
        The caller's own check of newly prepared data, called with the run (reading its
        folders where they lie before publishing) after tjx.data's: what it raises leaves the
        cache as it was. An app whose run needs more of its data than tjx.data knows of (so
        many batches) checks it here.

    Raises
    ------
    DataError
        As the preparing function of the format raises it (and `run_loader`, with ``steps``);
        ``argument="num_channels"`` for an image model that is not grey.
    """
    parts = run_sources(config, names=names)
    if images:
        digits = prepare_image_run_data(config.source, image_size=image_size, names=names)
        if num_channels != 1:
            raise fault(
                names,
                "num_channels",
                f"the digits images are grey (1 channel), the model reads {num_channels}; set "
                f"{name_of(names, 'num_channels')}=1",
            )
        return digits
    # Everything new is built aside and published only once the run's checks passed.
    with staged() as stage:
        run = _prepare_text_or_chat(config, parts, stage, vocab_size, progress, names)
        if stage.pending and (steps is not None or check is not None):
            # What is cached was checked when it was made.
            staged_run = _where_staged(run, stage)
            if steps is not None:
                run_loader(staged_run, config, seed=0, steps=steps, names=names)
            if check is not None:
                check(staged_run)
    return run


def _prepare_text_or_chat(
    config: DataConfig,
    parts: list[MixtureSource] | None,
    stage: Staging,
    vocab_size: int | None,
    progress: bool,
    names: Names,
) -> RunData | ChatRunData:
    if config.format != "text":  # conversations or preference pairs (tjx.data's chat modules)
        return prepare_chat_run_data(
            config.source,
            config.tokenizer,
            kind=config.format,
            seq_len=config.seq_len,
            cache_dir=config.cache_dir,
            tokenizer_vocab=config.tokenizer_vocab,
            messages_field=config.messages_field,
            names=names,
            staging=stage,
            compressed=compressions_of(config),
        )
    common: dict[str, Any] = {
        "seq_len": config.seq_len,
        "tokenizer_vocab": config.tokenizer_vocab,
        "cache_dir": config.cache_dir,
        "vocab_size": vocab_size,
        "num_workers": config.num_workers,
        "progress": progress,
        "max_tokens": config.max_tokens,
        "names": names,
        "staging": stage,
        "compressed": compressions_of(config),
        "text_field": config.text_field,
    }
    if parts is not None:
        exhausted = config.on_exhausted
        return prepare_mixture_run_data(parts, config.tokenizer, on_exhausted=exhausted, **common)
    return prepare_run_data(config.source, config.tokenizer, **common)


def _where_staged(run: RunData | ChatRunData, stage: Staging) -> RunData | ChatRunData:
    """``run`` reading its folders where they lie before publishing (`Staging.where`)."""

    def at(path: Path | None) -> Path | None:
        return None if path is None else stage.where(path)

    if isinstance(run, ChatRunData):
        return dataclasses.replace(run, train_dir=stage.where(run.train_dir),
                                   val_dir=stage.where(run.val_dir))  # fmt: skip
    mixture = run.mixture and tuple(
        dataclasses.replace(p, train_dir=stage.where(p.train_dir), val_dir=stage.where(p.val_dir))
        for p in run.mixture
    )
    return dataclasses.replace(
        run, train_dir=at(run.train_dir), val_dir=at(run.val_dir), mixture=mixture
    )


def run_loader(
    run: RunData | ChatRunData,
    config: DataConfig,
    *,
    seed: int,
    steps: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    names: Names = None,
) -> Any:
    """The resumable training loader of ``run`` at ``config.batch_size`` (this process's rows of
    each global batch), checked to last ``steps`` batches (``None``: not checked).

    A mixture that drops its exhausted sources ends; one that would end before ``steps`` is
    refused here, before a run writes anything, rather than stopping it half-way: a `DataError`
    with ``argument="on_exhausted"`` (the loader's own errors as ``run.train_loader`` raises
    them).
    """
    loader = run.train_loader(
        config.batch_size,
        seed=seed,
        shuffle=config.shuffle,
        process_index=process_index,
        process_count=process_count,
        names=names,
        **({"exclude": config.exclude} if config.exclude else {}),
    )
    if steps is None:
        return loader
    rows, needed = getattr(loader, "total_rows", None), steps * config.batch_size
    if rows is not None and rows < needed:
        steps_key, batch_key = name_of(names, "steps"), name_of(names, "batch_size")
        raise fault(
            names,
            "on_exhausted",
            f"with drop the sources give {rows} rows in all, and "
            f"{steps_key} × {batch_key} = {steps} × {config.batch_size} = {needed}; use "
            f"{steps_key} <= {rows // config.batch_size}, or {name_of(names, 'on_exhausted')}"
            "=repeat",
        )
    return loader


def truncation_summary(loader: Any, config: DataConfig, *, names: Names = None) -> str | None:
    """What a chat loader's truncation rule did, in one line for a run's log (``None``: a loader
    that truncates nothing): rows kept, cut to ``seq_len + 1`` and dropped, and how full the
    packed rows are."""
    cut = getattr(loader, "truncation", None)
    if cut is None:
        return None
    fill = f", rows {loader.fill:.0%} full" if hasattr(loader, "fill") else ""
    return (
        f"{cut.rows:,} {config.format} rows kept, {cut.truncated:,} cut to "
        f"{name_of(names, 'seq_len')} + 1, {cut.dropped:,} dropped (no trained token left){fill}"
    )
