"""What a ``--resume`` may change: a checkpoint holds one model's and optimizer's state and a
position in one token stream, so a change to those is refused, naming every changed key; settings
that only steer the loop (``resumable`` metadata) may change (``trainer.config.changes``)."""

from __future__ import annotations

from pathlib import Path

from tjx import ckpt, data
from tjx.ckpt.storage import StoragePath
from tjx.core.lazy import lazy_imports
from trainer.config.changes import Diff, config_changes
from trainer.config.changes import describe_changes as describe_changes_of
from trainer.config.folder import RunDir
from trainer.config.schema import ConfigError, kind_of
from trainer.config.seams import ConfigData
from trainer.config.settings import migrate
from trainer.config.typed import SCHEMA, Config, for_new_run, read_config, trains_multi_steps
from trainer.loop.location import resumed_config

with lazy_imports(globals()):  # they load jax, which the command line must not wait for
    from tjx import nn, optim
    from trainer.step import init_from


def is_training_only(key: str, config: ConfigData | None = None) -> bool:
    """Whether a resume may change dotted config ``key``: its field's ``resumable`` metadata, or
    that of a section holding it (the model's of ``config``'s kind)."""
    try:
        return any(f.metadata.get("resumable") for _, f in SCHEMA.lookup(key, kind_of(config)))
    except ConfigError:
        return False


def as_written(saved: ConfigData) -> ConfigData:
    """A saved config as this trainer writes it: migrated, a key added since at its default
    (which the run had) or, where the default would train otherwise, at what the run did
    (`_added_since`), the float8 settings its run never read at theirs (`_without_idle_fp8`).
    """
    return read_config(migrate(_with(_without_idle_fp8(saved), _added_since(saved)))).to_dict()


def as_trained(settings: ConfigData, run_dir: Path) -> tuple[ConfigData, list[str]]:
    """``settings`` (plain data) of a resume of ``run_dir``, with each setting newer than the
    run whose default would train otherwise (`_added_since`) at what the run did, unless the
    settings name it; and a line for each such setting, to print. A run that accumulated with
    ``multi_steps`` (started before a new run read it as ``scan``) goes on as it trained, said in
    one line; any other reads ``settings`` as a new run does (`for_new_run`)."""
    saved = resumed_config(run_dir)
    lines: list[str] = []
    if trains_multi_steps(saved) and trains_multi_steps(settings):
        lines.append(
            "resume: optimizer.accumulation_mode=multi_steps, as the run trained (started "
            "before a new run read it as scan): one update of every "
            f"{saved['optimizer']['accumulation_steps']} steps, its schedule counting updates"
        )
    else:
        settings, lines = for_new_run(settings)
    added = _added_since(saved)
    kept: dict[str, dict[str, object]] = {}
    for section, values in added.items():
        given = settings.get(section)
        named = given if isinstance(given, dict) else {}
        kept[section] = {k: v for k, v in values.items() if k not in named}
    lines += [
        f"resume: {section}.{key}={_as_set(value)}, as the run trained (it was written before "
        f"the setting existed); --set {section}.{key}=... to change it"
        for section, values in kept.items()
        for key, value in values.items()
    ]
    return _with(settings, kept), lines


def _added_since(saved: ConfigData) -> dict[str, dict[str, object]]:
    """The settings a saved config lacks, being newer than its run, whose defaults would train
    it otherwise: ``{section: {key: what the run did}}``.

    - ``grpo.old_logps``: at ``auto`` an overlapped run takes π_old's log-probabilities from
      the sampler's decode; one written before the setting scored them in a second forward pass
      (``recompute``), and a resume that goes on as it trained continues the same numbers.
    - ``data.compressed``: a run written before tjx-data 0.23 read no compressed file of its
      folders (``a.jsonl.gz``); where its sources hold some (tjx.data's `compressed_files`), it
      goes on without them, else its token stream would change under it.
    - ``data.zstd``: one written before tjx-data 0.24 read no ``.zst`` file; likewise.
    """
    added: dict[str, dict[str, object]] = {}
    grpo = saved.get("grpo")
    if isinstance(grpo, dict) and grpo.get("overlap") and "old_logps" not in grpo:
        added["grpo"] = {"old_logps": "recompute"}
    section = saved.get("data")
    if not isinstance(section, dict):
        return added
    mixture = section.get("sources")
    sources = (
        [str(s.get("source")) for s in mixture if isinstance(s, dict)]
        if isinstance(mixture, list)
        else [str(section.get("source", data.DataConfig.source))]
    )
    unread: dict[str, object] = {}
    if "compressed" not in section and data.compressed_files(sources):
        unread["compressed"] = False
    if "zstd" not in section and data.compressed_files(sources, among={".zst"}):
        unread["zstd"] = False
    if unread:
        added["data"] = unread
    return added


def _as_set(value: object) -> str:
    """``value`` as ``--set`` and ``config.yaml`` write it (``false``, not ``False``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def _with(config: ConfigData, added: dict[str, dict[str, object]]) -> ConfigData:
    """``config`` with ``added``'s sections' keys set (a copy)."""
    out = dict(config)
    for section, values in added.items():
        if values:
            given = out.get(section)
            out[section] = {**(given if isinstance(given, dict) else {}), **values}
    return out


def _compared(config: ConfigData, run_dir: Path) -> ConfigData:
    """``config`` (a new one, or a saved one `as_written`) as compared: a Hugging Face start's
    model as its resume trains it (`_as_resumed`), every null optimizer setting as the
    optimizer's own (tjx.optim's `with_schedule_defaults`), so a saved ``b2: 0.95`` shows
    ``optimizer.b2 0.95 → 0.999 (adamw's default)`` and a saved number that is the optimizer's
    own shows nothing."""
    full = _as_resumed(config, run_dir)
    if not isinstance(full.get("optimizer"), dict):
        return full
    return {**full, "optimizer": optim.with_schedule_defaults(full["optimizer"])}


def _without_idle_fp8(config: ConfigData) -> ConfigData:
    """A saved config without the float8 settings its run never read (tjx.nn's
    `idle_fp8_settings`: all of them while ``model.precision.matmul`` was not fp8): an earlier
    trainer saved them as given, today's refuses them in a new config, and at their defaults
    they say what the run did."""
    model = config.get("model")
    if not isinstance(model, dict) or not isinstance(model.get("precision"), dict):
        return config
    precision = model["precision"]
    matmul = precision.get("matmul", "default")
    idle = nn.idle_fp8_settings(matmul, precision.get("fp8_recipe", "current"))
    kept = {k: v for k, v in precision.items() if k not in idle}
    return {**config, "model": {**model, "precision": kept}}


def _as_resumed(config: ConfigData, run_dir: Path) -> ConfigData:
    """``config`` (plain data) as a resume of ``run_dir`` trains it. A run started from a Hugging
    Face checkpoint trains the checkpoint's architecture (its ``model.json``, built again by the
    resume: `trainer.step.init_from.resumed_from_checkpoint`) with the config's own training
    settings, whatever the config's other model settings say; its saved ``config.yaml`` holds the
    command line's model settings before its first resume and the checkpoint's after it, so both
    sides are compared as trained. Any other run's config is compared as it is."""
    try:
        if not init_from.started_from_hf(run_dir):
            return config
        resumed = init_from.resumed_from_checkpoint(read_config(config), run_dir)
    except ConfigError:
        raise
    except (KeyError, TypeError, ValueError) as err:  # a damaged init.json or model.json
        raise ConfigError(
            f"--resume: the run's init.json and model.json say what its checkpoints hold, and "
            f"they do not read ({type(err).__name__}: {err}); restore them or train into a new "
            "--run-dir"
        ) from None
    assert resumed is not None  # a Hugging Face start
    return {**config, "model": resumed.to_dict()["model"]}


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
        written = as_written(saved_data)
    except ConfigError as err:
        raise ConfigError(
            f"--resume: {RunDir(run_dir).config_file} is no config this trainer reads ({err})"
        ) from None
    saved, new = _compared(written, run_dir), _compared(new, run_dir)
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


def resumed_data(run_dir: str | StoragePath) -> dict[str, object] | None:
    """The ``data.json`` of the run in ``run_dir`` that a command resumes (or replays), for
    tjx.data's `check_local_sources` to say where its relative sources were read; ``None``
    where there is none (the run-directory checks say why)."""
    try:
        return RunDir(run_dir).read(RunDir.DATA_FILE)
    except (ckpt.RunFileError, ckpt.UnsupportedURLError):
        return None


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
