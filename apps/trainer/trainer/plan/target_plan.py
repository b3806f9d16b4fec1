"""``python -m trainer --config X --plan TARGET``: what a run needs on a device that is not here.

``TARGET`` is a name of tjx-metrics' device table, optionally with a count (``8xh100``). The run's
steps, built as a run builds them but over abstract inputs (no parameter is created; state donated
and sharded as the run lays it out), are compiled by XLA's real compiler for the target's abstract
devices; tjx-metrics' `plan_report` says the kernel choice, each step's compile and peak memory,
the memory fit (advice: the trainer does not split a batch itself) and an **estimated** step time.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import time
from collections.abc import Callable
from typing import NamedTuple, cast

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx import data, kernels, metrics, nn, parallel
from tjx.metrics import GIB, Compiled, Target, quiet_native_stderr
from tjx.metrics.accelerators import has_fp8_units
from trainer.config.grpo_settings import is_grpo
from trainer.config.schema import ConfigError, keyed
from trainer.config.seams import Record
from trainer.config.settings import load_config
from trainer.config.typed import (
    XLA_KERNELS,
    Config,
    StepConfig,
    resolve,
    step_config,
    units_per_step,
)
from trainer.plan import rollout_plan
from trainer.plan.memory_fit import Say, lighter, resolve_kernel
from trainer.plan.plan_report import PlanResult, local_target, open_target, plan_report
from trainer.plan.run_plan import error_exit, output_file
from trainer.plan.step_plan import batch_shapes, roofline_inputs
from trainer.step import dpo, grpo, init_from
from trainer.step import train_step as steps  # looked up at the call: a test may replace the step
from trainer.step.state import abstract_state, make_mesh
from trainer.step.train_state import TrainState


class AbstractRun(NamedTuple):
    """The jitted steps of a run and their abstract, sharded arguments."""

    train_step: jax.stages.Wrapped
    #: The state's leaves are ``jax.ShapeDtypeStruct``s with their shardings.
    state: TrainState
    batch: dict[str, jax.ShapeDtypeStruct]
    eval_step: jax.stages.Wrapped
    eval_batch: dict[str, jax.ShapeDtypeStruct]


def build(run: StepConfig, devices: list[jax.Device]) -> AbstractRun:
    """The run's steps over ``devices`` (abstract or real), with the run's mesh and rules; a
    `ConfigError` for a mesh or batch that does not split over them, or a pipelined mesh."""

    if run.mesh.pipeline > 1:
        raise ConfigError("mesh.pipeline: a pipelined run is not planned without its devices yet")
    mesh, rules = make_mesh(
        run.mesh, run.mesh_needs(), devices
    )  # ZeRO over fsdp × context under a split
    split = parallel.context_parallel(mesh, rules, run.mesh)  # as state.build: None unless split
    experts = parallel.expert_parallel(mesh, rules) if run.model.moe.num_experts else None
    parts = abstract_state(run)
    shardings = parallel.state_shardings(parts.state, mesh, rules, param_specs=parts.specs)
    state = jax.tree.map(
        lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), parts.state, shardings
    )
    concrete_rest = nn.concrete_state(parts.rest)
    step = steps.make_train_step(parts.graphdef, concrete_rest, parts.tx, run, split, experts)
    train = jax.jit(step, donate_argnums=(0,), out_shardings=(shardings, None))
    evaluate = jax.jit(steps.make_eval_step(parts.graphdef, concrete_rest, run, split))

    def batch(size: int) -> dict[str, jax.ShapeDtypeStruct]:  # split over the batch axes
        shapes = batch_shapes(
            run.task, run.data.batch_rows(size), run.data.seq_len, **run.image_shape
        )
        if is_grpo(run.data):  # the rollout batch the loop makes (trainer.step.grpo)
            shapes = grpo.batch_shapes(run)
        on = functools.partial(parallel.batch_sharding, mesh)
        return {k: jax.ShapeDtypeStruct(s, d, sharding=on(len(s))) for k, (s, d) in shapes.items()}

    return AbstractRun(
        train, state, batch(run.data.batch_size), evaluate, batch(run.eval.batch_size)
    )


def device_bytes(tree: object) -> int:
    """Bytes one device holds of an abstract, sharded tree (each leaf's shard)."""
    return sum(
        math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize for x in jax.tree.leaves(tree)
    )


def full_bytes(tree: object) -> int:
    """Bytes of a tree's leaves, whole (not per device)."""
    return sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def compile_rollout(
    run: StepConfig,
    target: Target,
    cache: dict[str, Compiled] | None = None,
) -> list[tuple[str, Compiled]]:
    """A GRPO run's rollout programs compiled for ``target``: tjx.nn's generation (prefill and
    one decode step, `lower_generation`) of ``data.batch_size`` completions of prompts padded
    to ``data.seq_len``, with the run's sampling settings and its parameters as the train state
    lays them out; each (label, result), a failure kept. The held-out greedy completions run
    the same programs at ``eval.batch_size`` rows.

    Where they run: one after the other (``grpo.overlap: 0``), on the trainer's mesh, whose
    devices keep the optimizer state while sampling: each program's peak counts it. Overlapped,
    on the sampler's devices (the last ``grpo.sampler_devices``; trainer.step.grpo's
    `Rollouts`): the policy replicated, the rollout's rows split over them (data parallel: each
    samples ``data.batch_size / N``), π_old's log-probabilities there too; nothing else is
    resident. ``cache`` (by label and N) keeps a program across a search's candidates.
    """
    r = run.rollout
    rows, prompt = run.data.batch_size, run.data.seq_len
    overlap = r.sampler_devices > 0
    out: list[tuple[str, Compiled]] = []
    with kernels.target(*target.kernel_target), quiet_native_stderr():
        b = build(run, target.devices)
        mesh, _ = make_mesh(run.mesh, run.mesh_needs(), target.devices)
        parts = abstract_state(run)
        if overlap:  # the sampler's devices: the last ones (trainer.step.grpo's sampler_devices)
            sampler = Mesh(np.array(target.devices[target.count - r.sampler_devices :]),
                           ("sampler",))  # fmt: skip
            whole = NamedSharding(sampler, PartitionSpec())
            split = NamedSharding(sampler, PartitionSpec("sampler"))
            resident = 0  # the sampler holds the policy (the programs' arguments) only
        else:  # the trainer's devices also hold the optimizer state while they sample
            resident = device_bytes(b.state) - device_bytes(b.state.model_tree())

        def place(x: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:  # rows over the batch axes
            ours = bool(x.shape) and x.shape[0] == rows
            if overlap:  # trainer.step.grpo's `Rollouts.on_sampler`
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=split if ours else whole)
            sharding = parallel.batch_sharding(mesh, len(x.shape))
            if not ours:
                sharding = NamedSharding(mesh, PartitionSpec())
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

        def replicate(x: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:  # the policy's weights
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=whole)

        def place_cache(x: jax.ShapeDtypeStruct) -> jax.ShapeDtypeStruct:  # rows: axis 1
            ours = len(x.shape) > 1 and x.shape[1] == rows
            spec = PartitionSpec(None, "sampler") if ours else PartitionSpec()
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(sampler, spec))

        rest = nn.split_fp8_meta(nn.concrete_state(parts.rest))[0]
        rest = jax.tree.map(replicate if overlap else place, jax.eval_shape(lambda: rest))
        tree = b.state.model_tree()
        batch = b.batch
        if overlap:  # the weights copied to the sampler, the rollout made there, rows split
            tree, batch = jax.tree.map(replicate, tree), jax.tree.map(place, batch)
        model = nnx.merge(parts.graphdef, tree, rest)

        def lower(which: str) -> jax.stages.Lowered:
            programs = nn.lower_generation(
                model,  # type: ignore[arg-type]
                rows,
                prompt,
                max_new_tokens=r.max_new_tokens,
                temperature=r.temperature,
                top_p=r.top_p,
                place=place,
                # overlapped: the cache's rows split as the run's sampler splits them
                place_cache=place_cache if overlap else None,
                # π_old from the decode: the programs that also score each sampled token
                logprobs=r.old_from_decode,
            )
            return getattr(programs, which)  # type: ignore[no-any-return]

        def held(label: str, lowered: Callable[[], jax.stages.Lowered]) -> Compiled:
            """Compiled (or the cache's), its peak with what the devices keep resident."""
            # The model's settings a fit may change are in the key, and the split's N (the
            # rows each sampler device holds)
            m, n = run.model, r.sampler_devices
            key = (f"{label} on {n} samplers ({m.remat}, {m.attention_impl}, "
                   f"{r.old_from_decode})" if overlap else "")  # fmt: skip
            one = cache.get(key) if cache is not None and key else None
            if one is None:
                one = metrics.compile_lowered(lowered, label, findings=target.findings)
                if cache is not None and key:
                    cache[key] = one
            if resident and one.peak is not None:
                note = (f"{one.note}; " if one.note else "") + (
                    f"with the optimizer state the devices keep ({resident / GIB:.2f} GiB)"
                )
                one = dataclasses.replace(one, peak=one.peak + resident, note=note)
            return one

        cache_len = prompt + r.max_new_tokens
        for which, label in (
            ("prefill", rollout_plan.prefill_label(rows, prompt)),
            ("decode", rollout_plan.decode_label(rows, cache_len)),
        ):
            out.append((label, held(label, functools.partial(lower, which))))
        passes = rollout_plan.logps_passes(r.iterations, run.grpo.beta, overlap, r.old_from_decode)
        if passes or rollout_plan.trainer_passes(run.grpo.beta, overlap):
            # π_old's (unless the decode's) and the reference's log-probabilities
            # (trainer.step.grpo's `Rollouts`): one forward over the rollout batch each, the
            # same program
            width = b.batch["inputs"].shape[1]
            label = rollout_plan.logps_label(rows, width)

            def scored(tree: nnx.State, rest: nnx.State, batch: dict[str, jax.Array]) -> jax.Array:
                model = cast(nn.DecoderLM, nnx.merge(parts.graphdef, tree, rest))
                return nn.grpo.token_logprobs(model, batch, temperature=r.temperature)

            def lower_logps() -> jax.stages.Lowered:
                return jax.jit(scored).lower(tree, rest, batch)

            out.append((label, held(label, lower_logps)))
    return out


def compile_train(run: StepConfig, target: Target, label: str, *, train: bool = True) -> Compiled:
    """``run``'s train (or eval) step compiled for ``target``'s devices: a failure is kept, not
    raised (a `ConfigError` about the mesh or batch is raised)."""

    started = time.perf_counter()
    with kernels.target(*target.kernel_target), quiet_native_stderr():
        b = build(run, target.devices)

        def lower() -> jax.stages.Lowered:
            if train:
                return b.train_step.lower(b.state, b.batch)
            refs = dpo.reference_args(b.state)  # DPO's frozen reference params, if any
            return b.eval_step.lower(b.state.model_tree(), b.eval_batch, *refs)

        return metrics.compile_lowered(lower, label, started, target.findings)


def plan_vocab(run: Config) -> Config:
    """The run with its tokenizer's vocabulary, read without preparing any data (a BPE that is
    not trained yet is planned at ``data.tokenizer_vocab`` ids)."""

    vocab = int(run.vocab_size or 0)
    if not vocab and run.task != "classify":
        with keyed("data.tokenizer", data.DataError):
            vocab = data.config_vocab(run.data)
    return resolve(run, vocab)


def plan_from_args(args: argparse.Namespace) -> int:
    """``--plan``: the config (``--config``, ``--set``, ``--data``; ``--init-from``'s
    architecture, `trainer.step.init_from.start_config`) resolved as a run resolves it, then
    planned on ``args.plan`` and printed; the exit code (0, or 2 with one error line)."""

    try:
        if args.resume:
            raise ConfigError(
                "--plan: plans a fresh run (or one --init-from starts); drop --resume"
            )
        # Where the figures go, before the plan compiles (it writes there at the end)
        out = output_file(args.plan_json, "--plan-json", "plan.json") if args.plan_json else None
        sets = [*args.overrides, *([] if args.data is None else [f"data.source={args.data}"])]
        # The native libraries' start-up chatter (the CUDA plugin, libtpu) stays off the terminal
        with quiet_native_stderr():
            resolved = load_config(args.config, sets)
        if args.init_from is not None:  # the architecture the start fixes; its notes said
            resolved = init_from.start_config(resolved, args.init_from)
        check_split(resolved, args.plan)
        with quiet_native_stderr():
            target = open_target(
                args.plan,
                parallel.abstract_devices,
                compilation_cache=resolved.train.compilation_cache,
            )
            say = functools.partial(print, flush=True)
            result = plan(plan_vocab(resolved), target, args.plan, say)
    except (ValueError, ImportError) as err:  # a ConfigError, or a target that cannot be planned
        return error_exit(str(err))
    if out is not None:
        try:
            out.write_text(json.dumps(result.data, indent=1, default=str) + "\n")
        except OSError as err:  # checked writable above: a full disk, a folder gone since
            return error_exit(f"--plan-json: cannot write {str(out)!r} ({err.strerror or err})")
    return 0 if result.error is None else error_exit(result.error)


def target_count(text: str) -> int:
    """The device count of ``--plan TARGET`` (``8xh100``: 8), read without opening its compiler
    (a `ConfigError` for an unknown target)."""
    try:
        return metrics.parse_target(text)[1]
    except ValueError as err:
        raise ConfigError(f"--plan: {err}") from None


def check_split(run: Config, text: str) -> None:
    """An overlapped GRPO run's split against ``--plan TARGET``'s devices, before its compiler
    is opened: a `ConfigError` (trainer.step.state's `trainer_devices`' words) when the sampler
    leaves no trainer."""
    sampler = run.rollout.sampler_devices if is_grpo(run.data) else 0
    count = target_count(text)
    if sampler and sampler >= count:
        raise ConfigError(
            f"grpo.sampler_devices: {sampler} of --plan {text}'s {count} devices sample, which "
            f"leaves none to train on; set it to at most {count - 1}"
            if count > 1 else
            f"grpo.overlap: 1 samples and trains on devices of their own, and --plan {text} is "
            "one device; set grpo.overlap=0 and grpo.sampler_devices=0, or plan more devices"
        )  # fmt: skip


def plan_here(resolved: Config, *, device: str | None = None, say: Say | None = None) -> Record:
    """The plan of ``resolved`` on this machine's devices, estimated as the table's entry for
    their kind (or ``device``): the GPU suite's figures. A `ConfigError` if the table has none."""
    with keyed(None):
        target = local_target(device)
    result = plan(plan_vocab(resolved), target, target.device.key, say or (lambda line: None))
    return {**result.data, "error": result.error}


def check_fp8(precision: nn.Precision, device: jax.Device | metrics.Accelerator) -> None:
    """A ConfigError where ``model.precision.matmul=fp8`` meets a device without float8 matrix
    units (tjx-metrics' device table: A100, the TPUs; a CPU emulates them, for tests).

    Parameters
    ----------
    precision : Precision
        The run's ``model.precision`` (all the check reads of the model).
    device : jax.Device or Accelerator
        A running device, or a plan's target.
    """
    if not precision.fp8:
        return
    if isinstance(device, metrics.Accelerator):
        ok, name = device.fp8_units, device.key
    elif device.platform == "cpu":
        return
    else:
        cc = getattr(device, "compute_capability", None)
        ok = has_fp8_units(device.platform, device.device_kind, cc)
        name = str(device.device_kind)
    if not ok:
        raise ConfigError(
            f"model.precision.matmul=fp8: {name} has no float8 matrix units (those are NVIDIA "
            "compute capability 8.9+: H100, H200, B200); use model.precision.matmul=default"
        )


#: The most devices a plan compiles for (tjx-metrics' deviceless topologies).
MOST_PLANNED = 256


def state_floor(step: StepConfig, target: Target, text: str, name: str) -> PlanResult | None:
    """The plan's end before any compile when the train state alone (parameters, optimizer state:
    its abstract shapes, nothing created) cannot fit ``target``'s devices even split evenly over
    all of them: a release's real size on too few devices (a 671 B model's state is ~8 TB).
    Its one line says how many of the target's devices it would take at least; None if it may
    fit (the compile and the memory fit decide)."""
    # The state's shapes do not depend on the attention kernel: built with XLA's, which any
    # target runs, so the kernel's own checks stay where the plan chooses it.
    state = abstract_state(step.with_model(**XLA_KERNELS)).state
    params = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state.params))
    total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
    need = metrics.devices_for_bytes(total, target.device)
    if need <= target.count:
        return None
    result = PlanResult(text, name)
    device = target.device
    budget, _ = metrics.budget_bytes(device)
    plannable = 1 << (need - 1).bit_length()  # --plan compiles power-of-two counts up to 256
    where = (
        f"plan it on --plan {plannable}x{device.key} --set mesh.strategy=fsdp --set mesh.data=1 "
        "--set mesh.fsdp=-1"
        if plannable <= MOST_PLANNED
        else f"that is more than the {MOST_PLANNED} devices --plan compiles for"
    )
    result.data.update(target=text, device=device.key, devices=target.count, config=name,
                       state_bytes=total, devices_needed=need)  # fmt: skip
    result.error = (
        f"--plan {text}: the train state alone is {total / GIB:,.0f} GiB (parameters "
        f"{params / GIB:,.0f} GiB, optimizer state {(total - params) / GIB:,.0f} GiB), more than "
        f"{target.count} × {budget / GIB:.1f} GiB (what a step may use of each {device.name}): "
        f"it needs at least {need} {device.key} devices before any activation; {where}, or "
        "train fewer parameters (LoRA)"
    )
    return result


def plan(
    run: Config,
    target: Target,
    text: str,
    say: Say,
    rollout_cache: dict[str, Compiled] | None = None,
) -> PlanResult:
    """``run`` compiled, fitted and estimated on ``target`` (tjx-metrics' `plan_report`); ended
    before any compile where the train state alone cannot fit (`state_floor`). A search passes
    ``rollout_cache`` to compile an overlapped rollout's programs once (`compile_rollout`)."""
    check_fp8(run.model.precision, target.device)
    step = step_config(run)  # what the steps compile: the model, optimizer, data shapes, mesh
    floor = state_floor(step, target, text, run.name)
    if floor is not None:
        return floor

    def choose(build: Callable[[str], None], tell: Say) -> str:
        with kernels.target(*target.kernel_target):  # auto's kernels are the target's
            try:
                return resolve_kernel(step, target.count, build, tell, say_xla=True).name
            except kernels.KernelCompileError as err:
                raise ConfigError(f"--plan: {err}") from None

    rollout: list[tuple[str, Compiled]] = []  # the rollout's programs, kept for its estimate

    def programs(r: StepConfig) -> list[tuple[str, Compiled]]:
        rollout[:] = compile_rollout(r, target, rollout_cache)
        return rollout

    estimate_args = lambda r: roofline_inputs(
        r.model, r.data.seq_len, units_per_step(r), r.mesh.context, target.device
    )
    result = plan_report(
        run.name,
        target,
        text,
        say,
        choose=choose,
        with_kernel=lambda kernel: step.with_model(attention_impl=kernel),
        compile_step=lambda r, label, train: compile_train(r, target, label, train=train),
        lighter=lambda r: lighter(r, fit_devices(run, target.count)),
        settings={"remat": "model.remat", "accumulation_steps": "optimizer.accumulation_steps"},
        estimate_args=estimate_args,
        eval_rows=lambda r: r.eval.batch_size,
        programs=programs if is_grpo(run.data) else None,
    )
    if rollout:
        rollout_estimate(result, step, rollout, target, estimate_args, say)
    return result


def fit_devices(run: Config, count: int) -> int | None:
    """The devices the memory fit splits the update's micro-batches over (`lighter`): the
    target's ``count``, less an overlapped GRPO run's sampler devices (the update runs on the
    rest); None (full remat only) where GRPO's update cannot take micro-batches (the entropy
    mask's quantile is the whole batch's: trainer.config's rule)."""
    if not is_grpo(run.data):
        return count
    if run.grpo.top_entropy_quantile < 1.0:
        return None
    return count - (run.rollout.sampler_devices if run.rollout.overlap else 0)


def rollout_estimate(
    result: PlanResult,
    run: StepConfig,
    compiled: list[tuple[str, Compiled]],
    target: Target,
    estimate_args: Callable[[StepConfig], Record],
    say: Say,
) -> None:
    """An RL plan's rollout time beside its update (`trainer.plan.rollout_plan`), said and kept
    as ``result.data["rollout"]``: from the compiled prefill and decode step's costs and the
    train step's estimate; nothing where one of them is missing (the plan's error says why)."""
    programs = dict(compiled)
    r, rows, prompt = run.rollout, run.data.batch_size, run.data.seq_len
    prefill = programs.get(rollout_plan.prefill_label(rows, prompt))
    decode = programs.get(rollout_plan.decode_label(rows, prompt + r.max_new_tokens))
    overlap = r.sampler_devices > 0
    passes = rollout_plan.logps_passes(r.iterations, run.grpo.beta, overlap, r.old_from_decode)
    on_trainer = rollout_plan.trainer_passes(run.grpo.beta, overlap)
    width = prompt + r.max_new_tokens - 1  # the rollout batch's rows (trainer.step.grpo)
    scoring = passes or on_trainer
    scored = programs.get(rollout_plan.logps_label(rows, width)) if scoring else None
    update = result.data.get("estimate")
    needed = [prefill, decode, *([scored] if scoring else [])]
    if update is None or any(p is None or p.compiled is None for p in needed):
        return
    assert prefill is not None and decode is not None
    cost = estimate_args(run)["custom_call_cost"]  # the train step's prices of tjx's kernels

    def priced(one: Compiled) -> metrics.ProgramCost:
        return metrics.program_cost(
            one.compiled.as_text() or "", target.device, custom_call_cost=cost
        )

    # Overlapped, the policy is copied to the sampler once a rollout: its bytes over one link
    # (each sampler device receives the whole policy; tjx-metrics' per-direction figure).
    policy = full_bytes(abstract_state(run).state.model_tree()) if overlap else 0
    found = rollout_plan.RolloutEstimate(
        rows, r.group_size, prompt, r.max_new_tokens, priced(prefill), priced(decode),
        float(update["seconds"]), r.iterations, passes,
        priced(scored) if scored is not None else None,
        sampler_devices=r.sampler_devices,
        copy_s=policy / target.device.link_bandwidth,
        policy_bytes=policy,
        trainer_passes=on_trainer,
        decoded=r.old_from_decode,
    )  # fmt: skip
    for line in found.lines():
        say(line)
    result.data["rollout"] = found.record()
