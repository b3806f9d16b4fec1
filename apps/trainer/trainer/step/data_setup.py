"""Data for a run: tjx.data prepares and loads the config's ``data`` section (its `DataConfig`) on
this process's share of the mesh; every bad input a `ConfigError` naming its key."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Protocol, TypeAlias, TypeVar

import jax
import numpy as np
from jax.sharding import Mesh

from tjx import ckpt, data, parallel
from tjx.ckpt.storage import StoragePath
from trainer.config.grpo_settings import is_grpo, prompt_section
from trainer.config.schema import ConfigError
from trainer.config.typed import Config

# tjx.data's argument names -> config keys: its messages name the key, err.argument the argument.
_DATA = ("source", "tokenizer", "seq_len", "batch_size", "max_tokens", "sources", "on_exhausted",
         "exclude", "compressed", "zstd", "text_field")  # fmt: skip
KEYS = {k: f"data.{k}" for k in _DATA} | {"data": "data.source"}
KEYS |= {k: f"model.{k}" for k in ("vocab_size", "image_size", "num_channels")}

#: A run's prepared data (tjx.data's `prepare_run`): tokenizer, shards of both splits, loaders.
Bundle: TypeAlias = data.RunData | data.ChatRunData
#: A batch on the host, as the loaders give it.
HostBatch: TypeAlias = dict[str, np.ndarray]
T = TypeVar("T")


class TrainLoader(Protocol):
    """What a run needs of tjx.data's training loaders (``PackedLoader``, ``MixtureLoader``,
    ``ChatLoader``, ``PreferenceLoader``, ``ImageLoader``): the next batch, and the state a
    checkpoint keeps to resume from."""

    def __next__(self) -> HostBatch: ...

    def state_dict(self) -> Mapping[str, object]: ...


def _keyed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """``fn(*args, **kwargs)`` with messages by config key, its bad arguments `ConfigError`s."""
    try:
        return fn(*args, names=KEYS, **kwargs)
    except data.DataError as err:
        if err.argument not in KEYS:
            raise
        raise ConfigError(str(err)) from None


def shares(mesh: Mesh | None = None) -> dict[str, int]:
    """This process's share of each global batch, as tjx.data's loaders take it: tjx.parallel's
    ``batch_share`` of the run's mesh (processes that differ only along context/tensor load the
    same rows), else one share per process."""
    if mesh is None:
        return {"process_index": jax.process_index(), "process_count": jax.process_count()}

    index, count = parallel.batch_share(mesh)
    return {"process_index": index, "process_count": count}


def describe_source(section: data.DataConfig) -> str:
    """What the run reads (its ``data`` ``section``), for its progress lines: the source, or the
    mixture's names."""
    return str(_keyed(data.describe_sources, section))


def make_tokenizer(cfg: Config) -> data.Tokenizer:
    """The run's tokenizer (`tjx.data.config_tokenizer`; a bpe trained once and cached)."""
    return _keyed(data.config_tokenizer, cfg.data)


def prepare(cfg: Config) -> data.RunData | data.ChatRunData:
    """`prepare_section` of ``cfg``'s data section for its run."""
    return prepare_section(
        loader_section(cfg),
        steps=cfg.train.steps,
        vocab_size=cfg.vocab_size,
        images=cfg.image_shape,
    )


def prepare_section(
    section: data.DataConfig,
    *,
    steps: int,
    vocab_size: int | None,
    images: dict[str, int],
) -> data.RunData | data.ChatRunData:
    """Tokenizer and checked shards of both splits (of every mixture source), or the digits
    images (``images``: their size and channels; empty for text), cheap when cached, of a run's
    ``data`` ``section`` for ``steps`` steps. New data is checked to give the run's batches before
    it is published in the shared cache: data the run refuses leaves the cache as it was. Files
    of other types in its folders, which are not read, are named first (a ``.json``, a
    ``.csv``: tjx.data's `left_out_summary`), not skipped without a word."""
    left = _keyed(data.left_out_summary, section)
    if left is not None:
        print(f"data: {left}", flush=True)
    # model.vocab_size as set (None: the tokenizer's); tokenizing progress on a terminal
    extra = {"vocab_size": vocab_size, "progress": sys.stderr.isatty(), **images}

    def lasts(run: Bundle) -> None:  # tjx.data calls it before it publishes new data
        _lasting_loader(run, section, steps=steps, seed=0)

    return _keyed(data.prepare_run, section, images=bool(images), check=lasts, **extra)


def train_loader(bundle: Bundle, cfg: Config, mesh: Mesh | None = None) -> TrainLoader:
    """`section_loader` of ``cfg``'s data section for its run (`loader_section`)."""
    section, steps = loader_section(cfg), cfg.train.steps
    return section_loader(bundle, section, steps=steps, seed=cfg.train.seed, mesh=mesh)


def loader_section(cfg: Config) -> data.DataConfig:
    """The data section the training loader reads: ``cfg.data``, but GRPO's prompts, of which a
    batch holds ``data.batch_size / grpo.group_size`` (trainer.config.grpo_settings)."""
    return prompt_section(cfg.data, cfg.rollout) if is_grpo(cfg.data) else cfg.data


def section_loader(
    bundle: Bundle, section: data.DataConfig, *, steps: int, seed: int, mesh: Mesh | None = None
) -> TrainLoader:
    """The resumable, shuffled training iterator of a run's ``data`` ``section``: this process's
    rows of each global batch (its share on ``mesh``, see `shares`); a mixture that would end
    before ``steps`` (``train.steps``) is refused before anything is written."""
    loader = _lasting_loader(bundle, section, steps=steps, seed=seed, **shares(mesh))
    cut = data.truncation_summary(loader, section, names=KEYS)  # chat data: what was cut
    if cut is not None:
        print(f"data: {cut}", flush=True)
    return loader


def _lasting_loader(
    bundle: Bundle, section: data.DataConfig, *, steps: int, seed: int, **share: int
) -> TrainLoader:
    """tjx.data's `run_loader` of ``bundle`` (this process's ``share``), refused as a
    `ConfigError` when it gives fewer rows than the run's ``steps`` batches take: a mixture that
    drops its exhausted sources (how long the run is is the run's, not the data's)."""
    loader = _keyed(data.run_loader, bundle, section, seed=seed, **share)
    rows, batch = getattr(loader, "total_rows", None), section.batch_size
    if rows is not None and rows < steps * batch:
        raise ConfigError(
            f"data.on_exhausted: with drop the sources give {rows} rows in all, and "
            f"train.steps × data.batch_size = {steps} × {batch} = {steps * batch}; use "
            f"train.steps <= {rows // batch}, or data.on_exhausted=repeat"
        )
    return loader


def restore_loader(
    loader: TrainLoader, state: Mapping[str, object], mesh: Mesh | None = None
) -> None:
    """Continue ``loader`` from a checkpoint's (process 0's) loader state on this process."""
    data.restore_loader_state(loader, state, process_index=shares(mesh)["process_index"])


def check_resume(loader: TrainLoader, checkpoints: StoragePath, mesh: Mesh | None = None) -> None:
    """Refuse a resume whose data does not fit its newest checkpoint's loader state, before the
    compile and the restore (minutes on a large model): that state alone is read (tjx.ckpt's
    ``data_state``, no array) and ``loader`` checked against it as the restore does, then left
    where it was.

    A step that cannot be read is left to the restore (it skips a corrupt newest step, or says
    why none reads); a state that does not fit is a ``ValueError`` (``--resume: ...``) in the
    restore's words.
    """
    try:
        with contextlib.closing(ckpt.CheckpointManager(checkpoints, read_only=True)) as manager:
            state = manager.data_state()
    except ckpt.CheckpointError:
        return  # none, or a newest step the restore skips or names: its own words, later
    if state is None:
        return
    before = loader.state_dict()
    try:
        restore_loader(loader, state, mesh)
    except ValueError as err:  # tjx.data's DataError, as the restore's
        raise ValueError(f"--resume: {err}") from None
    # Checked only: the restore continues the loader from the step it reads (the newest may be
    # skipped as corrupt), so it is put back as it was.
    restore_loader(loader, before, mesh)


def val_batches(
    bundle: Bundle, cfg: Config, max_batches: int | None, mesh: Mesh | None = None
) -> Iterator[HostBatch]:
    """The first ``max_batches`` validation batches, always in the same order."""
    return bundle.validation_batches(cfg.eval.batch_size, max_batches, **shares(mesh))
