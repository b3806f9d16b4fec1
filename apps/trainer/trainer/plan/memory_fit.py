"""Before anything is written: the attention kernel that compiles, then the step fitted to memory.

tjx.nn's `resolve_attention`, given the run's compile, compiles the abstract train step with each
kernel in turn until one compiles: one that fails costs a line, never the run (one named in the
config: one error line, exit 2). XLA, the last resort, is compiled by the memory fit, not for the
choice.

What a step needs depends on the compiling device: gpt2_small's (16 × 1024 tokens, no remat) needs
6.8 GiB for an H100 (``--plan h100``, 2026-11-25) but about 43 GiB on XLA:CPU. So on one device the
trainer takes, through tjx-metrics' `first_fit`, the step as configured or else with full remat
(on CPU: 5.7 GiB), saying so, or exits 2 naming what shrinks the step. Skipped on several devices
(the unpartitioned abstract step would overstate a sharded one) and for ``--init-from``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator

import jax

from tjx import kernels, nn, parallel
from tjx.metrics import GIB, first_fit, peak_bytes
from trainer.config.schema import ConfigError
from trainer.config.typed import StepConfig
from trainer.plan.step_plan import batch_shapes
from trainer.step import train_step as steps  # looked up at the call: a test may replace the step
from trainer.step.state import abstract_state, check_context
from trainer.step.train_state import TrainState

Say = Callable[[str], None]


def abstract_step(
    cfg: StepConfig,
) -> tuple[jax.stages.Wrapped, TrainState, dict[str, jax.ShapeDtypeStruct]]:
    """(jitted step, abstract state, abstract batch) of ``cfg``'s train step on one device,
    unsharded; no parameter is created."""

    parts = abstract_state(cfg)
    shapes = batch_shapes(
        cfg.task, cfg.data.batch_rows(cfg.data.batch_size), cfg.data.seq_len, **cfg.image_shape
    )
    step = jax.jit(
        steps.make_train_step(parts.graphdef, nn.concrete_state(parts.rest), parts.tx, cfg),
        donate_argnums=(0,),
    )
    return step, parts.state, {k: jax.ShapeDtypeStruct(s, d) for k, (s, d) in shapes.items()}


def step_peak(cfg: StepConfig, name: str | None = None) -> int:
    """Peak bytes of the compiled train step of ``cfg`` on one device; ``name`` is said first (a
    big model's compile takes minutes on a CPU)."""
    if name:
        print(f"memory: compiling {name} to measure its peak…", flush=True)
    step, state, batch = abstract_step(cfg)
    return peak_bytes(step.lower(state, batch).compile())["peak"]


def choose_attention(
    cfg: StepConfig, *, build: Callable[[StepConfig], object] = step_peak, say: Say | None = None
) -> StepConfig:
    """``cfg`` with the attention kernel that compiles (``build`` compiles a config's step,
    raising on failure), saying the choice (to stdout by default): its ``attention``, the run's
    one resolution, which every model built from it runs; after a fallback the config names the
    kernel that compiled. A `ConfigError` for a named kernel that fails."""

    def build_kernel(kernel: str) -> object:
        # The abstract step is a decoder's: other tasks' kernels are traced (and proven) late.
        return build(cfg.with_model(attention_impl=kernel)) if cfg.task == "lm" else None

    say = say or functools.partial(print, flush=True)
    try:
        resolved = resolve_kernel(cfg, jax.device_count(), build_kernel, say)
    except kernels.KernelCompileError as err:
        hint = "set model.attention_impl=auto to let tjx choose (or xla)"
        raise ConfigError(f"{err}; {hint}") from None
    # With no fallback, "auto" stays: the resolved kernels are what it resolves to (resolved for
    # the config named by the choice, whatever kinds it has).
    chosen = cfg.with_model(attention_impl=resolved.name) if resolved.fell_back else cfg
    return dataclasses.replace(chosen, attention=resolved) if resolved.by_kind else chosen


def resolve_kernel(
    cfg: StepConfig,
    devices: int,
    build: Callable[[str], object],
    say: Say,
    *,
    say_xla: bool = False,
) -> nn.ModelAttention:
    """tjx.nn's `resolve_attention` of ``cfg``'s model over ``devices`` devices with
    ``build(kernel)`` (the run's compile, or ``--plan``'s for its target), a context split's
    rules checked first."""

    try:
        ways = cfg.mesh.resolve(devices)[parallel.MESH_AXES.index(parallel.CONTEXT_AXIS)]
    except ValueError:  # a mesh that does not fit the devices: the mesh's own line says so
        ways = 1
    if ways > 1:  # a split sequence: cudnn, or pallas with a window, is one line naming the key
        check_context(cfg.model, cfg.data.seq_len, ways)
    strategy = cfg.mesh.context_strategy
    return nn.resolve_attention(
        cfg.model,
        build=build,
        say=say,
        say_xla=say_xla,
        context_ways=ways,
        context_strategy=strategy,
    )


def lighter(cfg: StepConfig, devices: int | None = None) -> Iterator[tuple[StepConfig, str]]:
    """The memory fit's lighter steps of ``cfg``, in order, each with its change: full remat when
    it is off; then for a plan over ``devices``, twice the micro-batches while they split over
    the mesh's data × fsdp ways."""
    if cfg.model.remat == "none":
        cfg = cfg.with_model(remat="full")
        yield cfg, "model.remat=full"
    if devices is None:
        return
    sizes = cfg.mesh.resolve(devices)
    batch, micro, ways = cfg.data.batch_size, cfg.optimizer.accumulation_steps, sizes[1] * sizes[2]
    while True:
        micro *= 2
        if batch % micro or (batch // micro) % ways:
            return
        optimizer = dataclasses.replace(cfg.optimizer, accumulation_steps=micro)
        cfg = dataclasses.replace(cfg, optimizer=optimizer)
        yield cfg, f"optimizer.accumulation_steps={micro}"


#: The candidates' names, as the ``memory:`` lines print them.
STEP, FULL_REMAT = "the train step", "the train step with model.remat=full"


def fit_memory(
    cfg: StepConfig,
    *,
    budget: int | None = None,
    devices: int | None = None,
    compile_step: Callable[[StepConfig, str], jax.stages.Compiled] | None = None,
) -> StepConfig:
    """``cfg`` if its step fits, else ``cfg`` with ``model.remat=full``; ConfigError if neither.
    ``budget`` (bytes) and ``devices`` default to this machine's (tests pass their own);
    ``compile_step(cfg, name)`` returns the compiled step whose memory is measured (a run's
    `trainer.plan.first_compile.StepCompiler`: the executable the loop then calls); by default
    `step_peak` compiles the abstract step, saying so first."""
    devices = jax.device_count() if devices is None else devices
    # The abstract step below is a decoder's (an LM batch).
    if not cfg.fit_memory or cfg.task != "lm" or devices != 1:
        return cfg
    full = next(lighter(cfg), (cfg, ""))[0]  # full remat, when remat is off

    def measure(run: StepConfig, name: str) -> int | jax.stages.Compiled:
        return step_peak(run, name) if compile_step is None else compile_step(run, name)

    candidates = [(STEP, lambda: measure(cfg, STEP))]
    if full is not cfg:
        candidates.append((FULL_REMAT, lambda: measure(full, FULL_REMAT)))
    # Each figure is printed as it comes: the next compile may take a while.
    fit = first_fit(candidates, budget=budget, on_check=lambda c: print(f"memory: {c}", flush=True))
    if fit.chosen == FULL_REMAT:
        print(
            "note: it does not fit, so this run uses model.remat=full (recomputes activations in "
            "the backward pass). Set train.fit_memory=false to keep remat off.",
            flush=True,
        )
        return full
    if fit.chosen is not None or fit.budget is None:
        return cfg
    # XLA:CPU undoes remat in unrolled stacks (it drops jax.checkpoint's barriers, then CSE
    # merges the recomputation back into the forward pass); scanned stacks keep it.
    unrolled = (
        "; set model.scan_layers=true (remat only saves memory on scanned layers on CPU)"
        if not cfg.model.scan_layers and jax.default_backend() == "cpu"
        else ""
    )
    last = fit.checks[-1]
    need = f"{'more than ' if last.refused else ''}{last.peak / GIB:.2f} GiB"
    raise ConfigError(
        f"train.fit_memory: the train step needs {need} even with model.remat="
        f"full, but {last.budget / GIB:.2f} GiB is available; lower data.batch_size or "
        f"data.seq_len, or raise optimizer.accumulation_steps{unrolled}"
    )
