"""Data for a run: tjx.data's `RunData` (tokenizer, shared shard cache, checks, per-process
loaders, ``data.json``) from the config's values, every bad input a `ConfigError` naming its key."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from typing import Any

import jax

from tjx import data
from trainer.config import Config
from trainer.schema import ConfigError

# tjx.data's argument names -> config keys: its messages name the key, err.argument the argument.
KEYS = {
    "source": "data.source",
    "tokenizer": "data.tokenizer",
    "vocab_size": "model.vocab_size",
    "seq_len": "data.seq_len",
    "batch_size": "data.batch_size",
    "image_size": "model.image_size",
    "max_tokens": "data.max_tokens",
    "sources": "data.sources",
    "on_exhausted": "data.on_exhausted",
    "data": "data.source",
}


def _keyed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` with messages by config key, its bad arguments `ConfigError`s."""
    try:
        return fn(*args, names=KEYS, **kwargs)
    except data.DataError as err:
        if err.argument not in KEYS:
            raise
        raise ConfigError(str(err)) from None


def _processes(mesh: Any = None) -> dict[str, int]:
    """This process's share of each global batch: tjx.parallel's ``batch_share`` of the run's
    mesh (processes that differ only along context/tensor load the same rows), else one share
    per process."""
    if mesh is None:
        return {"process_index": jax.process_index(), "process_count": jax.process_count()}
    from tjx import parallel

    index, count = parallel.batch_share(mesh)
    return {"process_index": index, "process_count": count}


def mixture(cfg: Config) -> list[data.MixtureSource] | None:
    """``data.sources`` as tjx.data's checked mixture (``None``: one ``data.source``)."""
    if cfg.data.sources is None:
        return None
    try:
        return data.check_mixture(cfg.data.sources, key="data.sources")
    except data.DataError as err:  # config.read_config checked it already; kept for callers
        raise ConfigError(str(err)) from None


def describe_source(cfg: Config) -> str:
    """What the run reads, for its progress lines: the source, or the mixture's names."""
    parts = mixture(cfg)
    if parts is None:
        return cfg.data.source
    return "a mixture of " + ", ".join(f"{p.name} ({p.weight:g})" for p in parts)


def make_tokenizer(cfg: Config) -> Any:
    """``byte``, ``gpt2``, ``bpe`` (trained once on data.source, or a mixture's first source,
    cached by tjx.data) or a path."""
    d, parts = cfg.data, mixture(cfg)
    source = d.source if parts is None else parts[0].source
    return _keyed(
        data.run_tokenizer, d.tokenizer, source, vocab=d.tokenizer_vocab, cache_dir=d.cache_dir
    )


def prepare(cfg: Config) -> data.RunData | data.ChatRunData:
    """Tokenizer and checked shards of both splits (of every mixture source), or the digits
    images (cheap when cached)."""
    d, m, parts = cfg.data, cfg.model, mixture(cfg)
    if cfg.task == "classify":
        images = _keyed(data.prepare_image_run_data, d.source, image_size=m.image_size)
        if m.num_channels != 1:
            raise ConfigError(
                f"model.num_channels: the digits images are grey (1 channel), the model reads "
                f"{m.num_channels}; set model.num_channels=1"
            )
        return images
    if d.format != "text":  # conversations or preference pairs (tjx.data's chat modules)
        return _keyed(
            data.prepare_chat_run_data,
            d.source,
            d.tokenizer,
            kind=d.format,
            seq_len=d.seq_len,
            cache_dir=d.cache_dir,
            tokenizer_vocab=d.tokenizer_vocab,
            messages_field=d.messages_field,
        )
    common = {
        "seq_len": d.seq_len,
        "tokenizer_vocab": d.tokenizer_vocab,
        "cache_dir": d.cache_dir,
        "vocab_size": cfg.vocab_size,  # model.vocab_size as set (None: the tokenizer's)
        "num_workers": d.num_workers,
        "progress": sys.stderr.isatty(),
        "max_tokens": d.max_tokens,
    }
    if parts is not None:
        mix = data.prepare_mixture_run_data
        return _keyed(mix, parts, d.tokenizer, on_exhausted=d.on_exhausted, **common)
    return _keyed(data.prepare_run_data, d.source, d.tokenizer, **common)


def train_loader(bundle: Any, cfg: Config, mesh: Any = None) -> Any:
    """The resumable, shuffled training iterator: this process's rows of each global batch
    (its share on ``mesh``, see `_processes`).

    A mixture that drops its exhausted sources ends; one that would end before ``train.steps``
    is refused here, before anything is written, rather than stopping the run half-way.
    """
    loader = _keyed(
        bundle.train_loader,
        cfg.data.batch_size,
        seed=cfg.train.seed,
        shuffle=cfg.data.shuffle,
        **_processes(mesh),
    )
    cut = getattr(loader, "truncation", None)  # chat data: what the truncation rule did
    if cut is not None:
        fill = f", rows {loader.fill:.0%} full" if hasattr(loader, "fill") else ""
        print(
            f"data: {cut.rows:,} {cfg.data.format} rows kept, {cut.truncated:,} cut to "
            f"data.seq_len + 1, {cut.dropped:,} dropped (no trained token left){fill}",
            flush=True,
        )
    rows, needed = getattr(loader, "total_rows", None), cfg.train.steps * cfg.data.batch_size
    if rows is not None and rows < needed:
        raise ConfigError(
            f"data.on_exhausted: with drop the sources give {rows} rows in all, and "
            f"train.steps × data.batch_size = {cfg.train.steps} × {cfg.data.batch_size} = "
            f"{needed}; use train.steps <= {rows // cfg.data.batch_size}, or "
            "data.on_exhausted=repeat"
        )
    return loader


def restore_loader(loader: Any, state: dict[str, Any], mesh: Any = None) -> None:
    """Continue ``loader`` from a checkpoint's (process 0's) loader state on this process."""
    index = _processes(mesh)["process_index"]
    data.restore_loader_state(loader, state, process_index=index)


def val_batches(
    bundle: Any, cfg: Config, max_batches: int | None, mesh: Any = None
) -> Iterator[Any]:
    """The first ``max_batches`` validation batches, always in the same order."""
    return bundle.validation_batches(cfg.eval.batch_size, max_batches, **_processes(mesh))


def val_sets(
    bundle: Any, cfg: Config, max_batches: int | None, mesh: Any = None
) -> dict[str, tuple[Iterator[Any], float | None]]:
    """A mixture's held-out batches and bytes/token by source name (``val_loss/<name>``)."""
    return bundle.mixture_validation(cfg.eval.batch_size, max_batches, **_processes(mesh))
