"""``python -m trainer --config X --plan TARGET``: what a run needs on a device that is not here.

The run's train and eval steps are compiled for ``TARGET`` without it (`trainer.deviceless`:
abstract GPUs or TPU chips, XLA's real compiler for them) and the plan says, in a few lines: the
attention kernel ``auto`` takes there and why (a kernel that fails costs one line, as in a run),
whether each step compiles, its custom calls, its compiled peak memory per device against the
device's memory, what the trainer's memory fit would do (full remat, then a smaller micro-batch),
and an **estimated** step time from tjx-metrics' roofline over the optimized program, with the
estimated MFU (causal attention at half, MaxText's and torchtitan's convention; PaLM's beside it)
and, on a mesh, the collectives. Nothing is trained and no run directory is written. Exit 2 with
one error line when the step does not compile or does not fit even after the memory fit.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from trainer.config import Config
from trainer.plan import error_exit
from trainer.plan_compile import Say
from trainer.schema import ConfigError


def plan_vocab(run: Config) -> Config:
    """The run with its tokenizer's vocabulary, read without preparing any data (a BPE that is
    not trained yet is planned at ``data.tokenizer_vocab`` ids)."""
    from trainer.config import resolve

    cfg = run
    if cfg.vocab_size or cfg.task == "classify":
        return resolve(run, int(cfg.vocab_size or 0))
    if cfg.data.tokenizer == "bpe":
        return resolve(run, int(cfg.data.tokenizer_vocab))
    from tjx import data
    from trainer.schema import keyed

    with keyed("data.tokenizer", data.DataError):
        tokenizer = data.load_tokenizer(cfg.data.tokenizer)
    return resolve(run, int(tokenizer.vocab_size))


def plan_from_args(args: argparse.Namespace) -> int:
    """``--plan``: the config (``--config``, ``--set``, ``--data``) resolved as a run resolves it,
    then planned on ``args.plan`` and printed; the exit code (0, or 2 with one error line)."""
    from trainer import deviceless, plan_report
    from trainer.config import read_config
    from trainer.settings import apply_overrides, load_config_data

    try:
        if args.resume or args.init_from:
            raise ConfigError("--plan: plans a fresh run; drop --resume / --init-from")
        overrides = list(args.overrides)
        if args.data is not None:
            overrides.append(f"data.source={args.data}")
        # The native libraries' start-up chatter (jax loading the CUDA plugin or libtpu, the CUDA
        # stub's "no driver") stays off the terminal; the plan's lines go to stdout.
        with deviceless.quiet_native_stderr():
            resolved = read_config(apply_overrides(load_config_data(args.config), overrides))
            target = deviceless.open_target(args.plan)
            result = plan_report.plan(plan_vocab(resolved), target, args.plan, say=_say)
    except ConfigError as err:
        return error_exit(str(err))
    if args.plan_json:
        Path(args.plan_json).write_text(json.dumps(result.data, indent=1, default=str) + "\n")
    if result.error is not None:
        return error_exit(result.error)
    return 0


def plan_here(
    resolved: Config, *, device: str | None = None, say: Say | None = None
) -> dict[str, Any]:
    """The plan of ``resolved`` on this machine's own devices (compiled for them, as a run
    compiles), estimated against the device table's entry for their kind (or ``device``): the
    figures the GPU suite puts beside its measurements. Raises `ConfigError` when the table has no
    entry for this device kind and ``device`` is not given."""
    import jax

    from tjx import metrics
    from trainer import plan_report
    from trainer.deviceless import Target

    devices = jax.devices()
    kind = str(devices[0].device_kind)
    found = metrics.accelerator(device) if device else metrics.accelerator_of(kind)
    if found is None:
        raise ConfigError(f"the device table has no entry for {kind!r}; pass device=")
    target = Target(found, len(devices), devices)
    result = plan_report.plan(plan_vocab(resolved), target, found.key, say or (lambda line: None))
    return {**result.data, "error": result.error}


def _say(line: str) -> None:
    print(line, flush=True)
