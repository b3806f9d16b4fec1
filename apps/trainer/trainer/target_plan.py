"""``python -m trainer --config X --plan TARGET``: what a run needs on a device that is not here.

``TARGET`` is a name of tjx-metrics' device table, optionally with a count (``8xh100``); the run's
train and eval steps are compiled for it without it (tjx-metrics' `Target`: abstract GPUs or TPU
chips from tjx-parallel, XLA's real compiler for them; a missing package is one line saying what
to install). The plan says, in a few lines: the attention kernel ``auto`` takes there and why (a
kernel that fails costs one line, as in a run), whether each step compiles, its custom calls, its
compiled peak memory per device against the device's memory, what the trainer's memory fit would
do (full remat, then more micro-batches: advice, the trainer does not split a batch itself; a
compiler that refuses a step for its memory is "does not fit"), and an **estimated** step time
from tjx-metrics' roofline (`tjx.metrics.estimate`). Nothing is trained and no run directory is
written. Exit 2 with one error line when the step does not compile or does not fit even after the
memory fit.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tjx import metrics
from tjx.metrics import GIB, Compiled, Target, quiet_native_stderr
from trainer.config import Config
from trainer.plan import error_exit
from trainer.schema import ConfigError

Say = Callable[[str], None]


@dataclasses.dataclass
class PlanResult:
    """Everything the plan found (``--plan-json`` writes ``data``)."""

    target: str
    config: str
    data: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None


def open_target(text: str, flag: str = "--plan") -> Target:
    """The abstract devices of ``text`` (``"h100"``, ``"8xa100-40gb"``, ``"v5e"``); a
    `ConfigError` for an unknown target, a count that is not a power of two or a missing package."""
    from tjx import parallel

    try:
        device, count = metrics.parse_target(text)
    except ValueError as err:
        raise ConfigError(f"{flag}: {err}") from None
    try:
        metrics.check_packages(device.platform, flag)
    except ImportError as err:
        raise ConfigError(str(err)) from None
    metrics.use_cpu_platform()
    topology = device.topology(count)
    with quiet_native_stderr():
        if device.platform == "tpu":
            found = parallel.abstract_devices("tpu", topology)
        else:
            config = metrics.gpu_target_config(device)
            found = parallel.abstract_devices("cuda", topology, target_config=config)
    # One chip of the smallest TPU slice libtpu builds (v5e:1x1 is refused): the first `count`.
    return Target(device, count, found[:count])


def plan_vocab(run: Config) -> Config:
    """The run with its tokenizer's vocabulary, read without preparing any data (a BPE that is
    not trained yet is planned at ``data.tokenizer_vocab`` ids)."""
    from trainer.config import resolve

    if run.vocab_size or run.task == "classify":
        return resolve(run, int(run.vocab_size or 0))
    if run.data.tokenizer == "bpe":
        return resolve(run, int(run.data.tokenizer_vocab))
    from tjx import data
    from trainer.schema import keyed

    with keyed("data.tokenizer", data.DataError):
        tokenizer = data.load_tokenizer(run.data.tokenizer)
    return resolve(run, int(tokenizer.vocab_size))


def plan_from_args(args: argparse.Namespace) -> int:
    """``--plan``: the config (``--config``, ``--set``, ``--data``) resolved as a run resolves it,
    then planned on ``args.plan`` and printed; the exit code (0, or 2 with one error line)."""
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
        with quiet_native_stderr():
            resolved = read_config(apply_overrides(load_config_data(args.config), overrides))
            target = open_target(args.plan)
            result = plan(plan_vocab(resolved), target, args.plan, say=_say)
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

    devices = jax.devices()
    kind = str(devices[0].device_kind)
    found = metrics.accelerator(device) if device else metrics.accelerator_of(kind)
    if found is None:
        raise ConfigError(f"the device table has no entry for {kind!r}; pass device=")
    target = Target(found, len(devices), devices)
    result = plan(plan_vocab(resolved), target, found.key, say or (lambda line: None))
    return {**result.data, "error": result.error}


def _say(line: str) -> None:
    print(line, flush=True)


def compile_train(run: Config, target: Target, label: str, *, train: bool = True) -> Compiled:
    """Compile ``run``'s train step (or its eval step: one batch of ``eval.batch_size``, DPO's
    frozen reference params beside) for ``target``'s devices; a failure is kept, not raised (a
    `ConfigError` about the mesh or batch is raised)."""
    from tjx import kernels
    from trainer import abstract_run, dpo

    started = time.perf_counter()
    with kernels.target(*target.kernel_target), quiet_native_stderr():
        b = abstract_run.build(run, target.devices)

        def lower() -> Any:
            if train:
                return b.train_step.lower(b.state, b.batch)
            refs = dpo.reference_args(b.state)  # DPO's frozen reference params, if any
            return b.eval_step.lower(b.state["params"], b.eval_batch, *refs)

        return metrics.compile_lowered(lower, label, started)


def choose_kernel(run: Config, target: Target, say: Say) -> tuple[Config, Compiled, str]:
    """The attention kernel ``auto`` (or the config) takes on ``target``, said as a run says it,
    with its compiled train step: (run with that kernel, compiled step, the choice's line)."""
    from tjx import kernels
    from trainer import attention_choice

    lines: list[str] = []

    def tell(line: str) -> None:
        lines.append(line)
        say(line)

    built: dict[str, Compiled] = {}

    def build(kernel: str) -> None:
        built[kernel] = compile_train(run.with_model(attention_impl=kernel), target, kernel)
        if built[kernel].error is not None:
            raise RuntimeError(built[kernel].error)

    with kernels.target(*target.kernel_target):  # auto's kernels are the target's
        try:
            chosen, _ = attention_choice.choose_kernel(run, target.count, build, tell, say_xla=True)
        except kernels.KernelCompileError as err:
            raise ConfigError(f"--plan: {err}") from None
    if chosen not in built:
        built[chosen] = compile_train(run.with_model(attention_impl=chosen), target, chosen)
    return run.with_model(attention_impl=chosen), built[chosen], "; ".join(lines)


def fit(run: Config, target: Target, first: Compiled, say: Say) -> tuple[Config, Compiled, dict]:  # type: ignore[type-arg]
    """What the trainer's memory fit would do with ``first`` (the step as configured), then
    more micro-batches (`trainer.memory_fit.lighter`; tjx-metrics' `fit_compiled` says each):
    the run and step the plan goes on with, and what was tried."""
    from trainer.memory_fit import lighter

    sizes = run.mesh.resolve(target.count)  # a batch splits over data × fsdp
    steps = lighter(run, ways=int(sizes[1] * sizes[2]))
    tries = ((c, functools.partial(compile_train, c, target, change)) for c, change in steps)
    fitted, step, record = metrics.fit_compiled(first, tries, target.device, say)
    return run if fitted is None else fitted, step, record


def plan(run: Config, target: Target, text: str, say: Say) -> PlanResult:
    """Compile, fit and estimate ``run`` on ``target`` (see the module docstring)."""
    from tjx import kernels, nn
    from trainer.training import units_per_step

    result = PlanResult(text, run.name)
    data = result.data
    data.update(target=text, device=target.device.key, devices=target.count, config=run.name)
    say(
        f"plan: {run.name} on {target.describe()}, compiled without the device; nothing is "
        "trained, nothing written"
    )
    run, step, line = choose_kernel(run, target, say)
    data["attention"] = {"kernel": run.model.attention_impl, "line": line}
    first_error = step.error
    if first_error is not None and not step.out_of_memory:
        result.error = f"--plan {text}: the train step does not compile: {first_error}"
        data["train"] = {"compiles": False, "error": first_error}
        say(f"train step: does not compile ({first_error})")
        return result
    if step.error is None:
        say(f"train step: compiles ({step.seconds:.1f} s)")
        if step.note:
            say(f"  note: {step.note}")
    else:
        say(f"train step: the compiler refuses it for memory ({step.error[:120]})")
    fitted, chosen, memory = fit(run, target, step, say)
    data["memory"] = memory
    if not memory["fits"]:
        result.error = _does_not_fit(text, target, memory)
    text_hlo = (chosen.compiled.as_text() if chosen.compiled is not None else "") or ""
    data["train"] = {
        "compiles": chosen.compiled is not None,
        "compile_s": chosen.seconds,
        "peak_bytes": chosen.peak,
        "changes": chosen.label,
        "f32_dots": metrics.f32_dots(text_hlo),
        "note": chosen.note,
        "remat": fitted.model.remat,
        "accumulation_steps": fitted.optimizer.accumulation_steps,
    }
    if chosen.compiled is not None:
        units, seq = units_per_step(fitted), fitted.data.seq_len
        # Under a context split only each device's own block is causal: the others are priced
        # whole (its causal half overcounted: 1/C more attention work than is done; README).
        causal = fitted.task in ("lm", "seq2seq") and fitted.mesh.context == 1
        d = target.device
        data["estimate"] = metrics.estimate(
            chosen.compiled.as_text(),
            d,
            target.count,
            units=units,
            unit=fitted.objective.unit,
            model_flops=(  # causal attention at half (MaxText, torchtitan); PaLM's full
                nn.flops_per_unit(fitted.model, seq, causal_half=True) * units,
                nn.flops_per_unit(fitted.model, seq, causal_half=False) * units,
            ),
            say=say,
            custom_call_cost=kernels.roofline_costs(
                causal=causal, device_kind=d.device_kind, compute_capability=d.compute_capability
            ),
        )
        data["train"]["custom_calls"] = data["estimate"].pop("custom_calls")
    evaluated = compile_train(fitted, target, "the eval step", train=False)
    if evaluated.error is not None:
        say(f"eval step: does not compile ({evaluated.error})")
        result.error = result.error or f"--plan {text}: the eval step does not compile"
    else:
        assert evaluated.peak is not None
        say(
            f"eval step: compiles in {evaluated.seconds:.1f} s; {evaluated.peak / GIB:.2f} GiB "
            f"per device for a batch of {fitted.eval.batch_size}"
        )
    data["eval"] = {"compiles": evaluated.error is None, "peak_bytes": evaluated.peak}
    return result


def _does_not_fit(text: str, target: Target, memory: dict[str, Any]) -> str:
    budget = memory["budget_bytes"]
    peaks = [t["peak_bytes"] for t in memory["tried"] if t["peak_bytes"] is not None]
    over = f" by {(min(peaks) - budget) / GIB:.2f} GiB" if peaks else ""
    tried = ", ".join(t["change"] for t in memory["tried"][1:])
    return (
        f"--plan {text}: the train step does not fit{over} per device"
        f"{f' even with {tried}' if tried else ''}; lower data.batch_size or data.seq_len, or "
        f"shard the parameters and optimizer state over more devices (--plan "
        f"{4 * target.count}x{target.device.key} --set mesh.strategy=fsdp --set mesh.data=1 "
        "--set mesh.fsdp=-1)"
    )
