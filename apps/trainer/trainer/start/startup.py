"""A run's start-up, from a validated plan: join the other processes, lock the run directory,
prepare everything that can fail on bad input (data, attention kernel, memory fit, model,
optimizer, mesh) before anything is written, write the run directory, then hand over to the step
loop (trainer/loop/training.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path

import jax
import yaml  # type: ignore[import-untyped]

import trainer.loop.multihost as multihost
import trainer.loop.training as training
import trainer.plan.first_compile as first_compile
import trainer.plan.memory_fit as memory_fit
import trainer.plan.target_plan as target_plan
import trainer.step.data_setup as data_setup
import trainer.step.grpo as grpo
import trainer.step.state as state
from tjx import kernels, parallel
from tjx.ckpt import NotCreatableError, RunLockedError
from trainer.config.folder import RunDir
from trainer.config.grpo_settings import is_grpo, prompt_section
from trainer.config.schema import ConfigError
from trainer.config.typed import Config, resolve, step_config
from trainer.loop.location import in_use
from trainer.plan.run_plan import RunPlan, error_exit
from trainer.start.device_notes import device_notes
from trainer.start.xla_flags import apply_gpu_autotune
from trainer.step import init_from
from trainer.step.train_step import TrainStep

# A dead peer is caught by the peer watch (multihost.watch) within seconds; a slow first-time
# tokenization of a large corpus is not an error.
DATA_READY_TIMEOUT_S = 6 * 3600.0


def _device_note(cfg: Config) -> None:
    setting = cfg.train.compilation_cache
    # GPU only: a rerun skips compiling and autotuning. "auto" leaves the folder to tjx.kernels.
    cache = kernels.enable_compilation_cache(None if setting == "auto" else setting)
    print("\n".join(device_notes(cache, "train.compilation_cache")), flush=True)


def run(plan: RunPlan) -> int:
    """Train as planned; exit code 0 on success or after a signal-triggered save, 2 on bad input."""

    # Before anything starts JAX's backend (it reads XLA_FLAGS once).
    added = apply_gpu_autotune(plan.config.train.gpu_autotune)
    if added:
        print(f"xla: {' '.join(added)} (train.gpu_autotune)", flush=True)
    # Multi-host: the flags, else JAX_COORDINATOR_ADDRESS/... or the cluster JAX detects; none:
    # one process. A setup that cannot work is one error line here, never a hang.
    try:
        # What the processes compare: the effective config's text (the object stays here)
        text = yaml.safe_dump(plan.config.to_dict(), sort_keys=True)
        info = multihost.join(plan.distributed, text, resume=plan.resume, init_from=plan.init_from)
    except multihost.JoinError as err:
        return error_exit(str(err), code=err.code)
    if (info.num_processes or 1) > 1:
        where = f"coordinator {info.coordinator}, setup from {info.source}"
        print(
            f"multi-host: process {info.process_id} of {info.num_processes} ({where})", flush=True
        )
    try:
        lock = _lock(plan.run_dir)
    except ConfigError as err:
        return error_exit(str(err))
    # A peer that dies ends this process within seconds, in one line (multihost.watch). The
    # lock is released however the run ends (os._exit's ways: tjx.ckpt.release_held_locks).
    with lock, multihost.watch(plan.run_dir):
        return _prepare_and_train(plan)


#: Said when GRPO starts from random weights: GRPO learns only from completions that score, and
#: a random policy's score ~0, so such a run only spends its steps.
RL_FROM_SCRATCH = (
    "GRPO (data.format=prompts) trains from random weights here, at ~0 reward: nothing for it "
    "to learn from; start from an SFT checkpoint that solves some of the prompts with "
    "--init-from RUN (a run folder, RUN@STEP for one of its checkpoints, or a Hugging Face one)"
)


def _warn(message: str) -> None:
    print(f"trainer: warning: {message}", file=sys.stderr, flush=True)


def _lock(run_dir: Path) -> contextlib.AbstractContextManager[object]:
    """The run directory's lock (tjx.ckpt.lock), taken before anything there is written, or
    `ConfigError`: another trainer holds it. Process 0 takes it (the other processes of this
    run write there too, and must not be refused); in a multi-host run every process learns its
    answer (a collective), so that all stop alike."""
    lock: contextlib.AbstractContextManager[object] = contextlib.nullcontext()
    refused = ""
    if parallel.is_primary():
        run_lock = RunDir(run_dir).lock(on_lost=_warn)
        try:
            lock = run_lock.acquire()
        except RunLockedError as err:  # one that started since the command line's check
            refused = str(in_use(err))
        except NotCreatableError as err:
            refused = f"--run-dir: {err}"
        if run_lock.note:  # a file system without locks: the run goes on, said once
            _warn(run_lock.note)
    if jax.process_count() > 1:
        answer = parallel.process_values({"trainer:run_lock": int(not refused)})
        if not answer["trainer:run_lock"][0] and not refused:
            refused = f"--run-dir: process 0 could not lock {str(run_dir)!r} (its line says why)"
    if refused:
        raise ConfigError(refused)
    return lock


@dataclasses.dataclass
class Prepared:
    """A run ready for its first step: the plan (its config as the steps read it), the data, the
    built state and the train step compiled for it (None: GRPO's, jitted by the loop)."""

    plan: RunPlan
    bundle: data_setup.Bundle
    setup: state.Setup
    loader: data_setup.TrainLoader
    step: TrainStep | None


def prepare(plan: RunPlan) -> Prepared:
    """Everything that can fail on bad input, nothing written: the mesh, the data and its loader,
    the attention kernel, the memory fit, the state and the compiled train step. A run and a
    replay (trainer.start.replay) of it prepare the same way. Raises `ConfigError`, ``ValueError``
    or ``FileNotFoundError``."""
    cfg = plan.config
    # The mesh first: a mesh, batch or context split that cannot work costs no data preparation
    # (checked against the model that trains: a Hugging Face start's, read from its config)
    model = cfg.model
    if plan.init_from is not None or plan.resume:  # only a start or a resume reads a checkpoint's
        model = init_from.trained_architecture(
            cfg.model, cfg.kind, plan.init_from, plan.run_dir, plan.resume
        )
    mesh, _ = state.make_mesh(cfg.mesh, dataclasses.replace(cfg, model=model).mesh_needs())
    target_plan.check_fp8(cfg.model.precision, jax.devices()[0])  # fp8: float8 units (or a CPU)
    # A first run tokenizes the corpus (minutes for a large one): say so, and how long it took.
    print(f"data: preparing {data_setup.describe_source(cfg.data)}…", flush=True)
    started = time.perf_counter()
    steps, vocab, images = cfg.train.steps, cfg.vocab_size, cfg.image_shape
    rl = is_grpo(cfg.data)  # GRPO: the loader's batches are prompts, batch_size / G of them
    section = prompt_section(cfg.data, cfg.rollout) if rl else cfg.data
    bundle = data_setup.prepare_section(section, steps=steps, vocab_size=vocab, images=images)
    print(f"data: ready in {time.perf_counter() - started:.1f} s", flush=True)
    if rl:  # every named reward scores the first prompt row (a reward that raises: here)
        grpo.check_rewards(cfg, bundle)
    if RunDir.is_run(plan.init_from):  # a run's weights read ids of its own tokenizer
        init_from.check_tokenizer(str(plan.init_from), bundle)
    # Data preparation may take one host much longer (it builds the shards the others then
    # find cached); CPU collectives give up on a peer after ~30 s, so everyone waits here.
    parallel.barrier("trainer:data_ready", timeout_s=DATA_READY_TIMEOUT_S)
    # This process's share of each batch on the mesh; a corpus too small for a batch fails here
    loader = data_setup.section_loader(bundle, section, steps=steps, seed=cfg.train.seed, mesh=mesh)
    if plan.resume:  # data that does not fit the checkpoint: refused before the compile
        data_setup.check_resume(loader, RunDir(plan.run_dir).checkpoints, mesh)
    cfg = resolve(cfg, bundle.vocab_size)  # the tokenizer's vocabulary
    # A resumed --init-from run: the checkpoint's architecture again (its model.json).
    from_checkpoint = plan.resume and init_from.resumed_from_checkpoint(cfg, plan.run_dir)
    cfg = from_checkpoint or cfg
    # One compile of the train step before step 1: the kernel choice compiles it, the memory
    # fit measures that executable, the loop calls it (trainer.plan.first_compile).
    compiler = first_compile.StepCompiler()
    # What the steps read: the run's length only as the learning-rate schedule, built here.
    step_cfg = step_config(cfg)
    # GRPO's step reads a rollout batch, not the loader's: jitted by the loop at step 1.
    if plan.init_from is None and not from_checkpoint and not rl:
        # The attention kernel that compiles (one line per kernel that fails), then memory.
        chosen = memory_fit.choose_attention(step_cfg, build=compiler.build)
        step_cfg = memory_fit.fit_memory(chosen, compile_step=compiler.compile)
    plan = dataclasses.replace(plan, config=cfg.with_step(step_cfg))
    # The model's state: one program compiled and run (seconds: on a CPU as long as the train
    # step's compile), after a start's weights are read (minutes for a large checkpoint). Said,
    # ticked while it runs and timed, as the data and the compile are.
    doing = "model: initializing" if plan.init_from is None else f"model: loading {plan.init_from}"
    print(f"{doing}…", flush=True)
    started = time.perf_counter()
    with first_compile.ticking(doing):
        setup = state.build(step_cfg, plan.init_from)
    print(f"model: ready in {time.perf_counter() - started:.1f} s", flush=True)
    step = None if rl else compiler.for_run(step_cfg, setup)
    return Prepared(plan, bundle, setup, loader, step)


def _prepare_and_train(plan: RunPlan) -> int:
    cfg, primary = plan.config, parallel.is_primary()
    _device_note(cfg)
    if primary and is_grpo(cfg.data) and plan.init_from is None and not plan.resume:
        _warn(RL_FROM_SCRATCH)
    # Everything that can fail on bad input happens before the run directory exists.
    try:
        ready = prepare(plan)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        return error_exit(str(err))
    plan, bundle, setup, loader, step = (
        ready.plan,
        ready.bundle,
        ready.setup,
        ready.loader,
        ready.step,
    )
    # Process 0 writes the run directory; the others save their checkpoint shards there once it
    # exists. A resume writes after its restore (training.train): a failed one changes nothing.
    if primary and not plan.resume:
        training.write_run_files(plan, setup, bundle)
    parallel.barrier("trainer:run_dir", timeout_s=plan.distributed.timeout_s)
    try:
        return training.train(plan, bundle, setup, loader, step)
    finally:
        sys.stdout.flush()
