"""What a ``--resume`` may change: the saved config against the new one, before anything is written.

A checkpoint holds parameters and optimizer state of one architecture and optimizer, and a data
position in one token stream. A resume whose config differs in any of those cannot continue the
run: orbax would refuse the shapes, or the loader's position would point into another stream. It is
refused at plan time, naming every changed key, and the run directory is left as it was.

Settings that only steer the loop (how long, how often to log, evaluate, sample and save, the
learning rate and its schedule, the kernels and remat used, the mesh) may change on resume: the
state is the same tree of the same shapes, so the run goes on, and the trainer prints what changed.
That the listed keys really leave the state alone is checked by ``tests/test_resume.py``, which
builds the abstract train state of both configs and compares them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from trainer import rundir
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


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` → ``{"a.b": 1}`` (lists and scalars are leaves)."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def is_training_only(key: str) -> bool:
    """Whether a resume may change ``key`` (a dotted config path)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in TRAINING_ONLY)


class OwnDefault(float):
    """An optimizer setting left null, shown with whose default it is (compares as its value)."""

    optimizer: str

    def __new__(cls, value: float, optimizer: str) -> OwnDefault:
        self = super().__new__(cls, value)
        self.optimizer = optimizer
        return self

    def __repr__(self) -> str:
        return f"{float(self)!r} ({self.optimizer}'s default)"


def _own_defaults(flat: dict[str, Any]) -> dict[str, Any]:
    """Null optimizer settings replaced by the optimizer's own values (tjx.optim's tables).

    Runs saved before those settings could be null hold the old trainer defaults (b2 0.95, ...);
    comparing values, not nulls, shows what really changes: ``optimizer.b2 0.95 → 0.999 (adamw's
    default)``, and nothing where the saved number is the optimizer's own.
    """
    from tjx import optim

    name = flat.get("optimizer.name")
    if name not in optim.OPTIMIZER_NAMES:
        return flat
    own = dataclasses.asdict(optim.OptimizerConfig(name=name).resolved())
    own["lr"] = optim.DEFAULT_LEARNING_RATES[name]
    out = dict(flat)
    for field, value in own.items():
        key = f"optimizer.{field}"
        if key in flat and flat[key] is None and isinstance(value, float):
            out[key] = OwnDefault(value, name)
    return out


def changes(saved: dict[str, Any], new: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Every dotted key whose value differs: ``key → (saved, new)`` (missing on one side: None).

    Optimizer settings left null count as the optimizer's own value.
    """
    a, b = _own_defaults(flatten(saved)), _own_defaults(flatten(new))
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)}


def _describe(diff: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{k} {old!r} → {new!r}" for k, (old, new) in diff.items())


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml``; a missing or unreadable one is a `ConfigError` naming it."""
    path = run_dir / rundir.CONFIG_FILE
    try:
        return rundir.read_config(run_dir)
    except FileNotFoundError:
        raise ConfigError(
            f"--resume: {str(path)!r} is missing, so what the checkpoints were trained with is "
            "unknown; put the run's config back or train into a new --run-dir"
        ) from None
    except (ValueError, UnicodeDecodeError, yaml.YAMLError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f"--resume: {str(path)!r} is not a readable run config ({first}); put the run's "
            "config back or train into a new --run-dir"
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
    diff = changes(saved_config(run_dir), new)
    fixed = {k: v for k, v in diff.items() if not is_training_only(k)}
    if fixed:
        raise ConfigError(
            f"--resume: the checkpoints in {str(run_dir)!r} cannot continue with "
            f"{_describe(fixed)} (they hold another model, optimizer state or data stream); "
            f"resume with the run's own settings (--config {run_dir / rundir.CONFIG_FILE}) or "
            "train into a new --run-dir"
        )
    return diff


def describe_changes(diff: dict[str, tuple[Any, Any]]) -> str:
    """The line printed when a resume changes training-only settings."""
    return f"resume: changed settings: {_describe(diff)}"
