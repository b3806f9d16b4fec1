"""The trainer's typed config: nested dataclasses, validated field by field and across fields.

The ``model``, ``optimizer`` and ``mesh`` sections are the packages' own config classes, read by
their fields (`trainer.sections`); the other sections are the trainer's, declared here. YAML
presets in ``configs/`` fill them; ``--set a.b=c`` overrides single fields. Every problem is one
`ConfigError` naming the key path and what is allowed (the CLI turns it into exit code 2); what a
``--resume`` may change is each field's ``resumable`` metadata.
"""

# `spec()`/`nested()` return dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.config_outputs import CheckpointConfig, EvalConfig, LoggingConfig, SamplingConfig
from trainer.migrate import migrate
from trainer.schema import ConfigError, from_dict, nested, spec, to_dict
from trainer.sections import PACKAGE_SECTIONS, expanded, package

if TYPE_CHECKING:  # types only: `resolve` reads a Config
    from trainer.resolved import Resolved


@dataclass
class DataConfig:
    """Where text comes from and how it is cut into batches."""

    source: str = spec("shakespeare", help="built-in name, hub name or local path")
    tokenizer: str = spec("byte", help="byte | gpt2 | bpe | a tokenizer path")
    tokenizer_vocab: int = spec(2048, min=260, max=1 << 20, help="vocab of a trained bpe")
    cache_dir: str | None = spec(
        None, help="pre-tokenized shards (default ~/.cache/tjx/data)", resumable=True
    )
    seq_len: int = spec(128, min=2, max=1 << 20, help="tokens per training sequence")
    batch_size: int = spec(16, min=1, help="global batch (sequences per optimizer step)")
    num_workers: int = spec(1, min=1, max=256, help="processes tokenizing during preparation")
    shuffle: bool = spec(True, help="shuffle the windows each epoch")
    max_tokens: int | None = spec(
        None, min=1, help="prepare at most this many tokens per split (of each mixture source)"
    )
    sources: list[dict] | None = spec(
        None,
        help="a weighted mixture instead of data.source: [{source: ..., weight: 3, name: web}, "
        "...] (tjx.data.check_mixture); val_loss/<name> per source",
    )
    on_exhausted: str = spec(
        "repeat",
        choices="tjx.data:ON_EXHAUSTED",
        help="a mixture source that has given every window: repeat (a new epoch) or drop",
    )


@dataclass
class TrainConfig:
    """The loop: how long, how often to evaluate, sample, log and save."""

    # A bound, not a budget: 10^9 steps is decades at any speed; more is a typo (and overflows the
    # int32 step counter at 2^31).
    steps: int = spec(1000, min=1, max=10**9, help="optimizer steps of the run", resumable=True)
    seed: int = spec(0, min=0, help="initial weights, data order and dropout keys")
    log_every: int = spec(10, min=1, help="a metrics line every N steps", resumable=True)
    eval_every: int = spec(200, min=0, help="0 = only at the end", resumable=True)
    eval_batches: int = spec(
        8, min=1, help="validation batches per evaluation (always the same ones)", resumable=True
    )
    sample_every: int = spec(0, min=0, help="0 = only at the end", resumable=True)
    checkpoint_every: int = spec(
        500, min=0, help="0 = only at the end and on signals", resumable=True
    )
    chunked_ce: bool = spec(
        True, help="fused chunked cross-entropy (no [b,s,V] logits)", resumable=True
    )
    ce_chunk_size: int | None = spec(
        None,
        min=1,
        help="tokens per chunk; null: from the shape (tjx.kernels.auto_chunk_size)",
        resumable=True,
    )
    z_loss: float = spec(
        0.0, min=0.0, help="weight of the log-partition penalty (PaLM's z-loss)", resumable=True
    )
    mlm_probability: float = spec(
        0.15, gt=0.0, lt=1.0, help="BERT: share of tokens masked", resumable=True
    )
    stop_at: int | None = spec(
        None,
        min=1,
        help="stop after this step as if preempted (save, exit 0; --resume goes on)",
        resumable=True,
    )
    fit_memory: bool = spec(
        True,
        help="check the step's compiled memory first; switch to full remat if it won't fit",
        resumable=True,
    )
    compilation_cache: str = spec(
        "auto",
        help="GPU runs: JAX's persistent compilation cache folder (a rerun skips compiling and "
        "autotuning); auto: tjx.kernels' default (TJX_COMPILATION_CACHE_DIR, else "
        "~/.cache/tjx/jax-compilation); off: none",
        resumable=True,
    )
    max_bad_steps: int = spec(
        25,
        min=1,
        help="stop (exit 3, no new checkpoint) after this many steps in a row with a non-finite "
        "loss or a skipped update",
        resumable=True,
    )

    @property
    def head_settings(self) -> dict[str, Any]:
        """The vocabulary head's loss settings, as tjx.nn's objectives take them."""
        return {"chunked": self.chunked_ce, "chunk_size": self.ce_chunk_size, "z_loss": self.z_loss}


@dataclass
class Config:
    """Everything one training run needs."""

    name: str = spec(
        "custom", help="the run's name (the default run dir is runs/<name>)", resumable=True
    )
    model: dict[str, Any] = package("model", "the tjx.nn config of model.kind")
    data: DataConfig = nested(DataConfig)
    optimizer: dict[str, Any] = package("optimizer", "tjx.optim's OptimizerConfig")
    train: TrainConfig = nested(TrainConfig)
    mesh: dict[str, Any] = package("mesh", "tjx.parallel's MeshConfig")
    checkpoint: CheckpointConfig = nested(CheckpointConfig, resumable=True)
    logging: LoggingConfig = nested(LoggingConfig, resumable=True)
    eval: EvalConfig = nested(EvalConfig, resumable=True)
    sampling: SamplingConfig = nested(SamplingConfig, resumable=True)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-safe); the package sections with every key, their defaults filled
        in, so ``config.yaml`` records the values a run used."""
        out: dict[str, Any] = to_dict(self)
        for section in PACKAGE_SECTIONS:
            out[section] = expanded(section, getattr(self, section))
        return out

    @property
    def kind(self) -> str:
        """The model kind (``model.kind``)."""
        return str(self.model.get("kind", "gpt2"))

    @property
    def objective(self) -> Any:
        """tjx.nn's `Objective` of the model kind: what a step trains and counts (read on use:
        tjx.nn loads JAX)."""
        from tjx import nn

        return nn.objective_of(nn.MODEL_KINDS[self.kind])

    @property
    def task(self) -> str:
        """The objective's name: "lm" (decoders), "mlm" (BERT), "classify" (ViT) or "seq2seq"."""
        return str(self.objective.name)

    @property
    def units_per_step(self) -> int:
        """Tokens (or images) one global batch scores; the encoder-decoder's continued half."""
        return self.data.batch_size * int(self.objective.units_per_window(self.data.seq_len))


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


_DATA_KEYS = {k: f"data.{k}" for k in ("max_tokens", "batch_size", "seq_len")}


def _check_mixture(cfg: Config) -> None:
    """``data.sources`` is tjx.data's mixture spec, for text runs that shuffle."""
    from tjx import data

    try:
        data.check_mixture(cfg.data.sources or [], key="data.sources")
    except data.DataError as err:
        raise ConfigError(str(err)) from None
    _require(
        cfg.kind != "vit",
        "data.sources: an image model reads the digits images (data.source=digits), not a mixture",
    )
    _require(
        cfg.data.shuffle,
        "data.shuffle: a mixture reads each source's windows shuffled; drop data.shuffle=false or "
        "train on one data.source",
    )


def _check_own(cfg: Config) -> None:
    """The trainer's own rules across its sections (single fields were checked while reading);
    the package sections are checked by their packages when `resolve` builds them."""
    d = cfg.data
    try:  # a cap below one batch: refused before anything is prepared (tjx.data's rule)
        from tjx.data.prepare import check_max_tokens

        check_max_tokens(d.max_tokens, d.seq_len, d.batch_size, names=_DATA_KEYS)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    if d.sources is not None:
        _check_mixture(cfg)
    _require(  # the prompts first: asking tjx.nn for the task loads JAX
        bool(cfg.sampling.prompts) or cfg.task != "lm",
        "sampling.prompts: give at least one prompt (a language model writes samples at the end "
        'of training), e.g. sampling.prompts=["\\n"]',
    )
    if cfg.checkpoint.keep_best is not None:
        _require(
            cfg.train.eval_every > 0,
            "checkpoint.keep_best: needs train.eval_every > 0 (best = lowest validation loss)",
        )


def _check_across(run: Resolved) -> None:
    """The rules between the trainer's sections and the packages' built configs."""
    m, d, o, mesh = run.model, run.cfg.data, run.optimizer, run.mesh
    _require(
        run.cfg.kind == "vit" or m.max_seq_len >= d.seq_len,
        f"data.seq_len: {d.seq_len} exceeds model.max_seq_len ({m.max_seq_len})",
    )
    _require(
        d.batch_size % o.accumulation_steps == 0,
        f"optimizer.accumulation_steps: {o.accumulation_steps} must divide data.batch_size "
        f"({d.batch_size})",
    )
    if mesh.strategy in ("tp", "fsdp_tp", "dp_tp"):
        _require(
            m.num_heads % mesh.tensor == 0,
            f"mesh.tensor: {mesh.tensor} must divide model.num_heads ({m.num_heads})",
        )


def resolve_config(data: dict[str, Any]) -> Resolved:
    """Read a config from plain data (older key names migrated), validate and resolve it: what a
    run starts from. The trainer's rules first, then the packages' (tjx.nn, tjx.optim and
    tjx.parallel build their configs by their own rules — d_model divisible by num_heads, which
    `position` a kind takes, warmup within train.steps, float16 needing loss scaling — before any
    data is prepared, rather than the trainer repeating them). The one place a run builds its
    package configs; everything after receives the `Resolved`. Raises `ConfigError`."""
    from trainer.resolved import resolve

    cfg = from_dict(Config, migrate(data))
    _check_own(cfg)
    resolved = resolve(cfg)  # errors name the trainer's keys (model.d_model: ...)
    _check_across(resolved)
    return resolved


def build_config(data: dict[str, Any]) -> Config:
    """Read and validate a config from plain data (its package configs are not kept: a run
    starts from `resolve_config`)."""
    return resolve_config(data).cfg
