"""The step loop of a prepared run: restore, then step, log, evaluate, sample, checkpoint, finish.

`train` restores on ``--resume`` (the run directory is rewritten only once that succeeded) and
hands over to a `Training`: what the loop changes, one method per thing done at a step boundary.
Bad input was refused before (trainer/start/startup.py); the exits: diverged (3), a signal (0),
done (0), and 2 for what can only fail once the run is under way, each in one line with the run
safe to ``--resume``: an evaluation or samples that failed (the last step's checkpoint is committed
before them), a checkpoint the disk refused (the steps committed before are intact).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict, TypeVar

import chex
import jax
from flax import nnx

import trainer.loop.evaluation as evaluation
import trainer.step.data_setup as data_setup
import trainer.step.state as run_state
from tjx import ckpt, data, metrics, nn, parallel
from tjx.ckpt import last_checkpoint_words
from trainer.config.folder import RunDir, final_summary
from trainer.config.grpo_settings import is_grpo
from trainer.config.typed import units_per_step
from trainer.loop.progress import ProgressBar, progress_bar
from trainer.loop.step_log import ProfileWindow, StepLog, Unlogged
from trainer.plan.run_plan import RunPlan, error_exit, stop_on_signals, warning_line
from trainer.step import init_from
from trainer.step.data_setup import Bundle, TrainLoader
from trainer.step.grpo import Rollouts
from trainer.step.train_state import TrainState
from trainer.step.train_step import TrainStep, jit_train_step

#: The loss plot: training and validation loss on one axis (tjx.metrics.plot_run), run-titled.
CURVES = (("loss", "val_loss"),)
#: The console's line per log step, in order (images/s for a classifier; MFU where it is known).
CONSOLE = ("loss", "learning_rate", "grad_norm", "{unit}_per_s", "mfu")

#: The key of a checkpoint's metrics that holds what a resume continues from the steps before
#: it (`Training._carried`; its parts: `Carried`).
CARRIED = "carried"


class Carried(TypedDict, total=False):
    """A checkpoint's `CARRIED`: the loss-spike window, the router sums since the last line and
    the last evaluation (what the checkpoints saved before the next one are ranked by)."""

    spike_window: list[float]
    unlogged: Unlogged
    last_eval: dict[str, float]


#: How the divergence error (exit 3) ends: what to change, by config key, before resuming.
DIVERGED_ADVICE = (
    "lower optimizer.schedule.peak_lr, raise optimizer.schedule.warmup_steps or set "
    "optimizer.clip_norm, and resume from the last checkpoint (train.max_bad_steps sets the limit)"
)

#: The most skipped updates a dynamic loss scale's backoff takes (tjx.optim's initial 2**15 halved
#: to 1): a run may end inside such a streak with finite losses (DivergenceGuard.end).
LOSS_SCALE_BACKOFF = 16

#: The longest reason an evaluation's or the samples' failure line quotes.
REASON_CHARS = 300
#: What a checkpoint write refused for these reasons asks the user to do first.
_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_DENIED = (errno.EROFS, errno.EACCES, errno.EPERM)

T = TypeVar("T")


class ExtraError(Exception):
    """A boundary's evaluation or samples failed: ``what`` (``"evaluation"``, ``"samples"``) and
    ``reason``, the error in one line (`extra`)."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what, self.reason = what, reason


def in_words(err: Exception) -> str:
    """An extra's failure in one line: a bad input's own words (a reward, the data, a config
    key), any other error's type and message; at most `REASON_CHARS` characters."""
    if isinstance(err, data.RewardError):  # a user's reward, on the held-out prompts
        text = f"grpo.rewards: {err}"
    elif isinstance(err, ValueError) and str(err):  # the data's, a config's: said for a user
        text = str(err)
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    line = next((part.strip() for part in text.splitlines() if part.strip()), type(err).__name__)
    return line if len(line) <= REASON_CHARS else line[: REASON_CHARS - 1] + "…"


def extra(what: str, work: Callable[[], T]) -> T:
    """``work()``, a boundary's evaluation or samples; its failure as `ExtraError`. A signal's
    `tjx.parallel.StoppedError` (a BaseException) goes through: it is no failure of the work."""
    try:
        return work()
    except Exception as err:
        raise ExtraError(what, in_words(err)) from err


def interruptible(stop: parallel.StopFlag) -> contextlib.AbstractContextManager[None]:
    """An evaluation or samples, which a signal abandons (`StopFlag.interruptible`): the run
    would stop at this boundary anyway, and after the last step no boundary comes, so the signal
    need not wait for them (minutes for a long sample). Python takes the signal between two
    device calls (each generated token is one). The loop then saves this step as for any
    signal (the last step's is saved already). One process only: peers would wait for it in
    the evaluation's collectives, so several processes finish the work first."""
    if jax.process_count() > 1:
        return contextlib.nullcontext()
    return stop.interruptible()


def write_run_files(plan: RunPlan, setup: run_state.Setup, bundle: Bundle) -> None:
    """``config.yaml``, ``model.json``, ``data.json`` and an ``--init-from`` start's ``init.json``;
    a file whose content is the same is left untouched (a resume that changes nothing, none)."""
    folder = RunDir(plan.run_dir)
    folder.create(plan.config.to_yaml())
    folder.write_json(RunDir.MODEL_FILE, nn.config_to_dict(setup.nn_config))
    # tjx.data's RunData, and the folder relative local sources were read in (a resume run
    # elsewhere says so: tjx.data's read_elsewhere)
    folder.write_json(
        RunDir.DATA_FILE, {**bundle.describe(plan.run_dir), **data.read_in(plan.config.data)}
    )
    if plan.init_from is not None:
        kind = "tjx-run" if RunDir.is_run(plan.init_from) else "hugging-face"
        where = RunDir.split_start(plan.init_from)[0]  # RUN@STEP: the run, and its step below
        read_as = nn.hf_model_type(where) if kind == "hugging-face" else None
        folder.write_init(where, kind=kind, step=setup.init_step, model_type=read_as)


def _restore(
    manager: ckpt.CheckpointManager, setup: run_state.Setup, step: int | None = None
) -> tuple[ckpt.Restored, TrainState]:
    """The newest checkpoint (or ``step``'s: a replay's start) and its train state, placed as the
    fresh state; one whose optimizer state is laid out the other way (flat buffers or per leaf:
    saved on a mesh that split the parameters, or not; tjx.optim's ``flat_update``) is restored
    in its own layout and converted, in one line."""
    try:
        restored = ckpt.restore_placed(manager, setup.state.tree(), prog="trainer", step=step)
        return restored, TrainState.from_tree(restored.state, like=setup.state)
    except ckpt.CheckpointMismatchError as err:
        other = run_state.other_layout(setup)
        if other is None:
            raise
        target, convert = other
        try:
            restored = ckpt.restore_placed(manager, target.tree(), prog="trainer", step=step)
        except ckpt.CheckpointMismatchError:
            raise err from None
    flat = run_state.flat_update(setup.step_config)
    was, now = ("per leaf", "flat buffers") if flat else ("flat", "per leaf")
    print(f"resume: the checkpoint's optimizer state is {was}; converted to {now} for this mesh")
    return restored, convert(TrainState.from_tree(restored.state, like=setup.state))


def train(
    plan: RunPlan,
    bundle: Bundle,
    setup: run_state.Setup,
    loader: TrainLoader,
    step: TrainStep | None = None,
) -> int:
    """Run the steps of a prepared run; the process's exit code. ``step``: the train step
    compiled before (trainer.plan.first_compile), called as is; None: jitted here, compiled at the
    first step."""

    cfg, run_dir = plan.config, plan.run_dir
    primary = parallel.is_primary()
    # Two batches ahead on the mesh (every host's rows in a multi-host run): the host builds the
    # next batch while the device runs this step; the resume state is the step's (DevicePrefetcher).
    if not is_grpo(cfg.data):  # GRPO's prompts are read on the host, every μ steps
        loader = data.prefetch_to_device(
            loader, size=2, put=functools.partial(parallel.place_batch, mesh=setup.mesh)
        )
    folder = RunDir(run_dir).checkpoints
    manager = ckpt.CheckpointManager(folder, **cfg.checkpoint.manager_options(), mesh=setup.mesh)
    st, start, carried = setup.state, 0, None
    if plan.resume:
        try:
            # A corrupt newest step is skipped in one warning line; the state is placed as `st`.
            restored, st = _restore(manager, setup)
            if restored.data_state is not None:
                data_setup.restore_loader(loader, restored.data_state, setup.mesh)
        except (ckpt.CheckpointError, ValueError) as err:
            # Every step corrupt, or a state the config check could not foresee (another process
            # count splits the batch differently): one line, and the run directory as it was.
            manager.close()
            return error_exit(f"--resume: {err}")
        start = int(restored.step)
        stop_at = cfg.train.stop_at
        if stop_at is not None and stop_at <= start < cfg.train.steps:
            # It would stop again before a step, and say "resume with --resume": a run resumed
            # with its stopped config.yaml (which holds the stop) would never go on.
            manager.close()
            return error_exit(
                f"--resume: train.stop_at={stop_at} is not after the checkpoint's step {start}, "
                "so the run would stop again without training a step; resume with "
                "--set train.stop_at=null (or a later step)"
            )
        carried = (restored.metrics or {}).get(CARRIED)
        if primary:
            write_run_files(plan, setup, bundle)  # the config may hold new training settings
        print(f"resumed from step {start} ({folder})", flush=True)
    if start >= cfg.train.steps:
        manager.close()
        return finish_again(plan, setup, bundle, st, start)
    # W&B: one run for the whole run, every resume logging to the one its start made.
    wandb_id = wandb_name = None
    if primary and "wandb" in cfg.logging.sinks:
        try:
            wandb_id, wandb_name = RunDir(run_dir).wandb_run()
        except ckpt.RunFileError as err:
            manager.close()
            return error_exit(
                f"--resume: {err}; restore it, or delete it to log the rest of the run to a new "
                "W&B run"
            )
    # The log sinks open their files only now: a resume that failed above touched none of them.
    # A resume logs again the steps after its checkpoint that the stopped run had logged: the
    # JSONL log moves those records aside first, TensorBoard drops them (tjx.metrics).
    logger = metrics.make_logger(
        list(cfg.logging.sinks),
        str(run_dir),
        config=cfg.to_dict(),
        console_keys=[k.format(unit=cfg.objective.unit) for k in CONSOLE],
        console_total=cfg.train.steps,
        project=cfg.logging.project,
        run_id=wandb_id,
        run_name=wandb_name,
        # W&B never reaches for the network unless asked: offline is the default mode.
        wandb_mode=cfg.logging.wandb_mode if "wandb" in cfg.logging.sinks else None,
        resumed_at=start if plan.resume else None,
    )
    rewound = sum(s.rewound for s in logger.loggers if isinstance(s, metrics.JsonlLogger))
    if rewound:
        side = metrics.rewound_path(metrics.JSONL_NAME)  # beside it, in the run directory
        print(
            f"resume: {rewound} records the run logged after step {start} before it stopped "
            f"(it trains those steps again) moved from {metrics.JSONL_NAME} to {side}",
            flush=True,
        )
    training = Training(plan, bundle, setup, loader, manager, logger, st, start, primary, carried)
    training.compiled_step = step
    return training.loop()


@dataclass
class Training:
    """A run between its first and its last step: the objects it uses and what the loop changes."""

    plan: RunPlan
    bundle: Bundle
    setup: run_state.Setup
    loader: TrainLoader
    manager: ckpt.CheckpointManager
    logger: metrics.MultiLogger
    state: TrainState
    start: int
    primary: bool
    carried: Carried | None = None  # the checkpoint's CARRIED: what the log lines carry
    last_eval: dict[str, float] = field(default_factory=dict)
    compiled: bool = False  # the train step has run once (so it is compiled)
    compiled_step: TrainStep | None = None  # compiled before step 1 (trainer.plan.first_compile)
    extras_done: bool = False  # the last step's evaluation and samples ran to their end
    bar: ProgressBar | None = None  # the loop's, while it runs

    def __post_init__(self) -> None:
        self.cfg, self.run_dir = self.plan.config, self.plan.run_dir
        self.objective, self.units_per_step = self.cfg.objective, units_per_step(self.cfg)
        self.saved = self.start if self.plan.resume else -1  # the last step saved or restored
        model, seq, unit = self.setup.nn_config, self.cfg.data.seq_len, self.objective.unit
        bpt = self.bundle.bytes_per_token if self.objective.scores_every_token else None
        # Rate, MFU (none on CPU), router sums per log line; mfu_palm counts attention whole.
        flops = nn.flops_per_unit(model, seq), nn.flops_per_unit(model, seq, causal_half=False)
        moe = [i for i, m in enumerate(nn.moe_layers(model)) if m]
        self.log = StepLog.on_devices(
            flops, model.precision.compute_dtype, unit=unit, bytes_per_token=bpt, moe_layers=moe
        )
        # train.spike_sigma: a loss spike is logged as loss_spike (--replay RUN --spikes)
        self.spikes = None
        if self.cfg.train.spike_sigma is not None:
            self.spikes = metrics.SpikeDetector(
                self.cfg.train.spike_sigma, self.cfg.train.spike_window
            )
        # A resume continues the steps between log lines and the spike window where the
        # checkpoint left them: its lines are the uninterrupted run's (`save`).
        carried = self.carried or {}
        self.log.resume(carried.get("unlogged"))
        if self.spikes is not None and carried.get("spike_window") is not None:
            self.spikes.resume(carried["spike_window"])
        self.last_eval = dict(carried.get("last_eval", self.last_eval))
        # GRPO: the step's batch is a rollout of the prompts (trainer.step.grpo), made in the loop.
        self.rollouts = None
        if is_grpo(self.cfg.data):
            self.rollouts = Rollouts(self.cfg, self.setup, self.loader, self.bundle)

    def loop(self) -> int:
        """Every step from ``start`` to ``train.steps``, unless stopped; the exit code."""
        # The signal handlers stay up to the process's last line: a signal during the final
        # save (or anything after the loop) only sets the flag, and the save finishes. A
        # checkpoint the disk refuses, at a save or in its background write, ends the run here.
        with stop_on_signals(self.run_dir) as stop:
            try:
                return self._loop(stop)
            except ckpt.CheckpointWriteError as err:
                return self._write_failed(err)

    def _loop(self, stop: parallel.StopFlag) -> int:
        cfg, plan, start, total = self.cfg, self.plan, self.start, self.cfg.train.steps
        every = cfg.train.checkpoint_every
        step_fn = self._compile()
        # A signal on any process stops all at the same boundary (a host exchange per step).
        agreement = parallel.stop_agreement("trainer/stop")
        guard = metrics.DivergenceGuard(
            cfg.train.max_bad_steps,
            limit_name="train.max_bad_steps",
            advice=DIVERGED_ADVICE,
            end_tolerance=LOSS_SCALE_BACKOFF if cfg.optimizer.loss_scale else 0,
        )
        spikes = self.spikes
        stopped_by: str | None = None
        failed: list[ExtraError] = []  # what of a boundary's evaluation and samples failed
        step_done, profile = start, ProfileWindow(self.run_dir / "profile", plan.profile)
        # tjx-metrics' bar; plain lines with logging.progress: false or off a terminal.
        with progress_bar(start, total, enabled=cfg.logging.progress) as bar:
            self.bar = bar  # a save's spike note (`_carried`)
            for step in range(start, total):
                stopped_by = agreement.decide(step, stop.signal_name)
                if stopped_by or (cfg.train.stop_at is not None and step >= cfg.train.stop_at):
                    break
                profile.before(step)
                try:
                    out = self._step(step_fn, step)
                except data.RewardError as err:  # GRPO: a user's reward failed on a completion
                    self._close()
                    return error_exit(f"grpo.rewards: at step {step + 1}: {err}")
                step_done = step + 1
                guard.push(step_done, out)
                if guard.diverged:
                    break
                if spikes is not None:  # the step before, judged now that it is done
                    self._mark_spike(spikes.push(step_done, out["loss"]), bar)
                profile.after(step_done, self.state)
                self.manager.check_for_errors()  # a background save the disk refused: stop now
                if step_done == total:
                    # The last step is committed before anything after it can fail (its
                    # evaluation, its samples): a failure there, or a kill, loses no training.
                    guard.end()  # ... unless it ended a bad streak: never checkpointed
                    if guard.diverged:
                        break
                    self.save(step_done, force=True, commit=True, ranked=False)
                try:
                    failed = self._at_boundary(step_done, out, bar, stop)
                except parallel.StoppedError:  # a signal cut the evaluation or samples short
                    break
                if failed:
                    break
                self.extras_done = step_done == total
                if every and step_done % every == 0 and step_done != total:
                    guard.flush()  # never checkpoint a step of a bad streak
                    if guard.diverged:
                        break
                    if guard.streak == 0:
                        self.save(step_done, force=False)
            profile.close()
        if spikes is not None:
            self._mark_spike(spikes.flush(), bar)
        if failed:
            guard.flush()  # a step of a bad streak is not checkpointed, even so
            return self._extras_failed(step_done, failed, keep=not guard.streak)
        # A run ending inside a non-finite streak shorter than the limit is diverged too.
        guard.end()
        if guard.diverged:
            return self._diverged(guard.diverged)
        return self._finish(step_done, stopped_by or stop.signal_name)  # a last step's signal too

    def _mark_spike(self, spike: metrics.Spike | None, bar: ProgressBar | None) -> None:
        """Log a spike as ``loss_spike`` (its deviations above the mean) at its step."""
        if spike is None:
            return
        self.logger.log_scalars(spike.step, {"loss_spike": spike.sigmas})
        # (--replay RUN --spikes replays it; one short line, as a console wraps at 80)
        said = f"{spike.loss:.4f}, {spike.sigmas:.1f} σ above the mean"
        if bar is not None:
            bar.note(f"step {spike.step}: loss spike {said}")
        else:
            print(f"step {spike.step}: loss spike {said}", flush=True)

    def _compile(self) -> TrainStep:
        setup = self.setup
        if self.compiled_step is not None:
            step_fn, self.compiled = self.compiled_step, True
        else:
            shardings = jax.tree.map(lambda x: x.sharding, self.state)
            step_fn = jit_train_step(setup, out_shardings=(shardings, None))
        per_step, unit = self.units_per_step, self.objective.unit
        print(f"model: {self.cfg.kind}, {setup.num_params:,} parameters", flush=True)
        mesh = " × ".join(f"{axis} {size}" for axis, size in setup.mesh.shape.items())
        if self.rollouts is not None and self.cfg.rollout.overlap:  # the last devices sample
            mesh += f", rollouts on the other {self.cfg.rollout.sampler_devices}"
        print(
            f"plan: {per_step:,} {unit} per step on mesh {mesh} "
            f"({self.cfg.mesh.strategy}, {jax.device_count()} devices)",
            flush=True,
        )
        self.log.meter.reset()
        return step_fn

    def _step(self, step_fn: TrainStep, step: int) -> dict[str, chex.ArrayTree]:
        rollout: dict[str, float] = {}
        batch: dict[str, Any]
        if self.rollouts is not None:  # GRPO: a new rollout every μ steps, before the update
            batch, rollout = self.rollouts.batch(step, self.state)
        else:
            batch = next(self.loader)  # on the mesh already (DevicePrefetcher)
        first = not self.compiled
        if first:  # jit compiles on the first call: minutes for a big model on a CPU
            print("compiling the train step…", flush=True)
            started = time.perf_counter()
        self.state, out = step_fn(self.state, batch)
        if self.rollouts is not None:  # grpo.overlap: the next rollout, while the update runs
            self.rollouts.ahead(step, self.state)
        out = self.log.step(self.units_per_step, out | rollout)  # no device read
        if first:
            jax.block_until_ready(out)
            self.compiled = True
            took = time.perf_counter() - started
            print(f"compiled the train step (and ran its first step) in {took:.1f} s", flush=True)
        return out

    def _at_boundary(
        self,
        step_done: int,
        out: dict[str, chex.ArrayTree],
        bar: ProgressBar,
        stop: parallel.StopFlag,
    ) -> list[ExtraError]:
        """Log, evaluate and sample when their intervals (or the last step) say so; what failed
        of the evaluation and samples (each is tried: one failing does not skip the other). A
        signal during them raises `tjx.parallel.StoppedError` (`interruptible`)."""

        cfg, total = self.cfg, self.cfg.train.steps
        failed: list[ExtraError] = []
        if step_done % cfg.train.log_every == 0 or step_done == total:
            scalars = self.log.scalars(out)
            self.logger.log_scalars(step_done, scalars)
            if bar.live:  # off a terminal the console sink's line is the step's one line
                bar.update(step_done, scalars["loss"])
        if cfg.logging.histogram_every and step_done % cfg.logging.histogram_every == 0:
            # Every process fetches (all-gathering what spans processes); the primary writes.
            self.logger.log_weights(step_done, self.state.param_tree())
        if (cfg.train.eval_every and step_done % cfg.train.eval_every == 0) or step_done == total:
            try:
                with interruptible(stop):
                    val = extra(
                        "evaluation",
                        lambda: evaluation.evaluate_state(self.setup, self.state, self.bundle, cfg),
                    )
            except ExtraError as err:
                failed.append(err)
            else:
                self.last_eval = val
                self.logger.log_scalars(step_done, {f"val_{k}": v for k, v in val.items()})
                first = "loss" if "loss" in val else "reward"  # GRPO's: the reward
                bar.note(f"step {step_done}: val {first} {val[first]:.4f}")
        sample_now = cfg.train.sample_every and step_done % cfg.train.sample_every == 0
        # Decoder-only models: every process generates (the params span them all); 0 writes.
        if self.objective.name == "lm" and (sample_now or step_done == total):
            params = self.state.model_tree()
            try:
                with interruptible(stop):
                    texts = extra(
                        "samples",
                        lambda: evaluation.sample(self.setup, params, self.bundle, cfg, step_done),
                    )
            except ExtraError as err:
                failed.append(err)
            else:
                self.logger.log_text(step_done, "sample", texts[0])
                if self.primary:
                    text = evaluation.format_samples(texts, cfg.sampling.prompts)
                    path = RunDir(self.run_dir).write_samples(step_done, text)
                    bar.note(f"step {step_done}: samples → {path}")
        return failed

    def save(self, step: int, *, force: bool, commit: bool = False, ranked: bool = True) -> None:
        """Checkpoint ``step`` (state, data position, config, the last validation loss) once;
        ``commit``: wait until it is committed. ``ranked=False``: without the validation loss,
        which is not this step's (the last step is saved before its evaluation, which
        ``checkpoint.keep_best`` then does not rank: it keeps it as the newest)."""
        if self.saved == step:
            if commit:
                self.manager.wait_until_finished()
            return
        self.saved = step
        val = {"val_loss": self.last_eval["loss"]} if "loss" in self.last_eval and ranked else {}
        saved = {**val, **self._carried()}
        self.manager.save(
            step,
            state=self.state.tree(),
            data_state=self.loader.state_dict(),
            config=self.cfg.to_dict(),
            metrics=saved or None,
            force=force,
        )
        if commit:
            self.manager.wait_until_finished()
        self.logger.flush()  # a log in object storage is uploaded with each checkpoint

    def _carried(self) -> dict[str, Carried]:
        """What the log lines after this step need of the steps before it (``{CARRIED: ...}``,
        saved with the checkpoint's metrics, which ``keep_best`` reads by name only): the router
        sums since the last line (`StepLog.unlogged`), the spike window and the last evaluation
        (the loss the next checkpoints are saved with, as ranked by ``keep_best``). The step held
        for judging is judged now (its loss is computed: the save reads the state it came with),
        so the window is whole and the resumed run judges no step twice."""
        carried: Carried = {}
        if self.spikes is not None:
            self._mark_spike(self.spikes.flush(), self.bar)
            carried["spike_window"] = self.spikes.history
        unlogged = self.log.unlogged()
        if unlogged is not None:
            carried["unlogged"] = unlogged
        if self.last_eval:
            carried["last_eval"] = self.last_eval
        return {CARRIED: carried} if carried else {}

    def _close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
        with contextlib.suppress(Exception):
            self.logger.close()

    def _diverged(self, message: str) -> int:
        """Nothing worse than the last good checkpoint is saved: one line, exit 3."""
        self._close()
        saved = f"step {self.saved} in {RunDir(self.run_dir).checkpoints}"
        last = f"the last checkpoint is {saved}" if self.saved >= 0 else "no checkpoint was saved"
        return error_exit(f"{message}. {last}", code=3)

    def _extras_failed(self, step: int, failed: list[ExtraError], *, keep: bool) -> int:
        """An evaluation or samples that failed at ``step``: nothing trained is lost, one line,
        exit 2. After the last step its checkpoint is committed already; ``final.json`` is not
        written (the run is not done), and ``--resume`` makes what is missing (`finish_again`).
        Before it, this step is saved first (``keep``: not inside a bad streak; one process:
        with several the failure may be one process's alone, and a save is a collective the
        others would not join)."""
        total, folder = self.cfg.train.steps, RunDir(self.run_dir).checkpoints
        what = " and the ".join(f.what for f in failed)
        why = "; ".join(f.reason if len(failed) == 1 else str(f) for f in failed)
        if step == total:
            self._close()
            _final_files(self.plan, self.setup, self.state.param_tree(), step, None, None, True)
            return error_exit(
                f"the {what} after the last step failed: {why}. Step {step} is saved in "
                f"{str(folder)!r} and final.json is not written: fix the cause and --resume "
                "to make them (failing again there, they are skipped and named in final.json)"
            )
        keys = {"evaluation": "train.eval_every", "samples": "train.sample_every"}
        fix = f"fix the cause (or set {' and '.join(f'{keys[f.what]}=0' for f in failed)})"
        if keep and jax.process_count() == 1:
            evaluated = all(f.what != "evaluation" for f in failed)
            self.save(step, force=True, commit=True, ranked=evaluated)
            self._close()
            where = f"step {step} is saved in {str(folder)!r}: {fix} and --resume"
        else:
            self._close()
            where = last_checkpoint_words(self.run_dir, f"{fix} and --resume", f"; {fix}")
        return error_exit(f"the {what} at step {step} failed: {why}; {where}")

    def _write_failed(self, err: ckpt.CheckpointWriteError) -> int:
        """A checkpoint the disk refused (full, read-only ...): the steps committed before are
        intact (tjx.ckpt removed the partial one); one line naming the fix, exit 2."""
        with contextlib.suppress(Exception):  # said already: nothing more to wait for
            self.manager.close()
        with contextlib.suppress(Exception):
            self.logger.close()
        folder = RunDir(self.run_dir).checkpoints
        fix = "free space on it" if err.errno in _FULL else "fix it"
        fix = "make it writable" if err.errno in _DENIED else fix
        last = last_checkpoint_words(
            self.run_dir, f"{fix}, then --resume", f"; {fix}, then start again"
        )
        return error_exit(
            f"checkpoint: cannot write step {err.step} to {str(folder)!r}: {err.reason}; {last}"
        )

    def _finish(self, step_done: int, stopped_by: str | None) -> int:
        """The last save, ``final.json`` and the loss plot; exit 0 (a signal's stop included).
        A run whose last evaluation or samples a signal cut short gets no ``final.json`` (it
        is not done): ``--resume`` makes them (`finish_again`)."""
        total, params = self.cfg.train.steps, self.state.param_tree()
        self.save(step_done, force=True)
        self._close()
        if step_done == total and self.extras_done:  # done, whatever came after
            _final_files(self.plan, self.setup, params, step_done, self.last_eval, None, True)
            export_adapters(self.plan, self.setup, params, self.primary)
            print(f"done: {step_done} steps; run directory {self.run_dir}")
            return 0
        if step_done == total:  # a signal cut the last evaluation or samples short
            _final_files(self.plan, self.setup, params, step_done, None, None, redo=True)
            print(
                f"{stopped_by}: saved step {step_done} to {self.run_dir}; what follows the last "
                "step was cut short: --resume makes the evaluation, the samples and final.json"
            )
            return 0
        why = stopped_by or "stop_at"
        _final_files(self.plan, self.setup, params, step_done, self.last_eval, why, redo=True)
        print(
            f"{stopped_by or 'train.stop_at'}: saved step {step_done} to {self.run_dir}; "
            "resume with --resume"
        )
        return 0


def finish_again(
    plan: RunPlan, setup: run_state.Setup, bundle: Bundle, state: TrainState, step: int
) -> int:
    """A finished run's ``--resume`` (``step`` >= ``train.steps``): what its end left undone —
    after a kill, a signal, or an evaluation or samples that failed after the last checkpoint —
    made now: the evaluation and the last samples (when ``final.json`` is missing), then
    ``final.json`` and the loss plot. Each extra is tried once more: one that fails again is one
    warning line and is named in ``final.json``'s ``"skipped"`` (``{what: reason}``), which is
    written all the same, so that the run is done (the next ``--resume`` has nothing to do).
    Every process evaluates and samples (the parameters span them all). Exit 0."""
    total, made, skipped = plan.config.train.steps, list[str](), dict[str, str]()
    # The handlers as the loop's: a signal abandons the extras, and lets the files be written.
    with stop_on_signals(plan.run_dir) as stop:
        try:
            val = None  # final.json is there: the run is done
            if not RunDir(plan.run_dir).final_file.exists():
                val = _extras_again(plan, setup, bundle, state, step, stop, made, skipped)
        except parallel.StoppedError as stopped:
            print(
                f"{stopped.args[0]}: stopped; the run is at step {step} of {total} without "
                "final.json: --resume makes it"
            )
            return 0
        made += _final_files(plan, setup, state.param_tree(), step, val, None, False, skipped)
        done = f"; rebuilt {', '.join(made)}" if made else ""
        done += f"; skipped: {', '.join(skipped)}" if skipped else ""
        print(f"nothing to do: the run is already at step {step} of {total}{done}")
        export_adapters(plan, setup, state.param_tree(), parallel.is_primary())
    return 0


def _extras_again(
    plan: RunPlan,
    setup: run_state.Setup,
    bundle: Bundle,
    state: TrainState,
    step: int,
    stop: parallel.StopFlag,
    made: list[str],
    skipped: dict[str, str],
) -> dict[str, float]:
    """`finish_again`'s evaluation and last samples (those that are missing): the validation
    metrics (none when the evaluation failed again); the files written go to ``made``."""
    cfg, folder = plan.config, RunDir(plan.run_dir)
    val = _again(
        "evaluation", lambda: evaluation.evaluate_state(setup, state, bundle, cfg), stop, skipped
    )
    sample = folder.samples_file(step)
    if cfg.objective.name == "lm" and not sample.exists():
        params = state.model_tree()
        texts = _again(
            "samples", lambda: evaluation.sample(setup, params, bundle, cfg, step), stop, skipped
        )
        if texts is not None and parallel.is_primary():
            folder.write_samples(step, evaluation.format_samples(texts, cfg.sampling.prompts))
            made.append(f"{RunDir.SAMPLES_DIR}/{sample.name}")
    return val if val is not None else {}  # skipped: final.json without validation metrics


def _again(
    what: str,
    work: Callable[[], T],
    stop: parallel.StopFlag,
    skipped: dict[str, str],
) -> T | None:
    """`finish_again`'s second try of an extra: its result, or None after one warning line
    (``skipped`` records it)."""
    try:
        with interruptible(stop):
            return extra(what, work)
    except ExtraError as failed:
        skipped[what] = failed.reason
        print(
            warning_line(
                f"the {what} failed again: {failed.reason}; skipped (final.json names it)"
            ),
            file=sys.stderr,
            flush=True,
        )
        return None


def export_adapters(
    plan: RunPlan, setup: run_state.Setup, params: chex.ArrayTree, primary: bool
) -> None:
    """``--export-peft DIR``: the adapters of ``params`` as PEFT reads them (cli checked DIR)."""
    if plan.export_peft is None:
        return
    model = nnx.merge(setup.graphdef, jax.device_get(params), setup.rest)
    if primary:
        base = plan.init_from or init_from.recorded(plan.run_dir)  # a resume's: recorded
        nn.save_peft(model, plan.export_peft, plan.config.lora, base_model=base)
        print(f"PEFT adapter written to {plan.export_peft}", flush=True)


def _final_files(
    plan: RunPlan,
    setup: run_state.Setup,
    params: chex.ArrayTree,
    step: int,
    val: dict | None,
    why: str | None,
    redo: bool,
    skipped: Mapping[str, str] | None = None,
) -> list[str]:
    """``final.json`` (not with ``val`` None; ``skipped``: the extras it lacks, and why) and the
    loss plot (tjx.metrics.plot_run, which never fails a run; unless ``redo``, only if
    missing): the files written. Every process digests the parameters (a collective); process 0
    writes."""
    folder, written, primary = RunDir(plan.run_dir), [], parallel.is_primary()
    if val is not None:
        summary = final_summary(
            step, params, num_params=setup.num_params, interrupted_by=why, validation=val
        )
        if skipped:
            summary = {**summary, "skipped": dict(skipped)}
        if primary:
            folder.write_final(summary)
        written.append(RunDir.FINAL_FILE)
    curve, name = folder.curve_file, plan.config.name
    plot = primary and (redo or not curve.exists())
    if plot and metrics.plot_run(plan.run_dir, curve, keys=CURVES, title=name) is not None:
        written.append(RunDir.CURVE_FILE)
    return written
