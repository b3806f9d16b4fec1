"""The trainer's config: one object per run (`Config`), read once from plain data (`read_config`).

Its ``model``, ``optimizer`` and ``mesh`` sections ARE the packages' config objects (tjx.nn's class
of ``model.kind``, tjx.optim's `OptimizerConfig`, tjx.parallel's `MeshConfig`), built from the
moment they are read; the other sections are the trainer's own, declared here. The model's
vocabulary is a placeholder until the tokenizer's is known (`resolve`); a stage that changes a
setting (the kernel that compiled, full remat) replaces it (`Config.with_model`). ``config.yaml``
is `Config.to_dict` of the objects. Every problem is one `ConfigError` naming the key path.
"""

# `setting()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from trainer.schema import ConfigError, check_field, convert, setting
from trainer.sections import build as build_section
from trainer.sections import keys, reworded, section_class, values, write

#: The vocabulary the model holds until the tokenizer's is known: no rule of tjx.nn depends on it.
UNKNOWN_VOCAB = 2


@dataclass(frozen=True)
class DataConfig:
    """Where text comes from and how it is cut into batches."""

    source: str = setting("shakespeare", help="built-in name, hub name or local path")
    tokenizer: str = setting("byte", help="byte | gpt2 | bpe | a tokenizer path")
    tokenizer_vocab: int = setting(2048, min=260, max=1 << 20, help="vocab of a trained bpe")
    cache_dir: str | None = setting(
        None, help="pre-tokenized shards (default ~/.cache/tjx/data)", resumable=True
    )
    seq_len: int = setting(128, min=2, max=1 << 20, help="tokens per training sequence")
    batch_size: int = setting(16, min=1, help="global batch (sequences per optimizer step)")
    num_workers: int = setting(1, min=1, max=256, help="processes tokenizing during preparation")
    shuffle: bool = setting(True, help="shuffle the windows each epoch")
    max_tokens: int | None = setting(
        None, min=1, help="prepare at most this many tokens per split (of each mixture source)"
    )
    sources: list[dict] | None = setting(
        None,
        help="a weighted mixture instead of data.source: [{source: ..., weight: 3, name: web}, "
        "...] (tjx.data.check_mixture); val_loss/<name> per source",
    )
    on_exhausted: str = setting(
        "repeat",
        choices="tjx.data:ON_EXHAUSTED",
        help="a mixture source that has given every window: repeat (a new epoch) or drop",
    )


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how often to evaluate, sample, log and save."""

    # A bound, not a budget: 10^9 steps is decades at any speed; more is a typo (and overflows the
    # int32 step counter at 2^31).
    steps: int = setting(1000, min=1, max=10**9, help="optimizer steps of the run", resumable=True)
    seed: int = setting(0, min=0, help="initial weights, data order and dropout keys")
    log_every: int = setting(10, min=1, help="a metrics line every N steps", resumable=True)
    eval_every: int = setting(200, min=0, help="0 = only at the end", resumable=True)
    eval_batches: int = setting(
        8, min=1, help="validation batches per evaluation (always the same ones)", resumable=True
    )
    sample_every: int = setting(0, min=0, help="0 = only at the end", resumable=True)
    checkpoint_every: int = setting(
        500, min=0, help="0 = only at the end and on signals", resumable=True
    )
    chunked_ce: bool = setting(
        True, help="fused chunked cross-entropy (no [b,s,V] logits)", resumable=True
    )
    ce_chunk_size: int | None = setting(
        None,
        min=1,
        help="tokens per chunk; null: from the shape (tjx.kernels.auto_chunk_size)",
        resumable=True,
    )
    z_loss: float = setting(
        0.0, min=0.0, help="weight of the log-partition penalty (PaLM's z-loss)", resumable=True
    )
    mlm_probability: float = setting(
        0.15, gt=0.0, lt=1.0, help="BERT: share of tokens masked", resumable=True
    )
    stop_at: int | None = setting(
        None,
        min=1,
        help="stop after this step as if preempted (save, exit 0; --resume goes on)",
        resumable=True,
    )
    fit_memory: bool = setting(
        True,
        help="check the step's compiled memory first; switch to full remat if it won't fit",
        resumable=True,
    )
    compilation_cache: str = setting(
        "auto",
        help="GPU runs: JAX's persistent compilation cache folder (a rerun skips compiling and "
        "autotuning); auto: tjx.kernels' default (TJX_COMPILATION_CACHE_DIR, else "
        "~/.cache/tjx/jax-compilation); off: none",
        resumable=True,
    )
    max_bad_steps: int = setting(
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


@dataclass(frozen=True)
class CheckpointConfig:
    """Checkpoints under ``RUN_DIR/checkpoints``."""

    keep_last: int = setting(3, min=1, help="newest checkpoints kept")
    keep_best: int | None = setting(None, min=1, help="also keep the N lowest val_loss; null: off")
    async_save: bool = setting(True, help="write checkpoints in the background")


@dataclass(frozen=True)
class LoggingConfig:
    """Log sinks (tjx.metrics) and the progress bar."""

    sinks: list[str] = setting(
        lambda: ["console", "jsonl"],
        factory=True,
        each_choices="tjx.metrics:LOGGER_NAMES",
        help="where metrics go",
    )
    project: str = setting("tjx", help="wandb project")
    wandb_mode: str = setting(
        "offline",
        choices="tjx.metrics.loggers.wandb_logger:WANDB_MODES",
        help="wandb: offline (default), online or disabled",
    )
    progress: bool = setting(True, help="progress bar on a terminal (plain lines otherwise)")
    # Each histogram step copies every weight to the host: off by default, and best kept rare.
    histogram_every: int = setting(0, min=0, help="parameter histograms every N steps; 0 = never")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out metrics."""

    batch_size: int = setting(16, min=1, help="sequences per validation batch")
    top_k: list[int] = setting(
        lambda: [1, 5, 10], factory=True, min=1, help="top-k accuracies reported"
    )


@dataclass(frozen=True)
class SamplingConfig:
    """Text samples written during training."""

    prompts: list[str] = setting(
        lambda: ["\n"], factory=True, help="one sample per prompt at each sampling step"
    )
    max_new_tokens: int = setting(200, min=1, help="tokens generated per sample")
    temperature: float = setting(0.8, min=0.0, help="0: greedy")
    top_k: int | None = setting(None, min=1, help="sample among the k likeliest tokens; null: all")
    top_p: float | None = setting(None, gt=0.0, max=1.0, help="nucleus sampling; null: off")


@dataclass(frozen=True)
class Config:
    """Everything one training run needs (made by `read_config`)."""

    name: str = setting(
        "custom", help="the run's name (the default run dir is runs/<name>)", resumable=True
    )
    model: Any = setting(None, section="model", help="the tjx.nn config of model.kind")
    data: DataConfig = setting(DataConfig, factory=True)
    optimizer: Any = setting(None, section="optimizer", help="tjx.optim's OptimizerConfig")
    train: TrainConfig = setting(TrainConfig, factory=True)
    mesh: Any = setting(None, section="mesh", help="tjx.parallel's MeshConfig")
    checkpoint: CheckpointConfig = setting(CheckpointConfig, factory=True, resumable=True)
    logging: LoggingConfig = setting(LoggingConfig, factory=True, resumable=True)
    eval: EvalConfig = setting(EvalConfig, factory=True, resumable=True)
    sampling: SamplingConfig = setting(SamplingConfig, factory=True, resumable=True)
    #: ``model.vocab_size`` as the config sets it (None: the tokenizer's, once `resolve` knows it).
    vocab_size: int | None = setting(None, key=False)
    #: The tokenizer's vocabulary (`resolve`); None before the data is prepared.
    tokenizer_vocab: int | None = setting(None, key=False)

    @property
    def kind(self) -> str:
        """The model kind (``model.kind``): the key of tjx.nn.MODEL_KINDS holding its class."""
        from tjx import nn

        return next(k for k, cls in nn.MODEL_KINDS.items() if type(self.model) is cls)

    @property
    def objective(self) -> Any:
        """tjx.nn's `Objective` of the model kind: what a step trains and counts."""
        from tjx import nn

        return nn.objective_of(type(self.model))

    @property
    def task(self) -> str:
        """The objective's name: "lm" (decoders), "mlm" (BERT), "classify" (ViT) or "seq2seq"."""
        return str(self.objective.name)

    @property
    def units_per_step(self) -> int:
        """Tokens (or images) one global batch scores; the encoder-decoder's continued half."""
        return self.data.batch_size * int(self.objective.units_per_window(self.data.seq_len))

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-safe) of every key: what ``config.yaml`` saves and a resume compares."""
        out: dict[str, Any] = {}
        for name in keys(Config, "", self.kind):
            value = getattr(self, name)
            own = {"kind": self.kind, "vocab_size": self.vocab_size}
            out[name] = write(value, name, own) if dataclasses.is_dataclass(value) else value
        return out

    def with_model(self, **changes: Any) -> Config:
        """The config with model settings ``changes`` (``remat="full"``, ``attention_impl=...``)."""
        if all(getattr(self.model, k) == v for k, v in changes.items()):
            return self
        with reworded("model"):
            return dataclasses.replace(self, model=dataclasses.replace(self.model, **changes))


def resolve(cfg: Config, vocab_size: int) -> Config:
    """``cfg`` with the tokenizer's ``vocab_size``: the model's, unless ``model.vocab_size`` is
    set (BERT's [MASK] id added; a kind that reads no tokens, ViT, keeps none)."""
    model = cfg.model
    if cfg.vocab_size is None and "vocab_size" not in type(model).unused_fields:
        extra = int(cfg.objective.extra_vocab)
        model = dataclasses.replace(model, vocab_size=vocab_size + extra)
    return dataclasses.replace(cfg, model=model, tokenizer_vocab=vocab_size)


def read_config(data: Any) -> Config:
    """The validated config of plain data (files already migrated, ``--set`` applied).

    Every key is read as its type first (the first problem, in the data's order); then the
    trainer's rules; then the packages build their sections by their own rules (d_model
    divisible by num_heads, warmup within train.steps, float16 needing loss scaling), their
    messages in the trainer's keys; then the rules between sections. Raises `ConfigError`.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {data!r}")
    model = data.get("model")
    kind = model.get("kind", "gpt2") if isinstance(model, dict) else "gpt2"
    known, read = keys(Config, "", kind), {}
    for key, value in data.items():
        if key not in known:
            raise ConfigError(f"{key}: unknown key; allowed keys here: {', '.join(known)}")
        tp, f = known[key]
        if dataclasses.is_dataclass(tp):
            read[key] = values(tp, value, key, kind)  # type: ignore[arg-type]
        else:
            read[key] = convert(tp, value, key)
            check_field(f, read[key], key)
    own = {k: build_section(known[k][0], read.pop(k, {}), k) for k in _OWN_SECTIONS}
    _check_own(own, section_class("model", kind))
    vocab = read.get("model", {}).get("vocab_size")
    model = _model(section_class("model", kind), read.get("model", {}), vocab)
    optimizer = read.get("optimizer", {})
    optimizer["schedule"] = {**optimizer.get("schedule", {}), "total_steps": own["train"].steps}
    with reworded("optimizer"):
        optimizer = build_section(section_class("optimizer"), optimizer, "optimizer")
        from tjx import optim

        precision = model.precision
        optim.check_precision(
            optimizer, param_dtype=precision.param_dtype, compute_dtype=precision.compute_dtype
        )
    mesh = build_section(section_class("mesh"), read.get("mesh", {}), "mesh")
    name = str(read.get("name", Config.name))
    cfg = Config(name, model, optimizer=optimizer, mesh=mesh, vocab_size=vocab, **own)
    _check_across(cfg)
    return cfg


#: The trainer's own sections (the others are the packages').
_OWN_SECTIONS = ("data", "train", "checkpoint", "logging", "eval", "sampling")


def _model(cls: type, read: dict[str, Any], vocab: int | None) -> Any:
    """The tjx.nn config of ``cls`` with the checked settings ``read`` and a vocabulary (the one
    set, else the placeholder; none for a kind that reads no tokens)."""
    fields = {k: v for k, v in read.items() if k not in ("kind", "vocab_size")}
    unused = cls.unused_fields  # type: ignore[attr-defined]
    if "vocab_size" not in unused:
        fields["vocab_size"] = vocab or UNKNOWN_VOCAB
    elif vocab is not None:
        raise ConfigError(f"model.vocab_size: {unused['vocab_size']}; set it to null")
    return build_section(cls, fields, "model")


def _require(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _check_own(own: dict[str, Any], model_cls: type) -> None:
    """The trainer's own rules across its sections (single fields were checked while reading)."""
    from tjx import data, nn

    d = own["data"]
    task = nn.objective_of(model_cls).name
    names = {k: f"data.{k}" for k in ("max_tokens", "batch_size", "seq_len")}
    try:  # a cap below one batch: refused before anything is prepared (tjx.data's rule)
        data.check_max_tokens(d.max_tokens, d.seq_len, d.batch_size, names=names)
        if d.sources is not None:
            data.check_mixture(d.sources, key="data.sources")
    except (ValueError, data.DataError) as err:
        raise ConfigError(str(err)) from None
    if d.sources is not None:
        _require(
            task != "classify",
            "data.sources: an image model reads the digits images (data.source=digits), not a "
            "mixture",
        )
        _require(
            d.shuffle,
            "data.shuffle: a mixture reads each source's windows shuffled; drop "
            "data.shuffle=false or train on one data.source",
        )
    _require(
        bool(own["sampling"].prompts) or task != "lm",
        "sampling.prompts: give at least one prompt (a language model writes samples at the end "
        'of training), e.g. sampling.prompts=["\\n"]',
    )
    _require(
        own["checkpoint"].keep_best is None or own["train"].eval_every > 0,
        "checkpoint.keep_best: needs train.eval_every > 0 (best = lowest validation loss)",
    )


def _check_across(cfg: Config) -> None:
    """The rules between the trainer's sections and the packages' configs."""
    m, d, o, mesh = cfg.model, cfg.data, cfg.optimizer, cfg.mesh
    _require(
        cfg.task == "classify" or m.max_seq_len >= d.seq_len,
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
