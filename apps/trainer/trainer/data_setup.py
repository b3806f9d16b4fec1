"""Data for a run: tokenizer, pre-tokenized shards (cached, written once) and the loaders.

Shards live under ``data.cache_dir`` (default: tjx.data's cache, ``$TJX_CACHE`` or
``~/.cache/tjx/data``), where ``tjx.data.prepare_shards`` keeps them per source and tokenizer, so
every run on the same data and tokenizer, and the evaluator, share them. Nothing here writes into
the run directory, and every bad input raises before training starts.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax

from trainer.config import Config
from trainer.schema import ConfigError


@dataclass
class DataBundle:
    """What the loop needs from the data side."""

    tokenizer: Any
    train_dir: Path | None
    val_dir: Path | None
    vocab_size: int
    bytes_per_token: float | None
    images: dict[str, Any] | None = None  # ViT digits: tjx.data.ImageDataset by split


def _root(cfg: Config) -> Path:
    from tjx.data import cache

    return Path(cfg.data.cache_dir).expanduser() if cfg.data.cache_dir else cache.cache_dir()


def make_tokenizer(cfg: Config) -> Any:
    """``byte``, ``gpt2``, ``bpe`` (trained once on the train split, cached by tjx.data) or a
    path."""
    from tjx import data

    spec = cfg.data.tokenizer
    if spec != "bpe":
        return data.load_tokenizer(spec)
    try:
        return data.bpe_tokenizer(cfg.data.source, cfg.data.tokenizer_vocab, _root(cfg))
    except data.DataError as err:  # the corpus it trains on is data.source
        raise ConfigError(f"data.source: {err}") from None


def prepare(cfg: Config) -> DataBundle:
    """Tokenizer and shards for both splits (idempotent; cheap when cached).

    tjx.data owns the shard cache (key, layout, held-out split); this checks the result against
    the config and words its errors by config key.
    """
    if cfg.task == "classify":
        return _prepare_digits(cfg)
    import sys

    from tjx import data

    tok = make_tokenizer(cfg)
    if cfg.model.vocab_size is not None and cfg.model.vocab_size < tok.vocab_size:
        raise ConfigError(
            f"model.vocab_size: {cfg.model.vocab_size} is smaller than the tokenizer's "
            f"vocabulary ({tok.vocab_size}); use null or >= {tok.vocab_size}"
        )
    source = cfg.data.source
    try:
        shards = data.prepare_shards(
            source,
            tok,
            _root(cfg),
            num_workers=cfg.data.num_workers,
            progress=sys.stderr.isatty(),
        )
    except data.DataError as err:
        raise ConfigError(f"data.source: {err}") from None
    for split, tokens in shards.tokens.items():
        if tokens < cfg.data.seq_len + 1:
            raise ConfigError(
                f"data.source: the {split} split of {source!r} has {tokens} tokens, fewer "
                f"than one sequence (data.seq_len + 1 = {cfg.data.seq_len + 1})"
            )
    dirs = shards.dirs
    bpt = shards.bytes_per_token["validation"]
    return DataBundle(tok, dirs["train"], dirs["validation"], tok.vocab_size, bpt)


def train_loader(bundle: DataBundle, cfg: Config) -> Any:
    """The resumable, shuffled, packed training iterator (``state_dict``/``load_state_dict``)."""
    from tjx import data

    if bundle.images is not None:
        try:
            return data.ImageLoader(
                bundle.images["train"], cfg.data.batch_size, seed=cfg.train.seed
            )
        except data.DataError as err:
            raise ConfigError(f"data.batch_size: {err}") from None

    assert bundle.train_dir is not None
    # Each process reads its own rows of every global batch (disjoint, complete across hosts);
    # `tjx.parallel.place_batch` assembles them into one array on the mesh.
    try:
        return data.PackedLoader(
            bundle.train_dir,
            seq_len=cfg.data.seq_len,
            batch_size=cfg.data.batch_size // jax.process_count(),
            seed=cfg.train.seed,
            shuffle=cfg.data.shuffle,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    except data.DataError as err:  # its advice names the loader's arguments, not config keys
        raise ConfigError(
            f"data.batch_size: the train split of {cfg.data.source!r} is too small for one batch "
            f"of {cfg.data.batch_size} sequences of data.seq_len + 1 = {cfg.data.seq_len + 1} "
            f"tokens ({str(err).split(';')[0]}); lower data.batch_size or data.seq_len, or give "
            "more data"
        ) from None


def restore_loader(loader: Any, state: dict[str, Any]) -> None:
    """Continue ``loader`` from a checkpoint's data state, on any process of the run.

    The checkpoint holds process 0's loader state (JSON items are written by the primary only).
    Every process steps in lockstep, so all are at the same (epoch, step) and differ only in
    ``process_index``: each takes the saved position with its own index. A different process
    count or per-process batch still fails in ``load_state_dict`` (a different row split).
    """
    if "process_index" in state:
        state = {**state, "process_index": jax.process_index()}
    loader.load_state_dict(state)


def val_batches(bundle: DataBundle, cfg: Config, max_batches: int | None) -> Iterator[Any]:
    """The first ``max_batches`` validation batches, always in the same order."""
    from tjx import data

    if bundle.images is not None:  # in order, every batch full (one compiled shape)
        batches: Iterator[Any] = data.image_batches(
            bundle.images["validation"],
            cfg.eval.batch_size,
            seed=0,
            shuffle=False,
            drop_remainder=True,
        )
    else:
        assert bundle.val_dir is not None
        batches = data.validation_batches(
            bundle.val_dir,
            cfg.data.seq_len,
            cfg.eval.batch_size // jax.process_count(),
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
    yield from itertools.islice(batches, max_batches)


def _prepare_digits(cfg: Config) -> DataBundle:
    from tjx import data

    if cfg.data.source != "digits":
        raise ConfigError(f"data.source: the vit model reads 'digits', got {cfg.data.source!r}")
    train, val = data.load_digits("train"), data.load_digits("validation")
    if train.images.shape[1] != cfg.model.image_size:
        raise ConfigError(
            f"model.image_size: {cfg.model.image_size} does not match the digits images "
            f"({train.images.shape[1]})"
        )
    return DataBundle(None, None, None, 0, None, {"train": train, "validation": val})


def describe(bundle: DataBundle, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """``data.json`` for the evaluator: tokenizer (saved into the run dir if trained), shards."""
    tokenizer: str | None = cfg.data.tokenizer if bundle.tokenizer is not None else None
    if bundle.tokenizer is not None and cfg.data.tokenizer not in ("byte", "bytes", "gpt2"):
        from tjx import data

        # An identical saved copy (a resume) is kept: a resume rewrites no file it does not change.
        tokenizer = str(data.save_tokenizer(bundle.tokenizer, run_dir / "tokenizer").resolve())
    return {
        "source": cfg.data.source,
        "tokenizer": tokenizer,
        "train_dir": str(bundle.train_dir) if bundle.train_dir else None,
        "val_dir": str(bundle.val_dir) if bundle.val_dir else None,
        "bytes_per_token": bundle.bytes_per_token,
        "vocab_size": bundle.vocab_size,
        "seq_len": cfg.data.seq_len,
        "cache_dir": str(_root(cfg)) if cfg.task != "classify" else None,
    }
