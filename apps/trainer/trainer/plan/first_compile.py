"""The train step compiled once before step 1: the kernel choice, the memory measure and the run
share one executable.

`StepCompiler` compiles a config's train step as the run lays it out — over this machine's
devices, the state sharded and donated as `trainer.step.state.build` places it, the batch as the
loader places it (`trainer.plan.target_plan.build`, over the real devices) — from abstract
arguments, so nothing is allocated. Each config is compiled once (``auto`` attention counts as the
kernel it traces to); the kernel choice compiles through it, the memory fit reads XLA's memory
analysis of the same executable, and the loop calls it (`StepCompiler.for_run`). A second compile
before step 1 happens only where it must: a kernel that failed (the next one is compiled), the
memory fit's lighter step (full remat), or a state laid out otherwise than planned (``--init-from``
a checkpoint of another architecture, a pipelined mesh): then the run's own arguments are compiled.

A compile that runs long says so every `TICK_S` seconds (``compiling the train step… 45 s``),
and its last line says how long it took and whether JAX's persistent compilation cache served it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import threading
import time
from collections.abc import Callable, Iterator, Mapping

import jax

from tjx import kernels, parallel
from trainer.config.schema import ConfigError
from trainer.config.typed import StepConfig
from trainer.plan import target_plan
from trainer.plan.memory_fit import abstract_step
from trainer.plan.step_plan import batch_shapes
from trainer.step.state import Setup
from trainer.step.train_state import TrainState
from trainer.step.train_step import Batch, TrainStep, jit_train_step

#: Seconds between the lines a long compile prints.
TICK_S = 15.0
#: The event JAX records when its persistent compilation cache serves a compile (jax 0.10, 0.11).
CACHE_HIT_EVENT = "/jax/compilation_cache/cache_hits"
#: What a compile's last line adds when the persistent compilation cache served it.
FROM_CACHE = " (from the persistent compilation cache)"

Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


@contextlib.contextmanager
def ticking(label: str, *, every: float = TICK_S, say: Say = _say) -> Iterator[None]:
    """Say ``label… N s`` every ``every`` seconds while the block runs (a compile that takes
    minutes is not a hang); the thread is stopped and joined when the block ends, raising or not.
    """
    stop = threading.Event()
    started = time.perf_counter()

    def tick() -> None:
        while not stop.wait(every):
            say(f"{label}… {time.perf_counter() - started:.0f} s")

    thread = threading.Thread(target=tick, name="compile-ticker", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@contextlib.contextmanager
def cache_hits() -> Iterator[list[str]]:
    """The persistent compilation cache's hits recorded inside the block (JAX's monitoring
    events; the list fills as they come)."""
    hits: list[str] = []

    def listen(event: str, **_: object) -> None:
        if event == CACHE_HIT_EVENT:
            hits.append(event)

    jax.monitoring.register_event_listener(listen)
    try:
        yield hits
    finally:
        jax.monitoring.unregister_event_listener(listen)


def step_key(cfg: StepConfig) -> str:
    """What identifies a config's train step: the whole step config, with ``attention_impl: auto``
    replaced by the kernel it traces to here (the kernel choice's, ``cfg.attention``, or else
    tjx.kernels' `auto_order`), so that the kernel choice's compile of ``cudnn`` and the run's
    ``auto`` are one program. (The learning rate is the run's one schedule object, the same in
    each.)"""

    model = cfg.model
    if model.attention_impl == "auto" and model.head_dim is not None:
        if cfg.attention is not None:  # the run's one resolution: no second ranking
            kernel = cfg.attention.name
        else:
            capped = model.attention.logit_softcap is not None
            dtype = model.precision.compute_dtype
            kernel = kernels.auto_order(dtype, model.head_dim, softcap=capped).kernel
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(model, attention_impl=kernel))
    return repr(cfg)


class StepCompiler:
    """The train steps of a run compiled on ``devices`` (default: this machine's), once each.

    Parameters
    ----------
    devices : list, optional
        The devices the run's mesh spans.
    say : callable
        Where the compile lines go (stdout).
    """

    def __init__(self, devices: list[jax.Device] | None = None, say: Say = _say) -> None:
        self.devices = list(jax.devices() if devices is None else devices)
        self.say = say
        self._compiled: dict[str, tuple[jax.stages.Compiled, target_plan.AbstractRun | None]] = {}
        #: Train-step compiles this object ran (the compile-count test reads XLA's own log too).
        self.compiles = 0

    def _compile(self, label: str, lower: Callable[[], jax.stages.Lowered]) -> jax.stages.Compiled:
        started = time.perf_counter()
        self.say(f"compiling {label}…")
        with ticking(f"compiling {label}", say=self.say), cache_hits() as hits:
            compiled = lower().compile()
        self.compiles += 1
        took = time.perf_counter() - started
        source = FROM_CACHE if hits else ""
        self.say(f"compiled {label} in {took:.1f} s{source}")
        return compiled

    def compile(self, cfg: StepConfig, label: str = "the train step") -> jax.stages.Compiled:
        """``cfg``'s compiled train step (a ``jax.stages.Compiled``); raises what lowering or
        XLA raise (a kernel that fails). Compiled once per `step_key`."""

        key = step_key(cfg)
        if key in self._compiled:
            return self._compiled[key][0]
        try:
            run = target_plan.build(cfg, self.devices)
        except ConfigError:
            # A pipelined mesh is not built abstractly over devices (target_plan): the unsharded
            # abstract step still proves the kernel and sizes the step; the run compiles its own.

            step, state, batch = abstract_step(cfg)
            compiled = self._compile(label, lambda: step.lower(state, batch))
            self._compiled[key] = (compiled, None)
            return compiled
        compiled = self._compile(label, lambda: run.train_step.lower(run.state, run.batch))
        self._compiled[key] = (compiled, run)
        return compiled

    def build(self, cfg: StepConfig) -> jax.stages.Compiled:
        """`compile` as the kernel choice's ``build`` (raises on failure)."""
        return self.compile(cfg)

    def for_run(self, cfg: StepConfig, setup: Setup) -> TrainStep:
        """The step the loop calls for ``cfg`` on ``setup``'s state: the executable compiled
        before when its arguments are laid out as ``setup.state`` is (shapes, dtypes and
        shardings), else the run's own step compiled now (with the same lines); either one
        called with the batch's step keys only (`taking_step_keys`)."""

        key = step_key(cfg)
        if key not in self._compiled and _plannable(cfg, setup):
            self.compile(cfg)
        compiled, run = self._compiled.get(key, (None, None))
        batch = _run_batch(cfg, setup)
        if compiled is not None and run is not None and same_layout(run.state, setup.state):
            return taking_step_keys(compiled, batch)
        shardings = jax.tree.map(lambda x: x.sharding, setup.state)
        step = jit_train_step(setup, out_shardings=(shardings, None))
        compiled = self._compile("the train step", lambda: step.lower(setup.state, batch))
        return taking_step_keys(compiled, batch)


def taking_step_keys(
    compiled: jax.stages.Compiled, batch: Mapping[str, jax.ShapeDtypeStruct]
) -> TrainStep:
    """``compiled(state, batch)`` with the loader's batch cut to the keys of ``batch`` (the
    abstract batch it was compiled for). A loader may add entries the step never reads (a
    mixture's per-row ``source``): a jitted function retraced for them, an executable refuses
    any argument tree but its own."""
    keys = tuple(batch)

    def call(state: TrainState, given: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        return compiled(state, {k: given[k] for k in keys})

    return call


def _plannable(cfg: StepConfig, setup: Setup) -> bool:
    """Whether the abstract step of ``cfg`` can be the run's: not a pipelined mesh, and the
    model the state was built from is the config's (an ``--init-from`` checkpoint's may not)."""
    return cfg.mesh.pipeline == 1 and setup.nn_config == cfg.model


def _run_batch(cfg: StepConfig, setup: Setup) -> dict[str, jax.ShapeDtypeStruct]:
    """The abstract batch the loader places on ``setup``'s mesh."""

    shapes = batch_shapes(
        cfg.task, cfg.data.batch_rows(cfg.data.batch_size), cfg.data.seq_len, **cfg.image_shape
    )
    on = functools.partial(parallel.batch_sharding, setup.mesh)
    return {k: jax.ShapeDtypeStruct(s, d, sharding=on(len(s))) for k, (s, d) in shapes.items()}


def same_layout(abstract: TrainState, state: TrainState) -> bool:
    """Whether ``state``'s arrays are what ``abstract`` describes: one tree, and each leaf's
    shape, dtype and sharding (equivalent placement) the same."""
    a_leaves, a_tree = jax.tree.flatten(abstract)
    s_leaves, s_tree = jax.tree.flatten(state)
    if str(a_tree) != str(s_tree):  # the same structure prints the same
        return False
    for a, s in zip(a_leaves, s_leaves, strict=True):
        if a.shape != s.shape or a.dtype != s.dtype:
            return False
        if not a.sharding.is_equivalent_to(s.sharding, len(s.shape)):
            return False
    return True
