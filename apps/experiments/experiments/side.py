"""Study 9: tjx and a PyTorch GPT built to nanoGPT's recipe, side by side on the same tokens.

Both sides start from the same GPT-2 weights (tjx builds and writes them) and take the same
training batches of a built-in corpus and the same held-out batches, through the workers of
`experiments.nanogpt` (the tjx worker runs the trainer's own step; the PyTorch one runs in
a scratch venv, never imported here). The two alternate every ``chunk`` steps, so the machine's
load hits both alike. Noise: each seed changes the initial weights and the batch order; the spread
(standard deviation) of the final validation loss across seeds, pooled over both sides, is the
noise, and the study fails loudly if tjx's mean is worse than nanoGPT's by more than twice it.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np

from experiments.runner import SUMMARY_FILE, machine, read_row, study_progress, utc_now, write_row
from experiments.spec import Column, Row, RunSpec, Study

SHAPES = {  # vocab (byte-level), seq, batch, d, layers, heads, mlp, steps, val batches, chunk
    "smoke": dict(seq=16, batch=4, d=32, layers=1, heads=2, mlp=128, steps=4, val=1, chunk=2),
    "cpu": dict(seq=128, batch=16, d=128, layers=4, heads=4, mlp=512, steps=300, val=8, chunk=25),
    "gpu": dict(seq=256, batch=32, d=384, layers=6, heads=6, mlp=1536, steps=1000, val=16,
                chunk=50),
}  # fmt: skip
SEEDS = {"smoke": (0, 1), "cpu": (0, 1, 2), "gpu": (0, 1, 2)}
LR = 1e-3
SIDES = ("tjx", "nanoGPT")


class SideBySideError(RuntimeError):
    """tjx's final validation loss is worse than nanoGPT's by more than the noise."""


def trainer_sets(shape: dict[str, int], seed: int) -> list[str]:
    """The trainer overrides that make nanoGPT's recipe: AdamW (0.9, 0.95), weight decay 0.1,
    clipping at 1.0, a constant rate, no dropout, fp32, tied head."""
    s = shape
    return [
        "data.tokenizer=byte", f"data.seq_len={s['seq']}", f"data.batch_size={s['batch']}",
        f"model.max_seq_len={s['seq']}", f"model.d_model={s['d']}",
        f"model.num_layers={s['layers']}",
        f"model.num_heads={s['heads']}", f"model.mlp.dim={s['mlp']}", "model.dropout=0.0",
        "model.precision.compute_dtype=float32", "model.tie_embeddings=true",
        f"eval.batch_size={s['batch']}", "optimizer.name=adamw",
        f"optimizer.schedule.peak_lr={LR}", "optimizer.b1=0.9", "optimizer.b2=0.95",
        "optimizer.eps=1e-8", "optimizer.weight_decay=0.1", "optimizer.clip_norm=1.0",
        "optimizer.schedule.name=constant", "optimizer.schedule.warmup_steps=0",
        f"train.seed={seed}", "mesh.data=1", "train.fit_memory=false",
    ]  # fmt: skip


def side_runs(scale: str) -> list[RunSpec]:
    shape = SHAPES[scale]
    return [RunSpec(f"seed {seed}", tuple(trainer_sets(shape, seed)), params=(("seed", seed),))
            for seed in SEEDS[scale]]  # fmt: skip


def prepare(spec: RunSpec, scale: str, folder: Path) -> dict[str, Any]:
    """Weights (HF GPT-2 layout), the training batches and the held-out batches, as files."""
    from flax import nnx

    from experiments.nanogpt.tjx_worker import trainer_config
    from tjx import nn
    from trainer import prepare_data, resolve, train_loader, val_batches

    shape, seed = SHAPES[scale], int(spec.param("seed"))
    cfg = trainer_config({"preset": "tiny", "sets": list(spec.sets)})
    bundle = prepare_data(cfg)
    vocab = bundle.vocab_size
    model = nn.build_model(resolve(cfg, vocab).model, rngs=nnx.Rngs(seed))
    assert isinstance(model, nn.GPT2)  # model.kind gpt2: the peer reads HF GPT-2 weights
    nn.save_hf_gpt2(model, folder / "weights")
    loader = train_loader(bundle, cfg)
    train = [next(loader) for _ in range(shape["steps"])]
    held = list(val_batches(bundle, cfg, shape["val"]))
    for name, batches in (("batches", train), ("val_batches", held)):
        stacked = {k: np.stack([np.asarray(b[k]) for b in batches]) for k in ("inputs", "targets")}
        np.savez(folder / f"{name}.npz", inputs=stacked["inputs"], targets=stacked["targets"])
    return {
        "preset": "tiny", "sets": list(spec.sets), "vocab": vocab, "lr": LR,
        "weights_dir": str(folder / "weights"),
        "weights": str(folder / "weights" / "model.safetensors"),
        "batches": str(folder / "batches.npz"), "val_batches": str(folder / "val_batches.npz"),
        **{k: shape[k] for k in ("seq", "d", "layers", "heads", "mlp")},
    }  # fmt: skip


def peer_python() -> Path:
    """The scratch venv's interpreter (``$TJX_NANOGPT_VENV``, default ~/.cache/tjx/torch-peer-venv,
    the HF peer tests' venv)."""
    from experiments.nanogpt.venv import DEFAULT_VENV
    from experiments.nanogpt.venv import peer_python as make

    return make(Path(os.environ.get("TJX_NANOGPT_VENV", DEFAULT_VENV)))


def race(spec: RunSpec, scale: str, folder: Path) -> dict[str, dict[str, Any]]:
    """Both workers on one seed: per side the losses, the seconds of the timed steps, val loss."""
    from experiments.nanogpt.side_by_side import LOSS_RTOL, PEER, Worker, tjx_env

    shape = SHAPES[scale]
    blob = json.dumps(prepare(spec, scale, folder))
    argv = [sys.executable, "-m", "experiments.nanogpt.tjx_worker", blob]
    workers = {"tjx": Worker("tjx", argv, tjx_env(XLA_FLAGS=""))}
    try:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        workers["nanoGPT"] = Worker("nanoGPT", [str(peer_python()), str(PEER), blob], env)
        first = {k: w.first_loss for k, w in workers.items()}
        if abs(first["tjx"] - first["nanoGPT"]) > LOSS_RTOL * abs(first["nanoGPT"]):
            raise SideBySideError(f"the two models disagree before any update: {first}")
        out: dict[str, dict[str, Any]] = {
            k: {"losses": [first[k]], "seconds": 0.0} for k in workers
        }
        left, order = shape["steps"] - 1, list(SIDES)
        while left > 0:
            n = min(shape["chunk"], left)
            for name in order:
                words = workers[name].ask(f"losses {n}", "losses")
                out[name]["seconds"] += float(words[0])
                out[name]["losses"] += [float(x) for x in words[1:]]
            order.reverse()
            left -= n
        for name, w in workers.items():
            out[name]["val_loss"] = float(w.ask("val", "val")[0])
    finally:
        for w in workers.values():
            w.close()
    return out


def run_side(study: Study, scale: str, runs_dir: Path) -> list[tuple[RunSpec, Path, Row]]:
    """Every seed (a finished seed is skipped on a rerun); one row per side and seed."""
    shape, specs = SHAPES[scale], study.runs(scale)
    rows: list[tuple[RunSpec, Path, Row]] = []
    with study_progress(study.name, len(specs)) as note:
        for i, spec in enumerate(specs):
            seed_dir = runs_dir / study.name / scale / spec.label.replace(" ", "_")
            dirs = {side: seed_dir / side for side in SIDES}
            if not all((d / SUMMARY_FILE).is_file() for d in dirs.values()):
                note(f"{spec.label}: both sides running", i)
                (seed_dir / "inputs").mkdir(parents=True, exist_ok=True)
                result = race(spec, scale, seed_dir / "inputs")
                for side, d in dirs.items():
                    _write_side(d, spec, side, result[side], shape)
            for side, d in dirs.items():
                row = read_row(d / SUMMARY_FILE)
                rows.append((RunSpec(row["label"], group=side), d, row))
            note(f"{spec.label} done", i + 1)
    return rows


def _write_side(
    d: Path, spec: RunSpec, side: str, res: dict[str, Any], shape: dict[str, int]
) -> None:
    d.mkdir(parents=True, exist_ok=True)
    losses = res["losses"]
    from tjx.metrics import dumps_json  # the trainer's log format: a NaN loss as null, named

    with (d / "metrics.jsonl").open("w") as f:
        for i, loss in enumerate(losses, 1):
            f.write(dumps_json({"step": i, "loss": loss}) + "\n")
        f.write(dumps_json({"step": len(losses), "val_loss": res["val_loss"]}) + "\n")
    timed = len(losses) - 1  # the first step (compile / warm-up) is not timed
    row = {
        "label": f"{side} {spec.label}", "group": side, "seed": spec.param("seed"),
        "val_loss": res["val_loss"], "train_loss": losses[-1],
        "tokens_per_s": timed * shape["batch"] * shape["seq"] / res["seconds"] if timed else None,
        "measured_at": utc_now(), "machine": machine(),
    }  # fmt: skip
    write_row(d / SUMMARY_FILE, row)


def noise_check(rows: list[Row]) -> tuple[float, float, bool]:
    """(tjx mean − nanoGPT mean, noise, passed): the noise is the seeds' standard deviation of
    the final validation loss, pooled over the two sides (0 with a single seed)."""
    by = {s: [float(r["val_loss"]) for r in rows if r["group"] == s] for s in SIDES}
    diff = statistics.fmean(by["tjx"]) - statistics.fmean(by["nanoGPT"])
    var = [statistics.variance(v) if len(v) > 1 else 0.0 for v in by.values()]
    noise = math.sqrt(sum(var) / 2)
    return diff, noise, diff <= 2 * noise


def side_conclude(rows: list[Row], scale: str) -> list[str]:
    diff, noise, ok = noise_check(rows)
    speed = {s: statistics.fmean(r["tokens_per_s"] for r in rows if r["group"] == s) for s in SIDES}
    verdict = "within" if ok else "WORSE THAN"
    when = sorted({str(r["measured_at"])[:10] for r in rows if r.get("measured_at")})
    return [f"tjx's mean final validation loss minus nanoGPT's: {diff:+.4f} nats; noise (seed "
            f"standard deviation, pooled over both sides) {noise:.4f}: {verdict} 2× noise.",
            f"Mean tokens/s: tjx {speed['tjx']:.0f}, nanoGPT {speed['nanoGPT']:.0f} "
            f"(ratio {speed['tjx'] / speed['nanoGPT']:.2f}, measured {', '.join(when)}; both on "
            "this machine's CPU threads, alternating every chunk of steps).",
            "Known differences of recipe: tjx's weight-decay mask leaves the (tied) embedding "
            "undecayed, nanoGPT decays every matrix."]  # fmt: skip


SIDE_STUDY = Study(
    name="nanogpt",
    title="tjx and nanoGPT side by side",
    question="On the same GPT-2-style config, tokens and steps, does tjx reach nanoGPT's "
    "validation loss, and at what speed?",
    varied="the implementation (tjx's trainer step / a PyTorch GPT to nanoGPT's recipe) and the "
    "seed (initial weights and batch order, to estimate the noise)",
    fixed="the GPT-2-style shape, byte-level Shakespeare batches (identical on both sides), "
    f"steps, AdamW lr {LR} constant, betas (0.9, 0.95), wd 0.1, clip 1.0, fp32, no dropout",
    runs=side_runs,
    columns=(
        Column("side", "group", ""),
        Column("val loss", "val_loss"),
        Column("final train loss", "train_loss"),
        Column("tokens/s", "tokens_per_s", ".0f"),
    ),
    headline="val_loss",
    conclude=side_conclude,
    kind="nanogpt",
    curves=("loss",),
)
