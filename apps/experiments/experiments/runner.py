"""Run a study's trainer configs in this process, through the trainer's own plan and loop.

Each config is one ``python -m trainer`` command line (``--config PRESET --run-dir DIR --set
...``), planned by ``trainer.plan_argv`` and carried out by ``trainer.run`` (the trainer's
public face over its CLI's plan and its loop), exactly as the command does; nothing of the
trainer is copied. One process runs them all, so JAX is imported once and XLA's persistent
compilation cache (in the study's runs folder) serves every config that compiles the same
program again — a resumed run, a rerun, an identical shape.

Each config runs once per seed (`experiments.spec.SEEDS`, ``train.seed``), each seed in its own
run directory; the table shows the seeds' mean ± standard deviation (`experiments.stats`). A
study with a `Sweep` has its sweep extended past an edge that holds the best point
(`experiments.sweep`).

A study can be stopped at any point and run again: a config whose ``summary.json`` exists is
done and skipped; one with checkpoints but no ``final.json`` continues with ``--resume``; one
that diverged (the trainer's exit 3) is a result, recorded in ``status.json``, and not rerun.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from experiments.results import train_row
from experiments.spec import SEEDS, Row, RunContext, RunSpec, Study

STATUS_FILE = "status.json"
SUMMARY_FILE = "summary.json"


def write_row(path: Path, row: dict[str, Any]) -> None:
    """A row or status file as standard JSON (a NaN as null, named: `tjx.metrics.dumps_json`)."""
    from tjx.metrics import dumps_json

    path.write_text(dumps_json(row, indent=1))


def read_row(path: Path) -> dict[str, Any]:
    """A file `write_row` wrote (or an older one with bare NaN), as it was written."""
    from tjx.metrics import loads_json

    return dict(loads_json(path.read_text()))


class StudyError(RuntimeError):
    """A config could not run (bad overrides, a trainer error other than divergence)."""


def machine() -> str:
    """The machine in words: CPU architecture and cores, and the accelerator if any."""
    import jax

    dev = jax.devices()[0]
    cores = os.cpu_count()
    accel = "" if dev.platform == "cpu" else f", {jax.device_count()} × {dev.device_kind}"
    return f"{platform.machine()} CPU, {cores} cores{accel} (jax {jax.__version__}, {dev.platform})"


def utc_now() -> str:
    """The current UTC time as ``YYYY-MM-DD HH:MM UTC``."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def use_compile_cache(folder: Path) -> None:
    """Point JAX's persistent compilation cache at ``folder`` (unless the user chose one)."""
    import jax

    if getattr(jax.config, "jax_compilation_cache_dir", None):  # the user chose one
        return
    folder.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def trainer_argv(spec: RunSpec, run_dir: Path, resume: bool) -> list[str]:
    """The trainer command line of one config (a resume continues its own checkpoints, so it
    takes no ``--init-from``)."""
    argv = ["--config", spec.preset, "--run-dir", str(run_dir)]
    for item in spec.sets:
        argv += ["--set", item]
    if resume:
        return [*argv, "--resume"]
    return [*argv, "--init-from", spec.init_from] if spec.init_from else argv


def _has_checkpoint(run_dir: Path) -> bool:
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.name.isdigit() for p in ckpts.iterdir())


def plan_config(spec: RunSpec, run_dir: Path, resume: bool = False) -> Any:
    """The trainer's validated `RunPlan` of a config (nothing written); StudyError if invalid."""
    from trainer import ConfigError, plan_argv

    try:
        return plan_argv(trainer_argv(spec, run_dir, resume))
    except ConfigError as err:
        raise StudyError(f"{spec.label}: {err}") from None


def run_config(spec: RunSpec, run_dir: Path) -> dict[str, Any]:
    """Train one config to its end (or to divergence); its status (``exit``, times)."""
    from trainer import run

    status_path = run_dir / STATUS_FILE
    if status_path.is_file():  # finished (or diverged) before
        return read_row(status_path)
    resume = _has_checkpoint(run_dir)
    plan = plan_config(spec, run_dir, resume=resume)
    started, load = time.time(), os.getloadavg()[0]
    code = run(plan)
    status = {
        "exit": code,
        "started": started,
        "ended": time.time(),
        "resumed": resume,
        # The 1-minute load average as the config started and ended: how shared the machine was.
        "load": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    if code not in (0, 3):  # 3: diverged, a result of the study; anything else is an error
        raise StudyError(f"{spec.label}: the trainer exited {code} (run dir {run_dir})")
    if code == 0 and not (run_dir / "final.json").is_file():
        raise StudyError(f"{spec.label}: stopped before the end (signal?); run the study again")
    write_row(status_path, status)
    return status


def finish_row(study: Study, spec: RunSpec, run_dir: Path, scale: str) -> Row:
    """The config's table row (cached in ``summary.json``): metrics, status, study extras."""
    path = run_dir / SUMMARY_FILE
    if path.is_file():
        return read_row(path)
    status = read_row(run_dir / STATUS_FILE)
    row = train_row(spec, run_dir, status)
    if study.after_run is not None and status["exit"] == 0:
        cfg = plan_config(spec, run_dir, resume=True).config
        row.update(study.after_run(RunContext(spec, run_dir, scale, cfg)))
    row.update(measured_at=utc_now(), machine=machine())
    write_row(path, row)
    return row


@contextmanager
def study_progress(title: str, total: int) -> Iterator[Callable[[str, int], None]]:
    """A bar across a study's configs (the trainer's bar: live on a terminal, plain lines
    elsewhere); yields ``note(text, done)``."""
    from trainer import progress_bar

    with progress_bar(0, total, label=title) as bar:
        yield lambda text, done: bar.update(done, text=text)


def seed_spec(spec: RunSpec, seed: int) -> RunSpec:
    """``spec`` run with ``train.seed=seed`` (the last ``--set`` wins over the study's own)."""
    return dataclasses.replace(
        spec, sets=(*spec.sets, f"train.seed={seed}"), params=(*spec.params, ("seed", seed))
    )


def config_dir(runs_dir: Path, study: Study, scale: str, spec: RunSpec) -> Path:
    """A config's folder (one ``seed_<n>`` run directory per seed inside)."""
    return runs_dir / study.name / scale / spec.label


def run_study(
    study: Study, scale: str, runs_dir: Path, seeds: tuple[int, ...] | None = None
) -> list[tuple[RunSpec, Path, Row]]:
    """Every config of ``study`` at ``scale``, each once per seed (``seeds``, default the
    scale's `SEEDS`; finished runs skipped), a sweep extended until its best lies inside; one
    row per config (the seeds' mean ± std, `experiments.stats.aggregate`) with its first seed's
    run directory (the curves)."""
    from experiments import sweep as sweep_mod
    from experiments.stats import aggregate

    specs: list[RunSpec] = list(study.runs(scale))
    seeds = SEEDS[scale] if seeds is None else seeds
    use_compile_cache(runs_dir / ".xla-cache")
    done: dict[str, tuple[RunSpec, Path, Row]] = {}
    # The bar counts configs × seeds; a sweep's extensions add to it (the trainer's bar has a
    # fixed total: it counts every extension the limit allows, so it may end short of it).
    limit = 0 if study.sweep is None else 1 if scale == "smoke" else study.sweep.max_extensions
    extra = limit * len({s.group for s in specs})
    with study_progress(study.name, (len(specs) + extra) * len(seeds)) as note:

        def rows_of(batch: list[RunSpec]) -> list[Row]:
            for spec in batch:
                if spec.label in done:
                    continue
                seed_rows, first = [], None
                for seed in seeds:
                    run_dir = config_dir(runs_dir, study, scale, spec) / f"seed_{seed}"
                    first = first or run_dir
                    one = seed_spec(spec, seed)
                    if not (run_dir / SUMMARY_FILE).is_file():
                        note(f"{spec.label} seed {seed} running", len(done) * len(seeds))
                        run_config(one, run_dir)
                    seed_rows.append({**finish_row(study, one, run_dir, scale), "seed": seed})
                assert first is not None
                done[spec.label] = (spec, first, aggregate(seed_rows))
                note(f"{spec.label} done", len(done) * len(seeds))
            return [done[s.label][2] for s in batch]

        notes: list[str] = []
        if study.sweep is not None:
            specs, notes = sweep_mod.extend(specs, rows_of, study.sweep, limit)
        rows_of(specs)
    out = [done[s.label] for s in specs]
    for _, _, row in out:  # every row carries the sweep's notes: the report states them
        row["sweep_notes"] = notes
    return out
