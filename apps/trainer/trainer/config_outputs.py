"""The config sections of what a run writes: checkpoints, logs, held-out metrics, text samples
(part of the trainer's `trainer.config.Config`)."""

# `spec()` returns dataclasses.field objects (with validation metadata).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass

from trainer.schema import spec

__all__ = ["CheckpointConfig", "EvalConfig", "LoggingConfig", "SamplingConfig"]


@dataclass
class CheckpointConfig:
    """Checkpoints under ``RUN_DIR/checkpoints``."""

    keep_last: int = spec(3, min=1, help="newest checkpoints kept")
    keep_best: int | None = spec(None, min=1, help="also keep the N lowest val_loss; null: off")
    async_save: bool = spec(True, help="write checkpoints in the background")


@dataclass
class LoggingConfig:
    """Log sinks (tjx.metrics) and the progress bar."""

    sinks: list[str] = spec(
        ["console", "jsonl"], each_choices="tjx.metrics:LOGGER_NAMES", help="where metrics go"
    )
    project: str = spec("tjx", help="wandb project")
    wandb_mode: str = spec(
        "offline",
        choices="tjx.metrics.loggers.wandb_logger:WANDB_MODES",
        help="wandb: offline (default), online or disabled",
    )
    progress: bool = spec(True, help="progress bar on a terminal (plain lines otherwise)")
    # Each histogram step copies every weight to the host: off by default, and best kept rare.
    histogram_every: int = spec(0, min=0, help="parameter histograms every N steps; 0 = never")


@dataclass
class EvalConfig:
    """Held-out metrics."""

    batch_size: int = spec(16, min=1, help="sequences per validation batch")
    top_k: list[int] = spec([1, 5, 10], min=1, help="top-k accuracies reported")


@dataclass
class SamplingConfig:
    """Text samples written during training."""

    prompts: list[str] = spec(["\n"], help="one sample per prompt at each sampling step")
    max_new_tokens: int = spec(200, min=1, help="tokens generated per sample")
    temperature: float = spec(0.8, min=0.0, help="0: greedy")
    top_k: int | None = spec(None, min=1, help="sample among the k likeliest tokens; null: all")
    top_p: float | None = spec(None, gt=0.0, max=1.0, help="nucleus sampling; null: off")
