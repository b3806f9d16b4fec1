"""Command-line parsing for the trainer: read, override and validate everything before writing."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from tjx import ckpt, data  # no jax: neither loads it at import
from tjx.core import config, warning_lines
from tjx.core.lazy import lazy_imports
from tjx.parallel.arguments import (  # no jax (tjx.parallel loads it on first use)
    DISTRIBUTED_FLAGS,
    DistributedArgumentError,
    add_distributed_arguments,
    distributed_from_args,
)
from trainer.config.schema import ConfigError, keyed
from trainer.config.settings import (
    apply_overrides,
    load_config_data,
    parse_pair,
    preset_names,
    renamed,
    render,
)
from trainer.config.typed import SCHEMA, for_new_run, read_config
from trainer.loop.location import start_location
from trainer.loop.resume import (
    as_trained,
    check_chat_template,
    check_resume,
    describe_changes,
    resumed_data,
)
from trainer.plan.run_plan import RunPlan, error_exit, interrupted_exit

# They load jax (seconds): `--help` and a bad flag answer first; the modules load on first use.
with lazy_imports(globals()):
    from tjx import metrics, nn
    from trainer.plan import search, target_plan
    from trainer.start import replay, startup
    from trainer.step import init_from

SWITCH = {"action": "store_true"}
#: The trainer's own flags: (name, argparse keywords, help); a flag without keywords takes a value
#: (default None). --config is required except with --show-config: main checks it.
FLAGS: tuple[tuple[str, dict[str, Any], str], ...] = (
    ("--config", {}, "a preset name (see below) or a YAML file path"),
    ("--show-config", SWITCH, "print every config key (type, value, allowed values, help) and "
     "exit; with --config/--set, the values are that config's"),
    ("--print-config", SWITCH, "print the effective config (every key) before training; "
     "config.yaml saves it too"),
    ("--run-dir", {}, "where logs and checkpoints go (default: runs/<name>)"),
    ("--set", {"action": "append", "default": [], "metavar": "KEY=VALUE", "dest": "overrides"},
     "override a config value, e.g. --set optimizer.schedule.peak_lr=3e-4 (repeatable)"),
    ("--data", {}, "a built-in corpus, hub name or local path"),
    ("--resume", SWITCH, "continue from the run directory's latest checkpoint"),
    ("--init-from", {"metavar": "PATH_OR_HUB"}, "start from a Hugging Face checkpoint (a local "
     "folder, or a hub name such as gpt2 when online; the README's family table), or a tjx "
     "run's newest checkpoint (RUN_DIR, or RUN_DIR@STEP for that step's)"),
    ("--profile-steps", {"metavar": "A:B"}, "write a jax.profiler trace of steps"),
    ("--plan", {"metavar": "TARGET"}, "compile the run's steps for a device that is not here "
     "(h100, a100-40gb, 8xh100, v5e, ...) and print what it needs: kernel, memory, estimated "
     "step time; trains nothing"),
    ("--plan-json", {"metavar": "PATH"}, "with --plan: also write its figures"),
    ("--search", SWITCH, "with --plan: search the mesh, remat, micro-batch and kernels for the "
     "fastest config that fits the target (each compiled without it), write it as a YAML"),
    ("--search-budget", {"metavar": "MINUTES"}, "with --search: its time budget (default 10)"),
    ("--search-out", {"metavar": "PATH"}, "with --search: the winner's YAML (default "
     "<name>-<target>-search.yaml)"),
    ("--search-rollouts", {"metavar": "B,..."}, "with --search of an RL config: the rollout "
     "batches (data.batch_size: completions per rollout) to plan (default: half, once, twice "
     "and four times the configured one)"),
    ("--search-samplers", {"metavar": "N,..."}, "with --search of an RL config: the sampler "
     "devices of the overlapped splits to plan (grpo.overlap: 1; default: the rest a half, a "
     "quarter, ... of the devices; 0: overlap 0 only)"),
    ("--search-groups", {"metavar": "G,..."}, "with --search of an RL config: the group sizes "
     "(grpo.group_size: completions per prompt) to try, each at the rollout batches it divides "
     "(default: the configured one alone)"),
    ("--export-peft", {"metavar": "DIR"}, "with lora.enabled: write the trained adapters to DIR "
     "as a PEFT adapter (adapter_config.json + adapter_model.safetensors) when the run ends"),
    ("--replay", {"metavar": "RUN"}, "re-run steps of a finished, stopped or killed run from its "
     "nearest checkpoint, prove each logged loss reproduced bit for bit, probe them and write a "
     "report (with --steps A:B or --spikes); trains nothing, writes nothing into RUN's files"),
    ("--steps", {"metavar": "A:B"}, "with --replay: the logged steps to replay and probe, both "
     "included"),
    ("--spikes", SWITCH, "with --replay: replay each step the run marked as a loss spike "
     "(train.spike_sigma)"),
    ("--probe", {"metavar": "NAME,..."}, "with --replay: the probes (default: all that apply to "
     "the run): grad_norms, update_norms, activations, attention, documents, tokens"),
    ("--out", {"metavar": "DIR"}, "with --replay: the report's folder (default RUN/replay-A-B)"),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The trainer's argument parser."""
    parser = argparse.ArgumentParser(
        prog="trainer",
        description="Train a transformer with tjx.",
        epilog=f"presets: {', '.join(preset_names())}",
    )
    for name, how, text in FLAGS:
        parser.add_argument(name, help=text, **how)
    add_distributed_arguments(parser)  # the multi-host launch flags are tjx.parallel's
    return parser


def parse_profile(text: str | None, steps: int | None = None) -> tuple[int, int] | None:
    """``"10:15"`` → (10, 15), within ``steps`` if given; errors name the flag."""
    if text is None:
        return None
    start, stop = parse_pair("--profile-steps", text, "A:B with integers A < B")
    if not 0 <= start < stop:
        raise ConfigError(f"--profile-steps: expected 0 <= A < B, got {text!r}")
    if steps is not None and stop > steps:
        raise ConfigError(f"--profile-steps: {text} ends after train.steps ({steps})")
    return start, stop


def _overrides(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, ``--data`` last (as ``data.source``)."""
    if args.data is None:
        return list(args.overrides)
    if not args.data.strip():
        raise ConfigError("--data: empty source; give a built-in name, hub name or path")
    return [*args.overrides, f"data.source={args.data}"]


def _launch_flags(args: argparse.Namespace) -> argparse.Namespace:
    """Only the multi-host launch flags of ``args`` (`add_distributed_arguments`' destinations):
    what `distributed_from_args` reads, without the run's settings."""
    names = [flag.lstrip("-").replace("-", "_") for flag in DISTRIBUTED_FLAGS.values()]
    flags = [*names, "cluster"]
    return argparse.Namespace(**{n: getattr(args, n) for n in flags if hasattr(args, n)})


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Everything validated; nothing written. Raises `ConfigError`."""
    overrides, resume = _overrides(args), bool(args.resume)
    notes: list[str] = []  # an old key's new name: said once the command line is valid
    preset = load_config_data(args.config)
    # tjx.core.config's engine itself (trainer.config.settings' wrappers do the same): each --set
    # typed by its field, an old key name read as today's (said once the command line is valid)
    settings = config.apply_overrides(SCHEMA, preset, overrides, renamed, notes.append)
    keys = config.changed(SCHEMA, preset, settings)  # the first screen names only these
    if not resume:  # a resume reads them as its run trained (`as_trained`, below)
        settings, read_otherwise = for_new_run(settings)  # multi_steps as scan
        notes.extend(read_otherwise)
    cfg = read_config(settings)
    if args.data is not None and cfg.data.sources is not None:
        raise ConfigError(
            "--data: this config trains on the mixture data.sources; drop --data, or add "
            "--set data.sources=null to train on --data alone"
        )
    # a resumed run's relative sources read in another folder than it read them in: said
    resumed = resumed_data(args.run_dir or f"runs/{cfg.name}") if resume else None
    with keyed(None, data.DataError):  # a local file or folder must exist now (names the key)
        moved = data.check_local_sources(cfg.data, resumed=resumed)
    notes.extend([f"resume: {moved}"] if moved else [])
    with keyed("logging.sinks"):  # an optional logger's package (tensorboardX, wandb) is there
        metrics.check_logger_packages(cfg.logging.sinks, wandb_mode=cfg.logging.wandb_mode)
    if args.init_from is not None and resume:  # before the checkpoint checks: the real issue
        raise ConfigError("--init-from: cannot be combined with --resume")
    run_dir: Any = start_location(args.run_dir or f"runs/{cfg.name}", resume=resume)
    if cfg.data.cache_dir:
        with keyed("data.cache_dir", data.DataError, ckpt.NotCreatableError):
            ckpt.check_can_create(data.local_cache_folder(cfg.data.cache_dir))
    changes: dict[str, tuple[object, object]] = {}
    if resume:  # before anything is written: a mismatch leaves the run as it was
        settings, kept = as_trained(settings, run_dir)  # a newer setting at what the run did
        if kept:
            cfg = read_config(settings)
            notes.extend(kept)
        changes = check_resume(run_dir, cfg.to_dict())
        init_from.check_resumed_start(cfg, run_dir)  # a Hugging Face start's fixed architecture
        check_chat_template(run_dir, cfg)
        if cfg.train.fit_memory and changes.get("model.remat") == ("full", "none"):
            del changes["model.remat"]  # the memory fit chose full remat, and will again
    if args.init_from is not None:
        init_from.check_init_from(cfg, args.init_from)
    export_peft = None
    if args.export_peft is not None:
        if not cfg.use_lora:
            raise ConfigError(
                "--export-peft: this run trains no adapters; set lora.enabled=true (a fully "
                "trained model is exported with eval --checkpoint RUN --export-hf DIR)"
            )
        trained = init_from.trained_architecture(
            cfg.model, cfg.kind, args.init_from, run_dir, resume
        )
        with keyed("--export-peft"):  # what tjx.nn.save_peft would refuse at the end
            export_peft = nn.check_peft_export(trained, args.export_peft, "eval --export-hf")
    profile = parse_profile(args.profile_steps, cfg.train.steps)
    with keyed(None, DistributedArgumentError):  # its message names the flag
        # the environment fills the rest when joining
        distributed = distributed_from_args(_launch_flags(args))
    print(*notes, sep="\n", file=sys.stderr, flush=True, end="\n" if notes else "")
    return RunPlan(
        cfg, run_dir, resume, args.init_from, profile, distributed, changes, export_peft, keys
    )


def _show_config(args: argparse.Namespace) -> int:
    """``--show-config``: the key table, with the values of ``--config``/``--set`` if given."""
    try:
        settings = load_config_data(args.config) if args.config is not None else {}
        print(render(read_config(apply_overrides(settings, args.overrides)), args.config), end="")
    except ConfigError as err:
        return error_exit(str(err))
    return 0


def plan_argv(argv: list[str]) -> RunPlan:
    """The validated `RunPlan` (what `trainer.run` trains) of ``python -m trainer``'s ``argv``;
    nothing written. Raises `ConfigError`, or argparse's ``SystemExit`` for an unparsable line."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.config is None:
        parser.error("the following arguments are required: --config")
    return plan_run(args)


def _first_lines(args: argparse.Namespace, plan: RunPlan) -> None:
    """The preset (or file) and only the keys this command changes; every key with
    ``--print-config`` (``config.yaml`` always saves them all)."""
    source = f"preset {args.config}" if args.config in preset_names() else args.config
    keys = plan.overridden
    print(f"config: {source}" + (f"; changed: {', '.join(keys)}" if keys else ""), flush=True)
    if args.print_config:
        print("# effective config\n" + plan.config.to_yaml(), end="", flush=True)


def _check_replay_flags(args: argparse.Namespace) -> None:
    """``--replay``'s own flags do nothing without it: a `ConfigError` naming the flag."""
    mine = (("--steps", args.steps), ("--spikes", args.spikes), ("--probe", args.probe),
            ("--out", args.out))  # fmt: skip
    for flag, value in mine:
        if value and args.replay is None:
            raise ConfigError(
                f"{flag}: applies to --replay RUN, which this command does not ask for; add "
                f"--replay RUN or drop {flag}"
            )


def _check_plan_flags(args: argparse.Namespace) -> None:
    """``--plan``'s and ``--search``'s own flags do nothing without them (a run would train and
    write no such file): a `ConfigError` naming the flag."""
    if args.plan_json is not None and args.plan is None and not args.search:
        raise ConfigError(
            "--plan-json: writes the figures of --plan TARGET, which this command does not ask "
            "for; add --plan TARGET or drop --plan-json"
        )
    flags = (("--search-out", args.search_out), ("--search-budget", args.search_budget),
             ("--search-rollouts", args.search_rollouts),
             ("--search-samplers", args.search_samplers),
             ("--search-groups", args.search_groups))  # fmt: skip
    for flag, value in flags:
        if value is not None and not args.search:
            raise ConfigError(
                f"{flag}: applies to --plan TARGET --search, which this command does not ask "
                f"for; add --search or drop {flag}"
            )


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, validate everything, then train; a Python warning on the way is
    one ``trainer: warning: ...`` line (tjx.core's `warning_lines`), not Python's two."""
    with warning_lines("trainer"):
        return _main(argv)


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.show_config:
        return _show_config(args)
    if args.replay is not None:  # the run's own config, steps and data: no --config
        return replay.replay_from_args(args)
    try:
        _check_replay_flags(args)
    except ConfigError as err:
        return error_exit(str(err))
    if args.config is None:
        parser.error("the following arguments are required: --config")
    try:
        _check_plan_flags(args)
    except ConfigError as err:
        return error_exit(str(err))
    if args.search:  # --plan TARGET --search: the fastest config that fits it
        return search.search_from_args(args)
    if args.plan is not None:  # compile for a device that is not here; nothing trained
        return target_plan.plan_from_args(args)
    try:
        plan = plan_run(args)
    except ConfigError as err:
        return error_exit(str(err))
    _first_lines(args, plan)
    print(f"run directory: {plan.run_dir}", flush=True)
    if plan.resume_changes:
        print(describe_changes(plan.resume_changes), flush=True)
    try:
        return startup.run(plan)  # the first use of jax: the input is valid
    except KeyboardInterrupt:  # Ctrl-C before the loop's own handler was in place
        return interrupted_exit(plan.run_dir)
