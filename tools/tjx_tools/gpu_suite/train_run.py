"""A short real training run: ``python -m trainer``, exactly as a user starts it, on the device.

gpt2_small from scratch on the built-in KJV corpus, GPT-2 tokenized (``prepare`` builds the
tokenizer and shards into ``.gpu/data``, which travels with the working tree: the GPU machine has no
network). It runs for ``--run-steps`` steps or until ``--run-seconds`` pass, whichever is first; at
the time limit it gets SIGTERM, which the trainer answers by saving and exiting 0 (preemption).
Steps 10–13 are profiled with the trainer's ``--profile-steps``. The section reports the loss curve,
the median logged tokens/s and MFU, and copies the loss plot and the profile (one ``.tar.gz``: the
GPU tool returns only files at most two folders deep) into the output folder.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from tjx.metrics import read_jsonl
from tjx_tools.gpu_suite.report import Section, fmt, md_table

PROFILE_STEPS = "10:13"
#: A stand-in corpus for the smoke run (byte tokens; no download, no tokenizer files).
SMOKE_TEXT = "".join(
    f"Line {i}: the quick brown fox jumps over the lazy dog.\n" for i in range(400)
)


def command(run_dir: Path, smoke: bool, steps: int, corpus: Path | None) -> list[str]:
    """The trainer command line of the run."""
    common = [
        f"train.steps={steps}",
        "train.checkpoint_every=0",
        "logging.sinks=[jsonl]",
        "logging.progress=false",
    ]
    if smoke:
        assert corpus is not None
        sets = [
            *common,
            f"data.source={corpus}",
            "data.tokenizer=byte",
            "data.seq_len=32",
            "model.max_seq_len=32",
            "data.batch_size=4",
            "eval.batch_size=4",
            "train.log_every=2",
            "train.eval_every=8",
            "train.eval_batches=1",
            "train.sample_every=0",
            "sampling.max_new_tokens=4",
            "optimizer.schedule.warmup_steps=2",
            "model.d_model=32",
            "model.num_layers=2",
            "model.num_heads=2",
            "model.mlp.dim=64",
        ]
        config, profile = "tiny", "2:5"
    else:
        sets = [
            *common,
            "data.source=kjv",
            "model.attention_impl=pallas",
            # The train_step section has compiled this step and checked that it fits; the
            # trainer's own check would compile it once more inside the run's time limit.
            "train.fit_memory=false",
            "train.log_every=10",
            "train.eval_every=100",
            "train.eval_batches=10",
            f"train.sample_every={steps}",
        ]
        config, profile = "gpt2_small", PROFILE_STEPS
    args = [sys.executable, "-m", "trainer", "--config", config, "--run-dir", str(run_dir)]
    args += ["--profile-steps", profile]
    for s in sets:
        args += ["--set", s]
    return args


def _tar_profile(run_dir: Path, out: Path) -> Path | None:
    prof = run_dir / "profile"
    if not prof.is_dir() or not any(prof.rglob("*")):
        return None
    dest = out / "profile.tar.gz"
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(prof, arcname="profile")
    return dest


def run(sec: Section, out: Path, smoke: bool, steps: int, seconds: float) -> None:
    """Start the trainer, stop it at the time limit, summarise its metrics."""
    # Outside --out: the run's checkpoints (1.4 GB for gpt2_small) must not travel back.
    run_dir = Path(tempfile.mkdtemp(prefix="tjx-gpu-suite-run-")) / "run"
    corpus = None
    if smoke:
        corpus = out / "smoke_corpus.txt"
        corpus.write_text(SMOKE_TEXT, encoding="utf-8")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(os.path.abspath(p or os.curdir) for p in sys.path)
    # This process still holds JAX's default share of the GPU (75 %): the child must not try to
    # take 75 % of the rest up front.
    env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    log = (out / "train_run.log").open("w", encoding="utf-8")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        command(run_dir, smoke, steps, corpus), stdout=log, stderr=subprocess.STDOUT, env=env
    )
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # the trainer saves and exits 0
        sec.notes.append(f"stopped by SIGTERM at the {seconds:.0f} s limit")
        proc.wait(timeout=120)
    finally:
        log.close()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = (out / "train_run.log").read_text(encoding="utf-8").splitlines()[-5:]
        raise RuntimeError(f"trainer exited {proc.returncode}: " + " | ".join(tail))
    jsonl = run_dir / "metrics.jsonl"
    records = read_jsonl(jsonl) if jsonl.is_file() else []  # tolerates a torn last line
    train = [r for r in records if "loss" in r]
    val = [r for r in records if "val_loss" in r]
    tps = [r["tokens_per_s"] for r in train[1:] if "tokens_per_s" in r]  # [0] includes compile
    mfu = [r["mfu"] for r in train[1:] if "mfu" in r]
    sec.rows = [{"step": r["step"], "loss": r["loss"]} for r in train]
    sec.rows += [{"step": r["step"], "val_loss": r["val_loss"]} for r in val]
    sec.summary = {
        "steps": train[-1]["step"] if train else 0,
        "wall_s": wall,
        "first_loss": train[0]["loss"] if train else None,
        "last_loss": train[-1]["loss"] if train else None,
        "last_val_loss": val[-1]["val_loss"] if val else None,
        "median_tokens_per_s": statistics.median(tps) if tps else None,
        "median_mfu": statistics.median(mfu) if mfu else None,
    }
    plot = run_dir / "loss_curve.png"
    if plot.is_file():
        (out / "loss_curve.png").write_bytes(plot.read_bytes())
    if jsonl.is_file():
        (out / "metrics.jsonl").write_bytes(jsonl.read_bytes())
    profile = _tar_profile(run_dir, out)
    if profile is None:
        sec.notes.append("no profile was written")
    elif profile.stat().st_size > 16 * 2**20:
        sec.notes.append(
            f"profile.tar.gz is {profile.stat().st_size / 2**20:.0f} MiB: over the 16 MiB a "
            "device call returns per file; it stays on the device machine"
        )
    sec.summary["run_dir"] = str(run_dir)
    s = sec.summary
    train_loss = {r["step"]: r["loss"] for r in train}
    curve = [
        [r["step"], fmt(train_loss.get(r["step"]), ".3f"), fmt(r["val_loss"], ".3f")] for r in val
    ]
    sec.markdown = (
        md_table(
            ["steps", "wall s", "first loss", "last loss", "last val loss", "tokens/s", "MFU %"],
            [
                [
                    s["steps"],
                    f"{wall:.0f}",
                    fmt(s["first_loss"], ".3f"),
                    fmt(s["last_loss"], ".3f"),
                    fmt(s["last_val_loss"], ".3f"),
                    fmt(s["median_tokens_per_s"], ",.0f"),
                    fmt(s["median_mfu"] and 100 * s["median_mfu"], ".1f"),
                ]
            ],
        )
        + "\n\nValidation loss along the run:\n\n"
        + md_table(["step", "loss", "val loss"], curve)
    )
