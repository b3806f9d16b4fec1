"""The train loop: prepare (nothing written), then step, log, evaluate, sample, checkpoint."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

from trainer import rundir
from trainer.plan import RunPlan, config_yaml, error_exit
from trainer.schema import ConfigError

# A dead peer is caught by the peer watch (multihost.watch) within seconds; a slow first-time
# tokenization of a large corpus is not an error.
DATA_READY_TIMEOUT_S = 6 * 3600.0


def _device_note() -> None:
    backend = jax.default_backend()
    devices = jax.devices()
    print(f"devices: {len(devices)} × {devices[0].device_kind} ({backend})", flush=True)
    if backend == "cpu":
        print(
            "note: running on CPU — this works but is slow; a GPU runs the same command much "
            "faster.",
            flush=True,
        )


def run(plan: RunPlan) -> int:
    """Train as planned; exit code 0 on success or after a signal-triggered save, 2 on bad input."""
    from trainer import multihost

    cfg = plan.config
    # Multi-host: the flags, else JAX_COORDINATOR_ADDRESS/... or SLURM; with none of them this is a
    # single process and nothing happens. A setup that cannot work ends here with one error line
    # (exit 1 when the processes could not join, 2 when they disagree), never a hang.
    try:
        info = multihost.join(
            plan.distributed, cfg.to_dict(), resume=plan.resume, init_from=plan.init_from
        )
    except multihost.JoinError as err:
        return error_exit(str(err), code=err.code)
    if info.num_processes > 1:
        print(
            f"multi-host: process {info.process_id} of {info.num_processes} "
            f"(coordinator {info.coordinator})",
            flush=True,
        )
    # A peer that dies ends this process within seconds, in one line (multihost.watch); a
    # single process watches nothing.
    with multihost.watch(plan.run_dir):
        return _prepare_and_train(plan)


def _prepare_and_train(plan: RunPlan) -> int:
    from tjx import parallel
    from trainer import data_setup, memory_fit, state

    cfg = plan.config
    primary = parallel.is_primary()
    _device_note()
    # Everything that can fail on bad input happens before the run directory exists.
    try:
        bundle = data_setup.prepare(cfg)
        # Data preparation may take one host much longer (it builds the shards the others then
        # find cached); CPU collectives give up on a peer after ~30 s, so everyone waits here.
        parallel.barrier("trainer:data_ready", timeout_s=DATA_READY_TIMEOUT_S)
        loader = data_setup.train_loader(bundle, cfg)  # a corpus too small for a batch fails here
        if plan.init_from is None:
            cfg = memory_fit.fit_memory(cfg, bundle.vocab_size)
            plan = dataclasses.replace(plan, config=cfg)
        setup = state.build(cfg, bundle.vocab_size, plan.init_from)
    except (ConfigError, ValueError, FileNotFoundError) as err:
        return error_exit(str(err))
    # Process 0 writes the run directory; the others only take part in checkpoints (each saves
    # its own shards there), after process 0 has made the folder. A resume writes only once its
    # checkpoint has been restored (see _train): a failed one leaves the run as it was.
    if primary and not plan.resume:
        _write_run_files(plan, setup, bundle)
    parallel.barrier("trainer:run_dir", timeout_s=plan.distributed.timeout_s)
    try:
        return _train(plan, bundle, setup, loader)
    finally:
        sys.stdout.flush()


def _train(plan: RunPlan, bundle: Any, setup: Any, loader: Any) -> int:
    from tjx import ckpt, metrics, parallel
    from trainer import data_setup, evaluation, progress, sampling
    from trainer.divergence import DivergenceGuard
    from trainer.model_build import flops_per_unit
    from trainer.signals import stop_on_signals
    from trainer.step import make_train_step
    from trainer.stop_agreement import for_this_run

    cfg, run_dir = plan.config, plan.run_dir
    primary = parallel.is_primary()
    manager = ckpt.CheckpointManager(
        run_dir / rundir.CHECKPOINTS_DIR,
        keep_last=cfg.checkpoint.keep_last,
        keep_best=cfg.checkpoint.keep_best,
        best_metric="val_loss" if cfg.checkpoint.keep_best else None,
        async_save=cfg.checkpoint.async_save,
        mesh=setup.mesh,
    )
    st = setup.state
    start = 0
    if plan.resume:
        try:
            restored = manager.restore(target=st)
            if restored.data_state is not None:
                data_setup.restore_loader(loader, restored.data_state)
        except (ckpt.CheckpointError, ValueError) as err:
            # Every step corrupt, or a state the config check could not foresee (another process
            # count splits the batch differently): one line, and the run directory as it was.
            manager.close()
            return error_exit(f"--resume: {err}")
        # Exactly the fresh state's placement (restore already reshards onto the target).
        st = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), restored.state, st)
        start = int(restored.step)
        if primary:
            _write_run_files(plan, setup, bundle)  # the config may hold new training settings
        print(f"resumed from step {start} ({run_dir / rundir.CHECKPOINTS_DIR})", flush=True)
    total = cfg.train.steps
    if start >= total:
        # A kill after the last checkpoint but before final.json or the plot must not leave them
        # missing for good: a finished run's --resume makes what is missing, and nothing else.
        manager.close()
        rebuilt = _rebuild_artefacts(run_dir, setup, st, bundle, cfg, start, primary)
        done = f"; rebuilt {', '.join(rebuilt)}" if rebuilt else ""
        print(f"nothing to do: the run is already at step {start} of {total}{done}")
        return 0
    # The log sinks open their files only now: a resume that failed above touched none of them.
    logger = metrics.make_logger(
        list(cfg.logging.sinks),
        str(run_dir),
        config=cfg.to_dict(),
        project=cfg.logging.project,
        # W&B never reaches for the network unless asked: offline is the default mode.
        wandb_mode=cfg.logging.wandb_mode if "wandb" in cfg.logging.sinks else None,
    )
    shardings = jax.tree.map(lambda x: x.sharding, st)
    step_fn = jax.jit(
        make_train_step(setup.graphdef, setup.rest, setup.tx, cfg),
        out_shardings=(shardings, None),
        donate_argnums=(0,),
    )
    tokens_per_step = cfg.data.batch_size * (cfg.data.seq_len if cfg.task != "classify" else 1)
    unit = "images" if cfg.task == "classify" else "tokens"  # what a step consumes, and its rate
    flops_tok = flops_per_unit(setup.nn_config, cfg)
    peak = _peak_flops(cfg)
    print(
        f"model: {setup.num_params:,} parameters; {tokens_per_step:,} {unit} per step", flush=True
    )
    last_eval: dict[str, float] = {}
    t_last, step_done = time.perf_counter(), start
    profiling = False

    saved = [start if plan.resume else -1]
    # Several processes stop together: a signal on any of them stops all at the same boundary
    # (one host-side exchange per step); one process decides alone, as before.
    agreement = for_this_run()
    stopped_by: str | None = None
    guard = DivergenceGuard(cfg.train.max_bad_steps)

    def save(step: int, *, force: bool) -> None:
        if saved[0] == step:
            return
        saved[0] = step
        metrics_for_ckpt = {"val_loss": last_eval["loss"]} if "loss" in last_eval else None
        manager.save(
            step,
            state=st,
            data_state=loader.state_dict(),
            config=cfg.to_dict(),
            metrics=metrics_for_ckpt,
            force=force,
        )

    with stop_on_signals(run_dir) as stop, progress.bar(cfg, start, total) as bar:
        for step in range(start, total):
            stopped_by = agreement.decide(step, stop.signal_name)
            if stopped_by or (cfg.train.stop_at is not None and step >= cfg.train.stop_at):
                break
            if plan.profile and step == plan.profile[0]:
                jax.profiler.start_trace(str(run_dir / "profile"))
                profiling = True
            batch = data_setup.to_global(next(loader), setup.mesh)
            st, out = step_fn(st, batch)
            step_done = step + 1
            guard.push(step_done, out)
            if guard.diverged:
                break
            if profiling and plan.profile and step_done == plan.profile[1]:
                jax.block_until_ready(st)
                jax.profiler.stop_trace()
                profiling = False
            if step_done % cfg.train.log_every == 0 or step_done == total:
                scalars = {k: float(np.asarray(v)) for k, v in jax.device_get(out).items()}
                now = time.perf_counter()
                dt = (now - t_last) / max(
                    1, step_done - max(start, step_done - cfg.train.log_every)
                )
                t_last = now
                scalars[f"{unit}_per_s"] = tokens_per_step / max(dt, 1e-9)
                if peak:
                    scalars["mfu"] = float(
                        metrics.mfu(
                            scalars[f"{unit}_per_s"],
                            flops_tok,
                            peak,
                            num_devices=jax.device_count(),
                        )
                        or 0.0
                    )
                logger.log_scalars(step_done, scalars)
                bar.update(step_done, scalars["loss"])
            evaluate_now = cfg.train.eval_every and step_done % cfg.train.eval_every == 0
            if evaluate_now or step_done == total:
                last_eval = evaluation.evaluate(setup, st["params"], bundle, cfg)
                logger.log_scalars(step_done, {f"val_{k}": v for k, v in last_eval.items()})
                bar.note(f"step {step_done}: val loss {last_eval['loss']:.4f}")
            sample_now = cfg.train.sample_every and step_done % cfg.train.sample_every == 0
            if cfg.task == "lm" and (sample_now or step_done == total):
                # Every process generates (the params span them all); process 0 writes.
                texts = sampling.sample(setup, st["params"], bundle, cfg, step_done)
                logger.log_text(step_done, "sample", texts[0])
                if primary:
                    path = rundir.write_samples(run_dir, step_done, texts, cfg.sampling.prompts)
                    bar.note(f"step {step_done}: samples → {path}")
            ckpt_now = cfg.train.checkpoint_every and step_done % cfg.train.checkpoint_every == 0
            if ckpt_now and step_done != total:
                guard.flush()  # never checkpoint a step of a bad streak
                if guard.diverged:
                    break
                if guard.streak == 0:
                    save(step_done, force=False)
        if profiling:
            jax.profiler.stop_trace()
    guard.flush()
    if guard.diverged:  # nothing worse than the last good checkpoint is saved
        manager.wait_until_finished()
        manager.close()
        with contextlib.suppress(Exception):
            logger.close()
        last = (
            f"the last checkpoint is step {saved[0]} in {run_dir / rundir.CHECKPOINTS_DIR}"
            if saved[0] >= 0
            else "no checkpoint was saved"
        )
        return error_exit(f"{guard.diverged}. {last}", code=3)
    # A signal after the last boundary (during the last step) is still reported, as before.
    stopped_by = stopped_by or stop.signal_name
    interrupted = bool(stopped_by) or step_done < total
    save(step_done, force=True)
    manager.wait_until_finished()
    manager.close()
    summary: dict[str, Any] = {
        "step": step_done,
        "interrupted_by": stopped_by or ("stop_at" if step_done < total else None),
        "params_sha256": rundir.params_digest(st["params"]),
        "num_params": setup.num_params,
        **{f"val_{k}": v for k, v in last_eval.items()},
    }
    with contextlib.suppress(Exception):
        logger.close()
    if primary:
        rundir.write_final(run_dir, summary)
        _plot(run_dir)
    if interrupted:
        print(
            f"{stopped_by or 'train.stop_at'}: saved step {step_done} to {run_dir}; "
            "resume with --resume"
        )
    else:
        print(f"done: {step_done} steps; run directory {run_dir}")
    return 0


def _write_run_files(plan: RunPlan, setup: Any, bundle: Any) -> None:
    """``config.yaml``, ``model.json`` and ``data.json``; a file whose content is the same is left
    untouched, so a resume that changes nothing changes no file."""
    from trainer import data_setup
    from trainer.model_build import describe_nn_config

    cfg, run_dir = plan.config, plan.run_dir
    rundir.create(run_dir, cfg.to_dict())
    rundir.write_json(run_dir, rundir.MODEL_FILE, describe_nn_config(setup.nn_config))
    rundir.write_json(run_dir, rundir.DATA_FILE, data_setup.describe(bundle, cfg, run_dir))


def _rebuild_artefacts(
    run_dir: Path, setup: Any, st: Any, bundle: Any, cfg: Any, step: int, primary: bool
) -> list[str]:
    """Write a finished run's missing ``final.json`` (evaluating once) and loss plot."""
    from trainer import evaluation

    rebuilt = []
    if not (run_dir / rundir.FINAL_FILE).exists():
        # Every process evaluates (the parameters span them all); process 0 writes.
        val = evaluation.evaluate(setup, st["params"], bundle, cfg)
        if primary:
            summary = {
                "step": step,
                "interrupted_by": None,
                "params_sha256": rundir.params_digest(st["params"]),
                "num_params": setup.num_params,
                **{f"val_{k}": v for k, v in val.items()},
            }
            rundir.write_final(run_dir, summary)
        rebuilt.append(rundir.FINAL_FILE)
    if primary and not (run_dir / rundir.CURVE_FILE).exists():
        _plot(run_dir)
        if (run_dir / rundir.CURVE_FILE).exists():
            rebuilt.append(rundir.CURVE_FILE)
    return rebuilt


def _peak_flops(cfg: Any) -> float | None:
    """Peak FLOP/s of one device for the compute dtype; None (no MFU logged) when unknown (CPU)."""
    import warnings

    from tjx import metrics

    if jax.default_backend() == "cpu":
        return None
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "tf32"}[cfg.model.compute_dtype]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        peak = metrics.device_peak_flops(jax.devices()[0], dtype)
    return float(peak) if peak else None


def _plot(run_dir: Path) -> None:
    from tjx import metrics

    jsonl = next(iter(sorted(run_dir.glob("*.jsonl"))), None)
    if jsonl is None:
        return
    try:
        metrics.plot_curves(str(jsonl), str(run_dir / rundir.CURVE_FILE), keys=("loss", "val_loss"))
    except Exception as err:  # the plot is a convenience; never fail a finished run over it
        print(f"warning: could not plot the loss curve: {err}", file=sys.stderr)


__all__ = ["config_yaml", "run"]
