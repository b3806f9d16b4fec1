"""Command-line parsing for the trainer: read, override and validate everything before writing."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tjx import ckpt, data  # no jax: neither loads it at import
from tjx.parallel.arguments import (  # no jax (tjx.parallel loads it on first use)
    DistributedArgumentError,
    add_distributed_arguments,
    distributed_from_args,
)
from trainer.config import Config, read_config
from trainer.init_from import check_init_from, trained_model
from trainer.plan import RunPlan, error_exit, interrupted_exit
from trainer.resume import check_chat_template, check_resume, describe_changes
from trainer.schema import ConfigError, keyed
from trainer.settings import apply_overrides, changed, load_config_data, preset_names


def build_parser() -> argparse.ArgumentParser:
    """The trainer's argument parser."""
    parser = argparse.ArgumentParser(
        prog="trainer",
        description="Train a transformer with tjx.",
        epilog=f"presets: {', '.join(preset_names())}",
    )
    # Required, except with --show-config (main checks it, in argparse's own words).
    parser.add_argument("--config", help="a preset name (see below) or a YAML file path")
    parser.add_argument(
        "--show-config",
        action="store_true",
        help="print every config key (type, value, allowed values, help) and exit; with "
        "--config/--set, the values are that config's",
    )
    parser.add_argument(
        "--print-config",
        action="store_true",
        help="print the effective config (every key) before training; config.yaml saves it too",
    )
    parser.add_argument(
        "--run-dir", default=None, help="where logs and checkpoints go (default: runs/<name>)"
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="overrides",
        help="override a config value, e.g. --set optimizer.schedule.peak_lr=3e-4 (repeatable)",
    )
    parser.add_argument("--data", default=None, help="a built-in corpus, hub name or local path")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the run directory's latest checkpoint"
    )
    parser.add_argument(
        "--init-from",
        default=None,
        metavar="PATH_OR_HUB",
        help="start from a Hugging Face checkpoint: GPT-2, Llama, Mistral or Qwen2 (a local "
        "folder, or a hub name such as gpt2 when online)",
    )
    parser.add_argument(
        "--profile-steps", default=None, metavar="A:B", help="write a jax.profiler trace of steps"
    )
    parser.add_argument(
        "--plan",
        default=None,
        metavar="TARGET",
        help="compile the run's steps for a device that is not here (h100, a100-40gb, 8xh100, "
        "v5e, ...) and print what it needs: kernel, memory, estimated step time; trains nothing",
    )
    parser.add_argument(
        "--plan-json", default=None, metavar="PATH", help="with --plan: also write its figures"
    )
    parser.add_argument(
        "--export-peft",
        default=None,
        metavar="DIR",
        help="with lora.enabled: write the trained adapters to DIR as a PEFT adapter "
        "(adapter_config.json + adapter_model.safetensors) when the run ends",
    )
    add_distributed_arguments(parser)  # the multi-host launch flags are tjx.parallel's
    return parser


def parse_profile(text: str | None) -> tuple[int, int] | None:
    """``"10:15"`` → (10, 15); errors name the flag."""
    if text is None:
        return None
    try:
        a_text, b_text = text.split(":")
        start, stop = int(a_text), int(b_text)
    except ValueError:
        raise ConfigError(
            f"--profile-steps: expected A:B with integers A < B, got {text!r}"
        ) from None
    if not 0 <= start < stop:
        raise ConfigError(f"--profile-steps: expected 0 <= A < B, got {text!r}")
    return start, stop


def _run_location(text: str) -> Any:
    """``--run-dir`` as tjx.ckpt's `RunDir` takes it: a local `Path` (``~`` expanded), or for a
    ``gs://`` / ``s3://`` URL an `epath.Path` (another scheme is one ``--run-dir:`` line)."""
    with keyed("--run-dir", ckpt.NotCreatableError):
        if "://" in text:
            return ckpt.RunDir(text).path
        return Path(text).expanduser()


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """The run directory can be made and may start fresh or resume (tjx.ckpt's `RunDir`
    decides; a fresh run never trains over a step folder, committed or not)."""
    try:
        with keyed("--run-dir", ckpt.NotCreatableError):
            ckpt.RunDir(run_dir).check_start(resume=resume)
    except ckpt.RunStartError as err:
        if err.resume:
            raise ConfigError(f"--resume: {err}; train without --resume first") from None
        raise ConfigError(
            f"--run-dir: {err}; pass --resume to continue or choose another --run-dir"
        ) from None


def _check_export_peft(cfg: Config, folder: str | None, model: Any) -> Path | None:
    """``--export-peft DIR``: a LoRA run of a Llama-family model (``model``: the tjx.nn config
    the run trains) without MLA, and a new or empty folder."""
    if folder is None:
        return None
    if not cfg.use_lora:
        raise ConfigError(
            "--export-peft: this run trains no adapters; set lora.enabled=true (a fully trained "
            "model is exported with eval --checkpoint RUN --export-hf DIR)"
        )
    if cfg.kind != "llama":
        raise ConfigError(
            f"--export-peft: PEFT adapters are written for Llama-family models, not "
            f"model.kind={cfg.kind} (HF's GPT-2 fuses q/k/v); export the merged model with eval "
            "--export-hf"
        )
    if getattr(model, "attention_type", None) == "mla":  # tjx.nn.save_peft would refuse at the end
        raise ConfigError(
            "--export-peft: PEFT adapters do not cover MLA attention (DeepSeek: its projections "
            "are not HF's q/k/v_proj); export the merged model with eval --export-hf"
        )
    path = Path(folder).expanduser()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise ConfigError(
            f"--export-peft: {path} exists and is not an empty folder; name a new one"
        )
    return path


def _overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, ``--data`` last (as ``data.source``)."""
    if args.data is None:
        return list(args.overrides)
    if not args.data.strip():
        raise ConfigError("--data: empty source; give a built-in name, hub name or path")
    return [*args.overrides, f"data.source={args.data}"]


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Everything validated; nothing written. Raises `ConfigError`."""
    overrides = _overrides(args)
    notes: list[str] = []  # an old key's new name: said once the command line is valid
    cfg = read_config(apply_overrides(load_config_data(args.config), overrides, notes.append))
    if args.data is not None and cfg.data.sources is not None:
        raise ConfigError(
            "--data: this config trains on the mixture data.sources; drop --data, or add "
            "--set data.sources=null to train on --data alone"
        )
    if cfg.data.sources is None:
        with keyed("data.source", data.DataError):  # a local file or folder must exist now
            data.check_local_source(cfg.data.source)
    for i, entry in enumerate(cfg.data.sources or []):
        with keyed(f"data.sources[{i}].source", data.DataError):
            data.check_local_source(str(entry["source"]))
    from tjx import metrics  # only for a valid config: it loads jax

    with keyed("logging.sinks"):  # an optional logger's package (tensorboardX, wandb) is there
        wandb_mode = cfg.logging.wandb_mode if "wandb" in cfg.logging.sinks else None
        metrics.check_logger_packages(cfg.logging.sinks, wandb_mode=wandb_mode)
    if args.init_from is not None and args.resume:  # before the checkpoint checks: the real issue
        raise ConfigError("--init-from: cannot be combined with --resume")
    run_dir = _run_location(args.run_dir or str(Path("runs") / cfg.name))
    _check_run_dir(run_dir, bool(args.resume))
    if cfg.data.cache_dir:
        with keyed("data.cache_dir", data.DataError, ckpt.NotCreatableError):
            ckpt.check_can_create(data.local_cache_folder(cfg.data.cache_dir))
    resume_changes: dict[str, tuple[object, object]] = {}
    if args.resume:  # before anything is written: a mismatch leaves the run as it was
        resume_changes = check_resume(run_dir, cfg.to_dict())
        check_chat_template(run_dir, cfg)
        if cfg.train.fit_memory and resume_changes.get("model.remat") == ("full", "none"):
            del resume_changes["model.remat"]  # the memory fit chose full remat, and will again
    if args.init_from is not None:
        check_init_from(cfg, args.init_from)
    export_peft = None
    if args.export_peft is not None:
        trained = trained_model(cfg, args.init_from, run_dir, bool(args.resume))
        export_peft = _check_export_peft(cfg, args.export_peft, trained)
    profile = parse_profile(args.profile_steps)
    if profile is not None and profile[1] > cfg.train.steps:
        raise ConfigError(
            f"--profile-steps: {args.profile_steps} ends after train.steps ({cfg.train.steps})"
        )
    with keyed(None, DistributedArgumentError):  # its message names the flag
        distributed = distributed_from_args(args)  # the environment fills the rest when joining
    print(*notes, sep="\n", file=sys.stderr, flush=True, end="\n" if notes else "")
    return RunPlan(
        cfg,
        run_dir,
        bool(args.resume),
        args.init_from,
        profile,
        distributed,
        resume_changes,
        export_peft,
    )


def _show_config(args: argparse.Namespace) -> int:
    """``--show-config``: the key table, with the values of ``--config``/``--set`` if given."""
    from trainer.show_config import render

    try:
        settings = load_config_data(args.config) if args.config is not None else {}
        cfg = read_config(apply_overrides(settings, list(args.overrides)))
        print(render(cfg, args.config), end="")
    except ConfigError as err:
        return error_exit(str(err))
    return 0


def plan_argv(argv: list[str]) -> RunPlan:
    """The validated `RunPlan` of a trainer command line; nothing is written.

    Parameters
    ----------
    argv : list[str]
        The arguments ``python -m trainer`` would take (``--config``, ``--set``, ``--run-dir``...).

    Returns
    -------
    RunPlan
        What `trainer.run` trains. Raises `ConfigError` for an invalid config or flag value,
        and ``SystemExit`` (argparse's) for a command line that does not parse.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        parser.error("the following arguments are required: --config")
    return plan_run(args)


def _first_lines(args: argparse.Namespace, cfg: Config) -> None:
    """The preset (or file) and only the keys this command changes; every key with
    ``--print-config`` (``config.yaml`` always saves them all)."""
    source = f"preset {args.config}" if args.config in preset_names() else args.config
    preset = load_config_data(args.config)
    keys = changed(preset, apply_overrides(preset, _overrides(args)))
    print(f"config: {source}" + (f"; changed: {', '.join(keys)}" if keys else ""), flush=True)
    if args.print_config:
        text = yaml.safe_dump(cfg.to_dict(), sort_keys=False)
        print("# effective config\n" + text, end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, validate everything, then train."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_config:
        return _show_config(args)
    if args.config is None:
        parser.error("the following arguments are required: --config")
    if args.plan is not None:  # compile for a device that is not here; nothing trained (#38)
        from trainer.target_plan import plan_from_args

        return plan_from_args(args)
    try:
        plan = plan_run(args)
    except ConfigError as err:
        return error_exit(str(err))
    _first_lines(args, plan.config)
    print(f"run directory: {plan.run_dir}", flush=True)
    if plan.resume_changes:
        print(describe_changes(plan.resume_changes), flush=True)
    from trainer.startup import run  # heavy imports (jax) only once the input is valid

    try:
        return run(plan)
    except KeyboardInterrupt:  # Ctrl-C before the loop's own handler was in place
        return interrupted_exit(plan.run_dir)
