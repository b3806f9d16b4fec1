"""A replay's steps: the run prepared as a resume prepares it (trainer.start.startup's `prepare`:
the same data, kernel choice, memory fit, state and compiled step), each segment restored from its
checkpoint (or the run's start) and re-run with the run's own step on the batches its loop took
(the loader's; GRPO's: rollouts sampled again with the run's keys, `_batches`), every logged loss
compared bit for bit, the probe program run on the steps asked for. Nothing is written to the run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import cast

import jax
import numpy as np

import trainer.loop.training as training
import trainer.start.startup as startup
import trainer.step.data_setup as data_setup
import trainer.step.grpo as grpo
from tjx import ckpt, data, parallel
from tjx.ckpt.metadata import package_versions
from tjx.core.standard_json import dumps_json, loads_json
from trainer.config.folder import RunDir
from trainer.config.grpo_settings import is_grpo
from trainer.config.schema import ConfigError
from trainer.loop.resume import resumed_data
from trainer.plan.run_plan import RunPlan
from trainer.start.replay import probes as replay_probes
from trainer.start.replay.request import ReplayRequest, Segment
from trainer.start.startup import Prepared
from trainer.step.state import Setup
from trainer.step.train_state import TrainState
from trainer.step.train_step import Batch, TrainStep, jit_train_step

#: Where a replay's progress lines go.
Say = Callable[[str], None]
#: What checkpoint metadata (tjx.ckpt's ``collect_metadata``) and this process say of their setup.
Facts = Mapping[str, object]
#: A replayed step's batch: ``batches(number, state)`` → the batch on the mesh and its targets on
#: the host (None: a batch the token probes do not read).
Batches = Callable[[int, TrainState], tuple[Batch, np.ndarray | None]]


@dataclasses.dataclass
class Probed:
    """A probed step's values on the host."""

    #: ``grad_norms`` / ``update_norms`` → layer → norm.
    norms: dict[str, dict[str, float]]
    #: ``activation_max`` / ``attention_logit_max`` → one value a layer (`Replayed.layers`).
    maxima: dict[str, list[float]]
    #: float64 ``[rows, seq]``: each target's loss (0 where unscored); None: not asked.
    token_loss: np.ndarray | None

    @classmethod
    def of(cls, values: Mapping[str, np.ndarray]) -> Probed:
        """From the probe program's arrays (`trainer.start.replay.probes`), fetched."""
        norms: dict[str, dict[str, float]] = {}
        for key, value in values.items():
            probe, _, layer = key.partition("/")
            if layer:
                norms.setdefault(probe, {})[layer] = float(value)
        maxima = {
            k: [float(v) for v in np.asarray(values[k]).reshape(-1)]
            for k in ("activation_max", "attention_logit_max")
            if k in values
        }
        losses = values.get("token_loss")
        return cls(norms, maxima, None if losses is None else np.asarray(losses, np.float64))


class NotFaithfulError(Exception):
    """A replayed loss differs from the logged one: the message is the command's one line."""


@dataclasses.dataclass
class StepRecord:
    """One replayed step: its loss as replayed and as logged (None: not logged), and, for a
    probed step, the probe program's values (on the host) and where its targets lie."""

    step: int
    loss: float
    logged: float | None
    probes: Probed | None = None
    #: int64 ``[rows, seq]``: each target's stream position (-1: none), for a probed step.
    positions: np.ndarray | None = None
    targets: np.ndarray | None = None


@dataclasses.dataclass
class Replayed:
    """What a replay found: every replayed step, the layers' names, the data it read."""

    request: ReplayRequest
    steps: dict[int, StepRecord]
    layers: list[str]
    bundle: data_setup.Bundle
    loader: data_setup.TrainLoader
    #: The checkpoint each segment started from (0: the run's start).
    starts: list[int]
    seconds: float
    device: str


def as_logged(value: jax.Array) -> float:
    """``value`` as the run's log holds it: `StepLog.scalars`' float, through tjx's standard
    JSON (a non-finite loss as the logger writes and `read_jsonl` reads it back)."""
    number = float(np.asarray(jax.device_get(value)))
    return float(loads_json(dumps_json({"loss": number}))["loss"])


def same(replayed: float, logged: float) -> bool:
    """Bit for bit (NaN replayed where NaN was logged counts as the same)."""
    if math.isnan(replayed) or math.isnan(logged):
        return math.isnan(replayed) and math.isnan(logged)
    return replayed == logged


def here() -> dict[str, object]:
    """This process's devices and versions, as tjx.ckpt's checkpoint metadata records them."""
    return {
        "platform": jax.default_backend(),
        "device_kind": jax.devices()[0].device_kind,
        "device_count": jax.device_count(),
        "versions": package_versions(),
    }


def why_different(saved: Facts | None) -> str:
    """Why a replayed loss may differ: what differs between the run's checkpoint metadata and
    this process, else that nothing does (then the run's log or data changed since)."""
    if saved is None:
        return (
            "no checkpoint of the run was read (it replays from the start), so its devices and "
            "versions are unknown: another device kind or version computes the step otherwise"
        )
    now, differ = here(), []
    for key in ("platform", "device_kind", "device_count"):
        if key in saved and saved[key] != now[key]:
            differ.append(f"{key.replace('_', ' ')} {saved[key]} → {now[key]}")
    old, new = saved.get("versions"), now["versions"]
    old = old if isinstance(old, dict) else {}
    assert isinstance(new, dict)
    for name in sorted(set(old) & set(new)):
        if old[name] != new[name]:
            differ.append(f"{name} {old[name]} → {new[name]}")
    if differ:
        return (
            f"the run's checkpoint was written with another setup ({'; '.join(differ)}), which "
            "computes the step otherwise: replay it with the run's devices and versions"
        )
    kind = now["device_kind"]
    why = (
        f"the devices ({now['device_count']} × {kind}) and versions are the run's, so the run's "
        "log or data changed since it ran (metrics.jsonl, the data source)"
    )
    if now["platform"] != "cpu":  # a GPU's atomics may sum in another order each run
        why += (
            ", or the device computes the step in another order each time (XLA_FLAGS="
            "--xla_gpu_deterministic_ops=true makes a GPU's run and its replay alike)"
        )
    return why


def _plan(request: ReplayRequest) -> RunPlan:
    """The run's own plan, as a ``--resume`` that changes nothing makes it (nothing written)."""
    return RunPlan(request.config, request.run_dir, resume=True, init_from=None, profile=None)


def replay(request: ReplayRequest, say: Say = print) -> Replayed:
    """Re-run the request's segments and probe the asked steps.

    Raises
    ------
    NotFaithfulError
        A logged loss the replay does not reproduce (the first one).
    ConfigError
        The run cannot be prepared or restored as it was (one line).
    """
    started = time.perf_counter()
    try:
        # a relative data.source read in another folder than the run read it in: said first
        moved = data.check_local_sources(request.config.data, resumed=resumed_data(request.run_dir))
        if moved is not None:
            say(f"replay: {moved}")
        ready = startup.prepare(_plan(request))
    except (ConfigError, ValueError, FileNotFoundError) as err:
        raise ConfigError(str(err)) from None
    setup, loader = ready.setup, ready.loader
    step_fn = _step_fn(ready)
    program = replay_probes.build(setup, request.probes)
    folder = RunDir(request.run_dir).checkpoints
    records: dict[int, StepRecord] = {}
    starts = []
    manager = None
    if request.checkpoints:
        manager = ckpt.CheckpointManager(folder, read_only=True, mesh=setup.mesh)
    try:
        for segment in request.segments:
            state, saved = _start(segment, manager, setup, loader, say)
            starts.append(segment.start)
            batches = _batches(ready)  # after the restore: the loader at the segment's start
            _run(segment, request, state, step_fn, program, batches, loader, records, saved, say)
    finally:
        if manager is not None:
            manager.close()
    took = time.perf_counter() - started
    device = f"{jax.device_count()} × {jax.devices()[0].device_kind}"
    return Replayed(request, records, program.layers, ready.bundle, loader, starts, took, device)


def _step_fn(ready: Prepared) -> TrainStep:
    """The run's own train step: compiled by `prepare`, or GRPO's, jitted as its loop jits it
    (its batch is a rollout, made in the loop: trainer.loop.training)."""
    if ready.step is not None:
        return ready.step
    shardings = jax.tree.map(lambda x: x.sharding, ready.setup.state)
    return cast(TrainStep, jit_train_step(ready.setup, out_shardings=(shardings, None)))


def _batches(ready: Prepared) -> Batches:
    """Where a segment's batches come from, as the run's loop took them: the loader's next
    batch, placed on the mesh; GRPO's, a rollout of the loader's next prompts sampled with the
    step's key from the state the step starts from (trainer.step.grpo's `Rollouts`, new for each
    segment: from a checkpoint inside a rollout's ``grpo.iterations`` steps it samples a fresh
    one, as the resumed run did)."""
    setup, loader = ready.setup, ready.loader
    if is_grpo(ready.plan.config.data):
        rollouts = grpo.Rollouts(ready.plan.config, setup, loader, ready.bundle)

        def rollout(number: int, state: TrainState) -> tuple[Batch, np.ndarray | None]:
            # grpo.overlap: the rollout the loop sampled during the step before's update, with
            # the weights `batch` copied then (here after that update: the same rollout)
            rollouts.ahead(number - 2, state)
            batch, _ = rollouts.batch(number - 1, state)  # the loop's index: step number - 1
            return batch, None

        return rollout

    def loaded(number: int, state: TrainState) -> tuple[Batch, np.ndarray | None]:
        del number, state  # the loader's position is the step's
        host = next(loader)
        batch = cast(Batch, parallel.place_batch(host, mesh=setup.mesh))  # now jax.Arrays
        return batch, np.asarray(host["targets"])

    return loaded


def _start(
    segment: Segment,
    manager: ckpt.CheckpointManager | None,
    setup: Setup,
    loader: data_setup.TrainLoader,
    say: Say,
) -> tuple[TrainState, Facts | None]:
    """The state after the segment's start step (its checkpoint's, placed as the run's; the
    fresh state at step 0) with the loader moved there; the checkpoint's metadata."""
    if segment.start == 0:  # the first segment: the loader is at its start too
        say("replay: from the run's start (step 0)")
        # the step donates its state: a copy keeps the fresh one for the later restores' shapes
        return jax.tree.map(lambda x: x.copy(), setup.state), None
    assert manager is not None
    try:
        restored, state = training._restore(manager, setup, step=segment.start)
        if restored.data_state is not None:
            data_setup.restore_loader(loader, restored.data_state, setup.mesh)
    except (ckpt.CheckpointError, ValueError) as err:
        raise ConfigError(f"--replay: step {segment.start}'s checkpoint: {err}") from None
    say(f"replay: restored step {segment.start}")
    return state, restored.metadata


def _run(
    segment: Segment,
    request: ReplayRequest,
    state: TrainState,
    step_fn: TrainStep,
    program: replay_probes.Probes,
    batches: Batches,
    loader: data_setup.TrainLoader,
    records: dict[int, StepRecord],
    saved: Facts | None,
    say: Say,
) -> None:
    """Steps ``start + 1 .. stop`` of a segment: the probe program before each probed step (on
    the state the step starts from), then the run's own step; each logged loss compared."""
    probed = set(segment.probed)
    # A single source's loader says where each target lies (a mixture's does not)
    packed = loader if isinstance(loader, data.PackedLoader) else None
    for number in range(segment.start + 1, segment.stop + 1):
        position = None if packed is None else packed.position
        batch, targets = batches(number, state)
        record_probes = None
        if number in probed:
            record_probes = Probed.of(jax.device_get(program.program(state, batch)))
        state, out = step_fn(state, batch)
        loss = as_logged(out["loss"])
        logged = request.logged.get(number)
        if logged is not None and not same(loss, logged):
            raise NotFaithfulError(
                f"--replay: step {number} differs from the run: its loss is {loss!r} replayed "
                f"and {logged!r} in metrics.jsonl; {why_different(saved)}"
            )
        record = StepRecord(number, loss, logged)
        if number in probed:
            record.probes = record_probes
            record.targets = targets
            if packed is not None and position is not None:
                record.positions = packed.target_positions(*position)
        records[number] = record
        mark = "=" if logged is not None else " "
        said = f"{logged!r} logged" if logged is not None else "not logged"
        say(f"replay: step {number}: loss {loss!r} {mark} {said}")
