"""What a ``--resume`` may change: the saved config against the new one, before anything is written.

A checkpoint holds one model's and optimizer's state and a position in one token stream, so a
change to any of those is refused, naming every changed key. Settings that only steer the loop
(their fields say so: ``resumable`` metadata) may change; ``tests/test_resume.py`` checks that
they leave the abstract train state alone. The comparison is tjx.ckpt's ``config_changes``; what
a null optimizer setting stands for is tjx.optim's ``with_own_defaults`` (imported on use: the
command line stays free of jax).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tjx import ckpt, data
from trainer.config import Config, read_config
from trainer.schema import ConfigError, lookup
from trainer.settings import migrate


def is_training_only(key: str, config: dict[str, Any] | None = None) -> bool:
    """Whether a resume may change dotted config ``key``: its field's ``resumable`` metadata, or
    that of a section holding it (the trainer's in `Config`, a package's in its class; the
    model's of ``config``'s kind)."""
    model = (config or {}).get("model")
    kind = model.get("kind", "gpt2") if isinstance(model, dict) else "gpt2"
    try:
        return any(f.metadata.get("resumable") for _, f in lookup(Config, key, kind))
    except ConfigError:
        return False


def _compared(config: dict[str, Any], *, saved: bool) -> dict[str, Any]:
    """``config`` as the comparison sees it: a saved one read and written back as this trainer
    writes it (the old layout migrated, `trainer.settings.migrate`, and filled with the values it
    ran with: their defaults, as a key added since the file was written is), and every null
    optimizer setting as the optimizer's own.

    Runs saved before those settings could be null hold the old trainer defaults (b2 0.95, ...);
    comparing values, not nulls, shows what really changes: ``optimizer.b2 0.95 → 0.999 (adamw's
    default)``, and nothing where the saved number is the optimizer's own.
    """
    from tjx import optim

    full = config
    if saved:
        # A key added since the file was written reads at its default, which is what the run had
        # (the rule every new setting keeps: its default is the old behaviour); compared so.
        full = read_config(migrate(config)).to_dict()
    if not isinstance(full.get("optimizer"), dict):
        return full
    section = optim.with_own_defaults(full["optimizer"])
    schedule = section.get("schedule")
    if isinstance(schedule, dict) and schedule.get("peak_lr") is None:  # the optimizer's own rate
        own = optim.with_own_defaults({"name": section["name"], "learning_rate": None})
        section["schedule"] = {**schedule, "peak_lr": own["learning_rate"]}
    return {**full, "optimizer": section}


def saved_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.yaml``; a missing or unreadable one is a `ConfigError` naming it."""
    folder = ckpt.RunDir(run_dir)
    try:
        return folder.read_config()
    except ckpt.RunFileError as err:  # a missing file is one too (RunFileNotFoundError)
        problem = (
            "is missing"
            if isinstance(err, ckpt.RunFileNotFoundError)
            else f"is not a readable run config ({err.reason})"
        )
        raise ConfigError(
            f"--resume: {str(folder.config_file)!r} {problem}, so what the checkpoints were "
            "trained with is unknown; put the run's config back or train into a new --run-dir"
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
        ``config.yaml`` is missing or unreadable, or a key that is not resumable changed.
    """
    saved_data = saved_config(run_dir)
    try:
        saved = _compared(saved_data, saved=True)
    except ConfigError as err:
        raise ConfigError(
            f"--resume: {ckpt.RunDir(run_dir).config_file} is no config this trainer reads ({err})"
        ) from None
    new = _compared(new, saved=False)
    keys = set(ckpt.flatten_config(saved)) | set(ckpt.flatten_config(new))
    changeable = tuple(k for k in keys if is_training_only(k, new))
    changes = ckpt.config_changes(saved, new, changeable=changeable)
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


def check_chat_template(run_dir: Path, cfg: Config) -> None:
    """Refuse a chat run's ``--resume`` whose ``data.tokenizer`` folder holds another chat
    template than the one the run trained with (``data.json``'s fingerprint): the same folder
    path passes the config check, yet every conversation would render (and mask) differently.

    A ``bpe`` tokenizer's template is tjx.data's fixed ChatML; a folder that no longer reads is
    left to the data preparation's own error.
    """
    if cfg.data.format == "text" or cfg.data.tokenizer == "bpe":
        return
    try:
        saved = ckpt.RunDir(run_dir).read(ckpt.RunDir.DATA_FILE).get("template")
        now = data.ChatTemplate.from_folder(cfg.data.tokenizer).fingerprint
    except (ckpt.RunFileError, data.DataError):
        return
    if saved is not None and saved != now:
        raise ConfigError(
            f"--resume: the chat template in data.tokenizer ({cfg.data.tokenizer}) is not the one "
            f"this run trained with (fingerprint {saved}, now {now}); restore that template, or "
            "train with the new one in a new --run-dir"
        )
