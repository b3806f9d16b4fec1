"""What a ``--resume`` may change: the saved config against the new one, before anything is written.

A checkpoint holds one model's and optimizer's state and a position in one token stream, so a
change to any of those is refused, naming every changed key. Settings that only steer the loop
(`TRAINING_ONLY`) may change; ``tests/test_resume.py`` checks that they leave the abstract train
state alone. The comparison is tjx.ckpt's ``config_changes``; what a null optimizer setting stands
for is tjx.optim's ``with_own_defaults`` (imported on use: the command line stays free of jax).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tjx import ckpt
from trainer.schema import ConfigError

#: Keys (or whole sections, ending in ".") a resume may change. Everything else must match: a key
#: added to the config later is then safe by default.
TRAINING_ONLY = (
    "name",
    "model.attention_impl",
    "model.remat",
    "model.compute_dtype",
    "model.dropout",
    "model.decode_topk",
    "data.cache_dir",
    "optimizer.lr",
    "optimizer.b1",
    "optimizer.b2",
    "optimizer.eps",
    "optimizer.weight_decay",
    "optimizer.clip_norm",
    "optimizer.accumulation_steps",
    "optimizer.nesterov",
    "optimizer.schedule.",
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.sample_every",
    "train.checkpoint_every",
    "train.stop_at",
    "train.fit_memory",
    "train.max_bad_steps",
    "train.compilation_cache",
    "train.chunked_ce",
    "train.ce_chunk_size",
    "train.z_loss",
    "train.mlm_probability",
    "mesh.",
    "checkpoint.",
    "logging.",
    "eval.",
    "sampling.",
)


def is_training_only(key: str) -> bool:
    """Whether a resume may change ``key`` (a dotted config path)."""
    return ckpt.key_matches(key, TRAINING_ONLY)


def _compared(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with its null optimizer settings as the optimizer's own values.

    Runs saved before those settings could be null hold the old trainer defaults (b2 0.95, ...);
    comparing values, not nulls, shows what really changes: ``optimizer.b2 0.95 → 0.999 (adamw's
    default)``, and nothing where the saved number is the optimizer's own.
    """
    from tjx import optim

    section = config.get("optimizer")
    if not isinstance(section, dict):
        return config
    return {
        **config,
        "optimizer": optim.with_own_defaults(section, aliases={"lr": "learning_rate"}),
    }


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml``; a missing or unreadable one is a `ConfigError` naming it."""
    run = ckpt.RunDir(run_dir)
    try:
        return run.read_config()
    except ckpt.RunFileError as err:  # a missing file is one too (RunFileNotFoundError)
        problem = (
            "is missing"
            if isinstance(err, ckpt.RunFileNotFoundError)
            else f"is not a readable run config ({err.reason})"
        )
        raise ConfigError(
            f"--resume: {str(run.config_file)!r} {problem}, so what the checkpoints were trained "
            "with is unknown; put the run's config back or train into a new --run-dir"
        ) from None


def check_resume(run_dir: Path, new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Refuse a resume that changes what the checkpoints hold; return the allowed changes.

    Parameters
    ----------
    run_dir : Path
        The run being resumed (it holds ``config.yaml``).
    new : dict
        The effective config of this command (``Config.to_dict()``).

    Returns
    -------
    dict
        The training-only keys that change, ``key → (saved, new)`` (empty: the same config).

    Raises
    ------
    ConfigError
        ``config.yaml`` is missing or unreadable, or a key outside :data:`TRAINING_ONLY` changed.
    """
    saved = _compared(saved_config(run_dir))
    changes = ckpt.config_changes(saved, _compared(new), changeable=TRAINING_ONLY)
    if changes.refused:
        raise ConfigError(
            f"--resume: the checkpoints in {str(run_dir)!r} cannot continue with "
            f"{ckpt.describe_changes(changes.refused)} (they hold another model, optimizer state "
            "or data stream); resume with the run's own settings (--config "
            f"{ckpt.RunDir(run_dir).config_file}) or train into a new --run-dir"
        )
    return changes.allowed


def describe_changes(diff: dict[str, tuple[Any, Any]]) -> str:
    """The line printed when a resume changes training-only settings."""
    return f"resume: changed settings: {ckpt.describe_changes(diff)}"
