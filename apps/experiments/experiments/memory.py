"""Study 6's runs: compile each config's train step and time it; nothing is trained.

The peak is the trainer's own pre-flight measure (``trainer.abstract_step`` compiled
from abstract shapes, ``tjx.metrics.peak_bytes`` of XLA's memory analysis: arguments + outputs +
temporaries − donated aliases), as ``tools/bench_train.py memory`` takes it. The step time is the
median (± the standard deviation) of a few executed steps of the trainer's step on synthetic
token batches.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments.runner import (
    SUMMARY_FILE,
    machine,
    read_row,
    study_progress,
    use_compile_cache,
    utc_now,
    write_row,
)
from experiments.spec import Row, RunSpec, Study

#: Executed steps timed per config (after one warm-up step).
TIMED_STEPS = {"smoke": 2, "cpu": 5, "gpu": 10}


def trainer_config(spec: RunSpec) -> Any:
    """The validated trainer config of ``spec`` (preset + overrides, as ``--set`` parses them)."""
    from trainer import load_config

    return load_config(spec.preset, list(spec.sets))


def _vocab(cfg: Any) -> int:
    if cfg.vocab_size:  # model.vocab_size as the config sets it
        return int(cfg.vocab_size)
    from trainer import make_tokenizer

    return int(make_tokenizer(cfg).vocab_size)


def measure_config(spec: RunSpec, scale: str) -> Row:
    """Peak MiB and compile seconds of the abstract step; median executed step seconds."""
    import jax

    from tjx import data, parallel
    from tjx.metrics import peak_bytes
    from trainer import abstract_step, build_state, jit_train_step, resolve, step_config

    cfg = trainer_config(spec)
    vocab = _vocab(cfg)
    resolved = step_config(resolve(cfg, vocab))
    step, abstract_state, abstract_batch = abstract_step(resolved)
    t0 = time.perf_counter()
    compiled = step.lower(abstract_state, abstract_batch).compile()
    compile_s = time.perf_counter() - t0
    peak = peak_bytes(compiled)["peak"]
    del compiled
    setup = build_state(resolved)
    run = jit_train_step(setup)
    batch = data.random_batch(cfg.data.batch_size, cfg.data.seq_len, vocab)
    batch = parallel.shard_batch(batch, setup.mesh)
    st, out = run(setup.state, batch)  # warm-up (compiles the concrete step)
    jax.block_until_ready(out)
    times = []
    for _ in range(TIMED_STEPS[scale]):
        t0 = time.perf_counter()
        st, out = run(st, batch)
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    return {
        "label": spec.label,
        "group": spec.group,
        "peak_mib": peak / 2**20,
        "compile_s": compile_s,
        "step_s": statistics.median(times),
        "step_s_std": statistics.stdev(times) if len(times) > 1 else 0.0,
        "loss_finite": bool(np.isfinite(float(out["loss"]))),
    }


def run_memory(study: Study, scale: str, runs_dir: Path) -> list[tuple[RunSpec, Path, Row]]:
    """Every config of the memory study (a measured one is skipped on a rerun)."""
    specs = study.runs(scale)
    use_compile_cache(runs_dir / ".xla-cache")
    out = []
    with study_progress(study.name, len(specs)) as note:
        for i, spec in enumerate(specs):
            run_dir = runs_dir / study.name / scale / f"{i:02d}"
            path = run_dir / SUMMARY_FILE
            if not path.is_file():
                note(f"{spec.label} compiling", i)
                row = measure_config(spec, scale)
                row.update(measured_at=utc_now(), machine=machine())
                run_dir.mkdir(parents=True, exist_ok=True)
                write_row(path, row)
            out.append((spec, run_dir, read_row(path)))
            note(f"{spec.label} done", i + 1)
    return out
