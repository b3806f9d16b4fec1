"""What a ``--resume`` may change: a checkpoint holds one model's and optimizer's state and a
position in one token stream, so a change to those is refused, naming every changed key; settings
that only steer the loop (``resumable`` metadata) may change (``trainer.job.changes``)."""

from __future__ import annotations

from pathlib import Path

from tjx import ckpt, data
from trainer.config import SCHEMA, Config, read_config
from trainer.deferred import optim
from trainer.job.changes import Diff, config_changes
from trainer.job.changes import describe_changes as describe_changes_of
from trainer.job.folder import RunDir
from trainer.job.start import resumed_config
from trainer.schema import ConfigError, kind_of
from trainer.seams import ConfigData
from trainer.settings import migrate


def is_training_only(key: str, config: ConfigData | None = None) -> bool:
    """Whether a resume may change dotted config ``key``: its field's ``resumable`` metadata, or
    that of a section holding it (the model's of ``config``'s kind)."""
    try:
        return any(f.metadata.get("resumable") for _, f in SCHEMA.lookup(key, kind_of(config)))
    except ConfigError:
        return False


def _compared(config: ConfigData, *, saved: bool) -> ConfigData:
    """``config`` as compared: a saved one as this trainer writes it (migrated; a key added since
    at its default, which the run had), every null optimizer setting as the optimizer's own
    (tjx.optim's `with_schedule_defaults`), so a saved ``b2: 0.95`` shows ``optimizer.b2 0.95 →
    0.999 (adamw's default)`` and a saved number that is the optimizer's own shows nothing."""
    full = read_config(migrate(config)).to_dict() if saved else config
    if not isinstance(full.get("optimizer"), dict):
        return full
    return {**full, "optimizer": optim.with_schedule_defaults(full["optimizer"])}


def _delayed_fp8(config: ConfigData) -> bool:
    """Whether ``config`` (a `_compared` dict) trains with delayed float8 scaling, whose scales
    and amax histories its checkpoints hold beside the params (tjx.nn's `Fp8Meta`)."""
    model = config.get("model")
    precision = model.get("precision") if isinstance(model, dict) else None
    if not isinstance(precision, dict):
        return False
    return precision.get("matmul") == "fp8" and precision.get("fp8_recipe") == "delayed"


def check_resume(run_dir: Path, new: ConfigData) -> Diff:
    """Refuse a resume of ``run_dir`` to config ``new`` (``Config.to_dict()``) that changes what
    the checkpoints hold (`ConfigError`, also for a missing or unreadable ``config.yaml``);
    return the training-only keys that change, ``key → (saved, new)``."""
    saved_data = resumed_config(run_dir)
    try:
        saved = _compared(saved_data, saved=True)
    except ConfigError as err:
        raise ConfigError(
            f"--resume: {RunDir(run_dir).config_file} is no config this trainer reads ({err})"
        ) from None
    new = _compared(new, saved=False)
    if _delayed_fp8(saved) != _delayed_fp8(new):  # (`matmul` alone may change at a resume)
        held = "hold" if _delayed_fp8(saved) else "do not hold"
        raise ConfigError(
            f"--resume: the checkpoints in {str(run_dir)!r} {held} delayed float8 scaling's "
            "state (model.precision.matmul=fp8 with fp8_recipe=delayed); resume with the run's "
            "own model.precision.matmul, or train into a new --run-dir"
        )
    changes = config_changes(saved, new, changeable=lambda k: is_training_only(k, new))
    if changes.refused:
        raise ConfigError(
            f"--resume: the checkpoints in {str(run_dir)!r} cannot continue with "
            f"{describe_changes_of(changes.refused)} (they hold another model, optimizer state "
            "or data stream); resume with the run's own settings (--config "
            f"{RunDir(run_dir).config_file}) or train into a new --run-dir"
        )
    return changes.allowed


def describe_changes(diff: Diff) -> str:
    """The line printed when a resume changes training-only settings."""
    return f"resume: changed settings: {describe_changes_of(diff)}"


def check_chat_template(run_dir: Path, cfg: Config) -> None:
    """Refuse a chat run's ``--resume`` whose ``data.tokenizer`` folder holds another chat
    template than the run trained with (its ``data.json``; tjx.data's `check_template`)."""
    if cfg.data.format == "text" or cfg.data.tokenizer == "bpe":
        return  # no template to compare: data.json stays unread
    try:
        saved = RunDir(run_dir).read(RunDir.DATA_FILE).get("template")
        data.check_template(cfg.data, saved)
    except ckpt.RunFileError:
        return
    except data.DataError as err:
        raise ConfigError(
            f"--resume: {err}; restore that template, or train with the new one in a new --run-dir"
        ) from None
