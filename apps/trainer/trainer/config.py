"""The trainer's typed config: nested dataclasses, validated field by field and across fields.

YAML presets in ``configs/`` fill these; ``--set a.b=c`` overrides single fields. Every problem is
one `ConfigError` naming the key path and what is allowed (the CLI turns it into exit code 2).
"""

# `spec()`/`nested()` return dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.config_outputs import CheckpointConfig, EvalConfig, LoggingConfig, SamplingConfig
from trainer.schema import ConfigError, from_dict, nested, spec, to_dict

if TYPE_CHECKING:  # types only: `resolve` reads a Config
    from trainer.resolved import Resolved

# tjx.nn has no list of dtype names (its Precision takes any floating dtype): these are the ones
# the trainer runs.
DTYPES = ("float32", "bfloat16", "float16")
#: The model kinds the trainer trains, here so that ``--help`` lists them without loading JAX;
#: each kind's config class is tjx.nn.MODEL_KINDS', its objective tjx.nn.objective_of's.
KINDS = ("gpt2", "llama", "bert", "vit", "encdec")


@dataclass
class ModelConfig:
    """Architecture. ``vocab_size: null`` takes the tokenizer's size."""

    kind: str = spec(
        "gpt2", choices=KINDS, help="model family; tjx.nn.MODEL_KINDS holds each kind's config"
    )
    vocab_size: int | None = spec(None, min=2, help="null: the tokenizer's size")
    max_seq_len: int = spec(
        256, min=1, max=1 << 20, help="longest sequence (learned positions' table size)"
    )
    d_model: int = spec(128, min=1, help="residual width")
    num_layers: int = spec(4, min=1, max=512, help="transformer blocks")
    num_heads: int = spec(4, min=1, help="attention (query) heads; must divide d_model")
    num_kv_heads: int | None = spec(
        None, min=1, help="grouped-query attention's key/value heads; null: one per head"
    )
    mlp_dim: int | None = spec(
        None, min=1, help="hidden width of the MLP; null: the family's (4 x d_model, ...)"
    )
    dropout: float = spec(
        0.0, min=0.0, lt=1.0, help="dropout rate (keys from the step: a resume is exact)"
    )
    tie_embeddings: bool = spec(True, help="the output head reuses the input embedding")
    attention_impl: str = spec(
        "auto",
        choices="tjx.nn:ATTENTION_IMPLS",
        help="auto: tjx.kernels picks (one-line fallback if it fails)",
    )
    scan_layers: bool = spec(False, help="one jax.lax.scan over the layers: faster compiles")
    remat: str = spec(
        "none",
        choices="tjx.nn:REMAT_POLICIES",
        help="what the backward pass recomputes instead of storing",
    )
    # Position encoding; null keeps the family's own (GPT-2/BERT/ViT learned, LLaMA rope).
    position: str | None = spec(
        None,
        choices="tjx.nn:POSITIONS",
        help="null: the family's own (GPT-2/BERT/ViT learned, LLaMA rope)",
    )
    relative_buckets: int = spec(32, min=4, help="position=t5: buckets (even)")
    relative_max_distance: int = spec(128, min=3, help="position=t5: longest bucketed distance")
    param_dtype: str = spec(
        "float32", choices=DTYPES, help="dtype the weights are stored and updated in"
    )
    compute_dtype: str = spec(
        "float32", choices=DTYPES, help="dtype of the forward and backward matmuls"
    )
    # Null keeps the family's own: LLaMA has no biases, GPT-2/BERT/ViT have them.
    use_bias: bool | None = spec(None, help="biases of dense layers and LayerNorms (null: kind's)")
    # Null keeps tjx.nn's own (pre-LN; init std 0.02): the depth-stability study varies them.
    norm_position: str | None = spec(
        None, choices="tjx.nn.configs:NORM_POSITIONS", help="pre | post"
    )
    init_std: float | None = spec(None, gt=0.0, help="std of the initial weights (null: 0.02)")
    attention_type: str = spec(
        "mha",
        choices="tjx.nn.configs:ATTENTION_TYPES",
        help="mla: keys/values from one low-rank latent per token (the KV cache stores it)",
    )
    kv_latent_dim: int | None = spec(None, min=1, help="attention_type=mla: the latent's size")
    decode_topk: int | None = spec(
        None, min=1, help="decoding (samples) attends to the top-k cached keys only; null = all"
    )
    # ViT only.
    image_size: int = spec(8, min=1, help="ViT: the images' side in pixels")
    patch_size: int = spec(2, min=1, help="ViT: a patch's side in pixels")
    num_classes: int = spec(10, min=2, help="ViT: classes of the head")


@dataclass
class DataConfig:
    """Where text comes from and how it is cut into batches."""

    source: str = spec("shakespeare", help="built-in name, hub name or local path")
    tokenizer: str = spec("byte", help="byte | gpt2 | bpe | a tokenizer path")
    tokenizer_vocab: int = spec(2048, min=260, max=1 << 20, help="vocab of a trained bpe")
    cache_dir: str | None = spec(None, help="pre-tokenized shards (default ~/.cache/tjx/data)")
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
class ScheduleConfig:
    """Learning-rate schedule; ``total_steps`` is the train's ``steps``."""

    name: str = spec("cosine", choices="tjx.optim:SCHEDULE_NAMES", help="learning-rate schedule")
    warmup_steps: int = spec(100, min=0, help="linear warmup steps from 0")
    min_lr_ratio: float = spec(0.1, min=0.0, max=1.0, help="final rate as a fraction of the peak")
    # Null = tjx.optim's defaults (decay over the last 0.2 of the run, linearly).
    decay_fraction: float | None = spec(None, gt=0.0, max=1.0, help="wsd: share of steps decaying")
    decay_shape: str | None = spec(
        None, choices="tjx.optim.config:WSD_DECAY_SHAPES", help="wsd only"
    )


_OWN_DEFAULT = "null = the optimizer's own default (tjx.optim)"


@dataclass
class OptimizerConfig:
    """Optimizer (built by tjx.optim).

    ``b1``, ``b2``, ``eps``, ``weight_decay``, ``momentum`` and ``nesterov`` left null take the
    named optimizer's own defaults (tjx.optim's table: e.g. adamw b2 0.999, adafactor eps 1e-30 and
    no decay, sgd momentum 0.9), so one optimizer's values never leak into another's.
    """

    name: str = spec("adamw", choices="tjx.optim:OPTIMIZER_NAMES", help="the optimizer (tjx.optim)")
    # Peak rate; null takes tjx.optim's DEFAULT_LEARNING_RATES for the optimizer (3e-4 for adamw,
    # 2e-2 for muon, ...): one rate for all would be far off for most of them.
    lr: float | None = spec(
        None,
        gt=0.0,
        max=10.0,
        help="peak learning rate; null: tjx.optim's default for the optimizer",
    )
    b1: float | None = spec(None, min=0.0, lt=1.0, help=_OWN_DEFAULT)
    b2: float | None = spec(None, min=0.0, lt=1.0, help=_OWN_DEFAULT)
    eps: float | None = spec(None, gt=0.0, help=_OWN_DEFAULT)
    weight_decay: float | None = spec(None, min=0.0, help=_OWN_DEFAULT)
    # SGD and Muon only (tjx.optim fills them for those; elsewhere a value is refused).
    momentum: float | None = spec(None, min=0.0, lt=1.0, help=_OWN_DEFAULT)
    nesterov: bool | None = spec(None, help=_OWN_DEFAULT)
    # tjx.optim's default too (the same for every optimizer); null turns clipping off.
    clip_norm: float | None = spec(1.0, gt=0.0, help="null = no clipping")
    accumulation_steps: int = spec(
        1, min=1, help="micro-batches per step; must divide data.batch_size"
    )
    loss_scale: str | None = spec(
        None,
        choices="tjx.optim.config:LOSS_SCALES",
        help="dynamic loss scaling (float16); null: none",
    )
    skip_nonfinite: bool = spec(True, help="skip an update whose gradients are not finite")
    schedule: ScheduleConfig = nested(ScheduleConfig)


@dataclass
class TrainConfig:
    """The loop: how long, how often to evaluate, sample, log and save."""

    # A bound, not a budget: 10^9 steps is decades at any speed; more is a typo (and overflows the
    # int32 step counter at 2^31).
    steps: int = spec(1000, min=1, max=10**9, help="optimizer steps of the run")
    seed: int = spec(0, min=0, help="initial weights, data order and dropout keys")
    log_every: int = spec(10, min=1, help="a metrics line every N steps")
    eval_every: int = spec(200, min=0, help="0 = only at the end")
    eval_batches: int = spec(
        8, min=1, help="validation batches per evaluation (always the same ones)"
    )
    sample_every: int = spec(0, min=0, help="0 = only at the end")
    checkpoint_every: int = spec(500, min=0, help="0 = only at the end and on signals")
    chunked_ce: bool = spec(True, help="fused chunked cross-entropy (no [b,s,V] logits)")
    ce_chunk_size: int | None = spec(
        None, min=1, help="tokens per chunk; null: from the shape (tjx.kernels.auto_chunk_size)"
    )
    z_loss: float = spec(0.0, min=0.0, help="weight of the log-partition penalty (PaLM's z-loss)")
    mlm_probability: float = spec(0.15, gt=0.0, lt=1.0, help="BERT: share of tokens masked")
    stop_at: int | None = spec(
        None, min=1, help="stop after this step as if preempted (save, exit 0; --resume goes on)"
    )
    fit_memory: bool = spec(
        True, help="check the step's compiled memory first; switch to full remat if it won't fit"
    )
    compilation_cache: str = spec(
        "auto",
        help="GPU runs: JAX's persistent compilation cache folder (a rerun skips compiling and "
        "autotuning); auto: tjx.kernels' default (TJX_COMPILATION_CACHE_DIR, else "
        "~/.cache/tjx/jax-compilation); off: none",
    )
    max_bad_steps: int = spec(
        25,
        min=1,
        help="stop (exit 3, no new checkpoint) after this many steps in a row with a non-finite "
        "loss or a skipped update",
    )

    @property
    def head_settings(self) -> dict[str, Any]:
        """The vocabulary head's loss settings, as tjx.nn's objectives take them."""
        return {"chunked": self.chunked_ce, "chunk_size": self.ce_chunk_size, "z_loss": self.z_loss}


@dataclass
class MeshConfig:
    """Device mesh (tjx.parallel); -1 = all remaining devices."""

    data: int = spec(-1, min=-1, help="data-parallel size")
    fsdp: int = spec(1, min=-1, help="fully sharded data-parallel size")
    tensor: int = spec(1, min=1, help="tensor-parallel size")
    strategy: str = spec(
        "dp",
        choices="tjx.parallel:STRATEGIES",
        help="which logical axes map to which mesh axes (tjx.parallel.rules)",
    )
    pipeline: int = spec(1, min=1, help="pipeline stages (layers split into runs of equal length)")
    microbatches: int = spec(4, min=1, help="pipeline microbatches per step (mesh.pipeline > 1)")
    schedule: str = spec(
        "gpipe", choices="tjx.parallel:SCHEDULES", help="pipeline schedule (mesh.pipeline > 1)"
    )


@dataclass
class Config:
    """Everything one training run needs."""

    name: str = spec("custom", help="the run's name (the default run dir is runs/<name>)")
    model: ModelConfig = nested(ModelConfig)
    data: DataConfig = nested(DataConfig)
    optimizer: OptimizerConfig = nested(OptimizerConfig)
    train: TrainConfig = nested(TrainConfig)
    mesh: MeshConfig = nested(MeshConfig)
    checkpoint: CheckpointConfig = nested(CheckpointConfig)
    logging: LoggingConfig = nested(LoggingConfig)
    eval: EvalConfig = nested(EvalConfig)
    sampling: SamplingConfig = nested(SamplingConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (YAML-safe)."""
        out: dict[str, Any] = to_dict(self)
        return out

    @property
    def objective(self) -> Any:
        """tjx.nn's `Objective` of the model kind: what a step trains and counts (read on use:
        tjx.nn loads JAX)."""
        from tjx import nn

        return nn.objective_of(nn.MODEL_KINDS[self.model.kind])

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
        cfg.model.kind != "vit",
        "data.sources: an image model reads the digits images (data.source=digits), not a mixture",
    )
    _require(
        cfg.data.shuffle,
        "data.shuffle: a mixture reads each source's windows shuffled; drop data.shuffle=false or "
        "train on one data.source",
    )


def _check_own(cfg: Config) -> None:
    """The trainer's own rules across fields (single fields were checked while reading): its
    keys (data, accumulation, sampling, mesh); the model and optimizer sections are checked by
    tjx.nn and tjx.optim themselves when `resolve` builds their configs."""
    m, d, o = cfg.model, cfg.data, cfg.optimizer
    _require(
        m.kind == "vit" or m.max_seq_len >= d.seq_len,
        f"data.seq_len: {d.seq_len} exceeds model.max_seq_len ({m.max_seq_len})",
    )
    _require(
        d.batch_size % o.accumulation_steps == 0,
        f"optimizer.accumulation_steps: {o.accumulation_steps} must divide data.batch_size "
        f"({d.batch_size})",
    )
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
    _require(
        not (cfg.mesh.data == -1 and cfg.mesh.fsdp == -1),
        "mesh.fsdp: only one of mesh.data and mesh.fsdp may be -1",
    )
    if cfg.mesh.strategy in ("tp", "fsdp_tp", "dp_tp"):
        _require(
            m.num_heads % cfg.mesh.tensor == 0,
            f"mesh.tensor: {cfg.mesh.tensor} must divide model.num_heads ({m.num_heads})",
        )


def resolve_config(data: dict[str, Any]) -> Resolved:
    """Read a config from plain data, validate and resolve it: what a run starts from. The
    trainer's rules first, then the packages' (tjx.nn and
    tjx.optim build their configs by their own rules — d_model divisible by num_heads, which
    `position` a kind takes, warmup within train.steps, float16 needing loss scaling — before any
    data is prepared, rather than the trainer repeating them). The one place a run builds its
    package configs; everything after receives the `Resolved`. Raises `ConfigError`."""
    from trainer.resolved import resolve

    cfg = from_dict(Config, data)
    _check_own(cfg)
    resolved = resolve(cfg)  # errors name the trainer's keys (model.d_model: ...)
    if cfg.checkpoint.keep_best is not None:
        _require(
            cfg.train.eval_every > 0,
            "checkpoint.keep_best: needs train.eval_every > 0 (best = lowest validation loss)",
        )
    return resolved


def build_config(data: dict[str, Any]) -> Config:
    """Read and validate a config from plain data (its package configs are not kept: a run
    starts from `resolve_config`)."""
    return resolve_config(data).cfg
