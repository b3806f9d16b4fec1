"""Data for a run: tokenizer, pre-tokenized shards (cached, written once) and the loaders.

Shards live under ``data.cache_dir`` (default: tjx.data's cache, ``$TJX_CACHE`` or
``~/.cache/tjx/data``), where ``tjx.data.prepare_shards`` keeps them per source and tokenizer, so
every run on the same data and tokenizer, and the evaluator, share them. Nothing here writes into
the run directory, and every bad input raises before training starts.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np

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
    arrays: dict[str, np.ndarray] | None = None  # ViT digits: in-memory images/labels


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
    if bundle.arrays is not None:
        return DigitsLoader(bundle.arrays, cfg.data.batch_size, cfg.train.seed)
    from tjx import data

    assert bundle.train_dir is not None
    # Each process reads its own rows of every global batch (disjoint, complete across hosts);
    # `to_global` assembles them into one array on the mesh.
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


def to_global(batch: Any, mesh: Any) -> Any:
    """A host batch as one array on the mesh: sharded directly in a single process, assembled
    from every process's local rows in a multi-host run."""
    from tjx import parallel

    if jax.process_count() == 1:
        return parallel.shard_batch(batch, mesh)
    return parallel.host_local_to_global(batch, mesh)


def val_batches(bundle: DataBundle, cfg: Config, max_batches: int | None) -> Iterator[Any]:
    """The first ``max_batches`` validation batches, always in the same order."""
    if bundle.arrays is not None:
        yield from DigitsLoader.validation(bundle.arrays, cfg.eval.batch_size, max_batches)
        return
    from tjx import data

    assert bundle.val_dir is not None
    batches = data.validation_batches(
        bundle.val_dir,
        cfg.data.seq_len,
        cfg.eval.batch_size // jax.process_count(),
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        yield batch


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
    arrays = {
        "train_images": train.images,
        "train_labels": train.labels,
        "val_images": val.images,
        "val_labels": val.labels,
    }
    return DataBundle(None, None, None, 0, None, arrays)


class DigitsLoader:
    """Shuffled epochs over in-memory images; the state is (epoch, position)."""

    def __init__(self, arrays: dict[str, np.ndarray], batch_size: int, seed: int) -> None:
        self._x, self._y = arrays["train_images"], arrays["train_labels"]
        self._batch, self._seed = batch_size, seed
        self._epoch, self._pos = 0, 0

    def __iter__(self) -> DigitsLoader:
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._pos + self._batch > len(self._y):
            self._epoch, self._pos = self._epoch + 1, 0
        order = np.random.default_rng([self._seed, self._epoch]).permutation(len(self._y))
        idx = order[self._pos : self._pos + self._batch]
        self._pos += self._batch
        return {"images": self._x[idx], "labels": self._y[idx]}

    def state_dict(self) -> dict[str, int]:
        """JSON-serialisable position."""
        return {"epoch": self._epoch, "pos": self._pos}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from ``state``."""
        self._epoch, self._pos = int(state["epoch"]), int(state["pos"])

    @staticmethod
    def validation(
        arrays: dict[str, np.ndarray], batch_size: int, max_batches: int | None
    ) -> Iterator[dict[str, np.ndarray]]:
        """In-order validation batches (drop the last partial one)."""
        x, y = arrays["val_images"], arrays["val_labels"]
        for i in range(len(y) // batch_size):
            if max_batches is not None and i >= max_batches:
                return
            sl = slice(i * batch_size, (i + 1) * batch_size)
            yield {"images": x[sl], "labels": y[sl]}


def _saved_tokenizer(tok: Any, folder: Path) -> Path:
    """``tok`` saved in ``folder`` (its ``tokenizer.json``); an identical saved copy (same
    fingerprint: a resume) is kept as it is, so a resume rewrites no file it does not change."""
    from tjx import data

    existing = folder / "tokenizer.json"
    if existing.is_file():
        try:
            if data.load_tokenizer(str(existing)).fingerprint == tok.fingerprint:
                return existing
        except (ValueError, OSError):  # unreadable: replaced below
            pass
    return Path(tok.save(folder))


def describe(bundle: DataBundle, cfg: Config, run_dir: Path) -> dict[str, Any]:
    """``data.json`` for the evaluator: tokenizer (saved into the run dir if trained), shards."""
    tokenizer: str | None = cfg.data.tokenizer if bundle.tokenizer is not None else None
    if bundle.tokenizer is not None and cfg.data.tokenizer not in ("byte", "bytes", "gpt2"):
        tokenizer = str(_saved_tokenizer(bundle.tokenizer, run_dir / "tokenizer").resolve())
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
