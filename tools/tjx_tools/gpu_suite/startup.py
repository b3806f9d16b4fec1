"""Time to the first step (issue #52): ``python -m trainer`` from launch to its first logged step.

For each preset, in order of importance (gpt2_small, gpt2_medium, llama_small, gpt2_large), the
trainer is started exactly as a user starts it on the carried corpus — ``python -m trainer
--config X --data kjv --set train.steps=2`` with the trainer's defaults for everything else (the
memory check, the kernel choice, XLA's autotuning; whatever the trainer's compile settings are
today) — once **cold** (JAX's persistent compilation cache, and the XLA autotuning results kept
beside it, in a fresh empty folder: ``TJX_COMPILATION_CACHE_DIR``) and once **warm** (the same
folder again). The time is the wall clock from ``Popen`` to the moment the run's ``metrics.jsonl``
holds step 1 (the trainer logs every step here: ``train.log_every=1``); then the run is killed
(its remaining step, evaluation and checkpoint are not what is measured). A run still short of
step 1 at the per-run limit is killed and recorded as ``> limit``; a warm run follows only a cold
run that reached step 1 (nothing of its step is cached otherwise). The trainer's own lines about
compiling and caches are kept with the row (what it said it reused). Runs that would start after
the section's deadline are skipped and said so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tjx_tools.gpu_suite.report import Section, md_table
from tjx_tools.gpu_suite.train_run import SMOKE_TEXT

#: Presets in order of importance, and whether a warm run follows the cold one.
PRESETS = ("gpt2_small", "gpt2_medium", "llama_small", "gpt2_large")
#: The trainer's lines kept with a row: what it says about compiling, caches and memory.
SAID = ("compil", "cache", "autotun", "memory:", "attention:")
#: Overrides of the smoke run (a CPU, tiny shapes, byte tokens on a stand-in corpus).
SMOKE_SETS = [
    "data.tokenizer=byte",
    "data.seq_len=32",
    "model.max_seq_len=32",
    "data.batch_size=2",
    "eval.batch_size=2",
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.mlp.dim=64",
]


def command(config: str, run_dir: Path, data: str, smoke: bool) -> list[str]:
    """The trainer command line: the user's, plus what makes step 1 visible and the run short."""
    sets = [
        "train.steps=2",
        "train.log_every=1",
        "train.checkpoint_every=0",
        "train.sample_every=0",
        "logging.sinks=[jsonl]",
        "logging.progress=false",
        *(SMOKE_SETS if smoke else []),
    ]
    args = [sys.executable, "-m", "trainer", "--config", config, "--data", data]
    args += ["--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    return args


def first_step_logged(jsonl: Path) -> bool:
    """Whether ``metrics.jsonl`` holds a training record of step 1 or later."""
    if not jsonl.is_file():
        return False
    for line in jsonl.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if isinstance(record, dict) and "loss" in record and record.get("step", 0) >= 1:
            return True
    return False


def time_to_first_step(
    config: str, cache: Path, data: str, smoke: bool, limit_s: float
) -> dict[str, Any]:
    """One start of the trainer with ``cache`` as its compilation cache (see the module doc)."""
    run_dir = Path(tempfile.mkdtemp(prefix="tjx-startup-")) / "run"
    env = dict(os.environ)
    env["TJX_COMPILATION_CACHE_DIR"] = str(cache)
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    lines: list[str] = []
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        command(config, run_dir, data, smoke),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )

    def read() -> None:  # the pipe must be drained, or a chatty child blocks on it
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(f"{time.perf_counter() - t0:6.1f} s  {line.rstrip()}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    seconds, status = None, "> limit"
    while True:
        if first_step_logged(run_dir / "metrics.jsonl"):
            seconds, status = time.perf_counter() - t0, "ok"
            break
        if proc.poll() is not None:
            status = f"exited {proc.returncode} before step 1"
            break
        if time.perf_counter() - t0 > limit_s:
            break
        time.sleep(0.2)
    if proc.poll() is None:
        proc.kill()  # our own child, by its handle: the rest of the run is not measured
    proc.wait()
    reader.join(timeout=5)
    shutil.rmtree(run_dir.parent, ignore_errors=True)
    said = [ln for ln in lines if any(w in ln.lower() for w in SAID)]
    return {
        "config": config,
        "seconds": None if seconds is None else round(seconds, 1),
        "status": status,
        "limit_s": limit_s,
        "said": said[-8:],
        "tail": lines[-3:] if status != "ok" else [],
    }


def run(
    sec: Section, out: Path, smoke: bool, deadline: float, limit_s: float | None = None
) -> None:
    """Cold then warm starts of each preset until ``deadline`` (perf_counter)."""
    # Smoke: generous (a loaded 2-core CI machine took 70 s to start tiny's trainer).
    limit = limit_s or (300.0 if smoke else 150.0)
    presets = ("tiny",) if smoke else PRESETS
    data = "kjv"
    if smoke:
        corpus = out / "startup_corpus.txt"
        corpus.write_text(SMOKE_TEXT, encoding="utf-8")
        data = str(corpus)
    caches = Path(tempfile.mkdtemp(prefix="tjx-startup-cache-"))
    started = time.perf_counter()
    try:
        for config in presets:
            cache = caches / config  # fresh and empty: the cold start
            for temperature in ("cold", "warm"):
                left = deadline - time.perf_counter()
                if left < 10:
                    sec.notes.append(f"skipped (time budget): {config} {temperature}")
                    continue
                if temperature == "warm" and not any(
                    r["status"] == "ok" for r in sec.rows if r["config"] == config
                ):
                    sec.notes.append(f"{config} warm: not run (the cold start reached no step)")
                    continue
                with sec.cell(f"{config} {temperature}"):
                    row = time_to_first_step(config, cache, data, smoke, min(limit, left))
                    row["cache"] = temperature
                    sec.add_row(row)
                    if row["status"] != "ok":
                        sec.notes.append(f"{config} {temperature}: {row['status']}")
    finally:
        shutil.rmtree(caches, ignore_errors=True)
    sec.summary = {
        "total_s": round(time.perf_counter() - started, 1),
        "limit_s": limit,
        "first_step_s": {f"{r['config']} {r['cache']}": r["seconds"] for r in sec.rows},
    }
    table = [
        [
            r["config"],
            r["cache"],
            f"{r['seconds']:.1f}" if r["seconds"] is not None else f"> {r['limit_s']:.0f}",
            r["status"],
            "<br>".join(x.replace("|", "/") for x in r["said"][-4:]) or None,
        ]
        for r in sec.rows
    ]
    sec.markdown = (
        "Wall time from `python -m trainer --config X --data kjv --set train.steps=2` (defaults "
        "otherwise) to its first logged step; cold = empty compilation/autotuning cache folder, "
        f"warm = the same folder again; killed at {limit:.0f} s. The whole section took "
        f"{sec.summary['total_s']:.0f} s.\n\n"
        + md_table(["config", "cache", "to step 1 (s)", "status", "the trainer said"], table)
    )
