"""The trainer's own config sections: the loop, logs, held-out metrics and text samples (``data``
and ``checkpoint`` are tjx.data's and tjx.ckpt's); they stay here as tjx.metrics and tjx.nn load
JAX on import, which the command line must not wait for."""

# `setting()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tjx.ckpt import CheckpointConfig as CheckpointConfig  # the sections trainer.config.typed reads
from tjx.data import DataConfig as DataConfig
from trainer.config.schema import setting


def resumable(default: object, **meta: Any) -> Any:
    """`setting` of a key a resumed run may change (``--resume --set``)."""
    return setting(default, **meta, resumable=True)


@dataclass(frozen=True)
class TrainConfig:
    """The loop: how long, how often to evaluate, sample, log and save."""

    # A bound, not a budget: 10^9 steps is decades at any speed; more is a typo (and overflows the
    # int32 step counter at 2^31).
    steps: int = resumable(1000, min=1, max=10**9, help="optimizer steps of the run")
    seed: int = setting(0, min=0, help="initial weights, data order and dropout keys")
    log_every: int = resumable(10, min=1, help="a metrics line every N steps")
    eval_every: int = resumable(200, min=0, help="0 = only at the end")
    eval_batches: int = resumable(
        8, min=1, help="validation batches per evaluation (always the same ones)"
    )
    sample_every: int = resumable(0, min=0, help="0 = only at the end")
    checkpoint_every: int = resumable(500, min=0, help="0 = only at the end and on signals")
    chunked_ce: bool = resumable(True, help="fused chunked cross-entropy (no [b,s,V] logits)")
    ce_chunk_size: int | None = resumable(
        None, min=1, help="tokens per chunk; null: from the shape (tjx.kernels.auto_chunk_size)"
    )
    z_loss: float = resumable(
        0.0, min=0.0, help="weight of the log-partition penalty (PaLM's z-loss)"
    )
    mlm_probability: float = resumable(0.15, gt=0.0, lt=1.0, help="BERT: share of tokens masked")
    stop_at: int | None = resumable(
        None, min=1, help="stop after this step as if preempted (save, exit 0; --resume goes on)"
    )
    fit_memory: bool = resumable(
        True, help="check the step's compiled memory first; switch to full remat if it won't fit"
    )
    compilation_cache: str = resumable(
        "auto",
        help="GPU runs: JAX's persistent compilation cache folder (a rerun skips compiling and "
        "autotuning); --plan for a device that is not here keeps what each compile found in its "
        "deviceless/ folder (a second plan of the same program skips the compile); auto: "
        "tjx.kernels' default (TJX_COMPILATION_CACHE_DIR, else ~/.cache/tjx/jax-compilation); "
        "off: none",
    )
    gpu_autotune: str = resumable(
        "default",
        choices="trainer.start.xla_flags:AUTOTUNE_CHOICES",
        help="GPU runs: XLA's autotuning of the step's kernels; default: XLA's own (a sixth of "
        "gpt2_medium's 42 s compile on an H100, kept in the compilation cache for a rerun); "
        "off: --xla_gpu_autotune_level=0 (a flag already in XLA_FLAGS wins)",
    )
    max_bad_steps: int = resumable(
        25,
        min=1,
        help="stop (exit 3, no new checkpoint) after this many steps in a row with a non-finite "
        "loss or a skipped update",
    )
    spike_sigma: float | None = resumable(
        None,
        gt=0.0,
        help="mark a loss spike: a step whose loss lies this many standard deviations above the "
        "mean of the train.spike_window steps before it is logged as loss_spike (metrics), "
        "which --replay RUN --spikes replays; null: off",
    )
    spike_window: int = resumable(
        50, min=2, help="the steps before a step its spike is judged against (train.spike_sigma)"
    )


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
