"""Studies 1, 3 and 4: positions, precision, optimizers (2 and 5 are in `experiments.stability`)."""

from __future__ import annotations

import math

from experiments import measure
from experiments.spec import (
    Column,
    Row,
    RunContext,
    RunSpec,
    Study,
    base,
    best,
    shape_value,
    smoke_pick,
)

POSITIONS = ("learned", "sinusoidal", "rope", "alibi", "t5", "none")
VAL = Column("val loss (nats)", "val_loss")
BPB = Column("val bits/byte", "val_bits_per_byte", ".3f")
STATUS = Column("status", "status", "")


def _fmt(x: object, spec: str = ".4f") -> str:
    return format(x, spec) if isinstance(x, float) else "—"


# --- 1. positions ------------------------------------------------------------------------------


def positions_runs(scale: str) -> list[RunSpec]:
    seq = shape_value(scale, "data.seq_len")
    runs = []
    for pos in POSITIONS:
        # A learned table has max_seq_len rows and cannot go beyond them; every other scheme
        # accepts 4× the training length (the model is only told it may see that many).
        longest = seq if pos == "learned" else 4 * seq
        runs.append(
            RunSpec(pos, base(scale, f"model.position={pos}", f"model.max_seq_len={longest}"))
        )
    return smoke_pick(scale, runs, "learned", "rope")


def positions_conclude(rows: list[Row], scale: str) -> list[str]:
    out = []
    top = best(rows, "val_loss_1x")
    if top:
        out.append(
            f"At the training length the lowest held-out loss is {top['label']}'s "
            f"({top['val_loss_1x']:.4f} nats)."
        )
    for factor in (2, 4):
        key = f"val_loss_{factor}x"
        got = [r for r in rows if isinstance(r.get(key), float)]
        if not got:
            continue
        b = best(got, key)
        assert b is not None
        worst = max(got, key=lambda r: float(r[key]) if math.isfinite(r[key]) else math.inf)
        tail = f" and {worst['label']} worst ({_fmt(worst[key])})" if worst is not b else ""
        out.append(f"At {factor}× the training length {b['label']} is best ({b[key]:.4f}){tail}.")
    out.append(
        "The learned table has no rows beyond the training length, so it has no 2×/4× "
        "entries (—)."
    )
    return out


POSITIONS_STUDY = Study(
    name="positions",
    title="Position schemes and length extrapolation",
    question="Which position scheme trains best, and which still works at 2× and 4× the length "
    "it was trained at?",
    varied="model.position: learned, sinusoidal, RoPE, ALiBi, T5 relative bias, none (NoPE)",
    fixed="GPT-2-style model, data, optimizer (AdamW, cosine), steps, seed; models other than "
    "learned are built with max_seq_len = 4× the training length",
    runs=positions_runs,
    columns=(
        Column("val loss @1×", "val_loss_1x"),
        Column("@2×", "val_loss_2x"),
        Column("@4×", "val_loss_4x"),
        BPB,
        Column("tokens/s", "tokens_per_s", ".0f"),
    ),
    headline="val_loss_1x",
    conclude=positions_conclude,
    after_run=measure.extrapolation,
)

# --- 3. precision ------------------------------------------------------------------------------


def precision_runs(scale: str) -> list[RunSpec]:
    runs = [
        RunSpec("fp32", base(scale, "model.compute_dtype=float32")),
        RunSpec("bf16 compute", base(scale, "model.compute_dtype=bfloat16")),
        RunSpec("fp16 + dynamic loss scale",
                base(scale, "model.compute_dtype=float16", "optimizer.loss_scale=dynamic")),
    ]  # fmt: skip
    return smoke_pick(scale, runs, "fp32", "bf16 compute")


def precision_after(ctx: RunContext) -> Row:
    return measure.peak_memory(ctx)


def precision_rows(rows: list[Row]) -> None:
    """Add the loss difference to fp32 (percent) and steps/s to each row, in place."""
    ref = next((r for r in rows if r["label"] == "fp32"), None)
    for r in rows:
        if ref and isinstance(r.get("val_loss"), float) and isinstance(ref.get("val_loss"), float):
            r["delta_pct"] = 100.0 * (r["val_loss"] - ref["val_loss"]) / ref["val_loss"]
        if isinstance(r.get("tokens_per_s"), float) and r.get("tokens_per_step"):
            r["steps_per_s"] = r["tokens_per_s"] / r["tokens_per_step"]


def precision_conclude(rows: list[Row], scale: str) -> list[str]:
    precision_rows(rows)
    out = []
    for r in rows:
        if r["label"] != "fp32" and isinstance(r.get("delta_pct"), float):
            claim = " (the seed claims < 0.1 % for bf16)" if r["label"].startswith("bf16") else ""
            out.append(
                f"{r['label']}: final validation loss {r['delta_pct']:+.3f} % vs fp32{claim}."
            )
    out.append("On a CPU, bf16/fp16 arithmetic is emulated; their steps/s say nothing about a GPU.")
    return out


PRECISION_STUDY = Study(
    name="precision",
    title="Precision: fp32, bf16 compute, fp16 with dynamic loss scaling",
    question="How much do bf16 and fp16 (dynamic loss scaling) change the final loss, the speed "
    "and the compiled memory of the step?",
    varied="model.compute_dtype (float32 / bfloat16 / float16 + optimizer.loss_scale=dynamic)",
    fixed="fp32 parameters and optimizer state, model, data, optimizer, steps, seed",
    runs=precision_runs,
    columns=(VAL, Column("Δ vs fp32 (%)", "delta_pct", "+.3f"),
             Column("steps/s", "steps_per_s", ".2f"),
             Column("peak MiB", "peak_mib", ".1f"), STATUS),  # fmt: skip
    headline="val_loss",
    conclude=precision_conclude,
    after_run=precision_after,
)

# --- 4. optimizers -----------------------------------------------------------------------------

#: Each optimizer's sweep: its default learning rate (tjx.optim) × these factors.
SWEEP = {"smoke": (1.0,), "cpu": (0.3, 1.0, 3.0), "gpu": (0.25, 0.5, 1.0, 2.0, 4.0)}
OPTIMIZERS = {"adamw": 3e-3, "adam": 3e-3, "sgd": 0.1, "lamb": 3e-3, "lion": 3e-4,
              "adafactor": 1e-2, "muon": 2e-2}  # fmt: skip


def optimizer_runs(scale: str) -> list[RunSpec]:
    runs = []
    for name, lr0 in OPTIMIZERS.items():
        if scale == "smoke" and name not in ("adamw", "lion"):
            continue
        for f in SWEEP[scale]:
            lr = lr0 * f
            # Weight decay as each optimizer's default (null); the token budget is the scale's.
            sets = base(scale, f"optimizer.name={name}", f"optimizer.lr={lr:g}",
                        "optimizer.b1=null", "optimizer.b2=null", "optimizer.eps=null",
                        "optimizer.weight_decay=null")  # fmt: skip
            runs.append(RunSpec(f"{name} lr={lr:g}", sets, group=name, params=(("lr", lr),)))
    return runs


def optimizer_conclude(rows: list[Row], scale: str) -> list[str]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    winners = [b for g in groups.values() if (b := best(g, "val_loss"))]
    winners.sort(key=lambda r: r["val_loss"])
    out = [
        "Best learning rate per optimizer, ranked: "
        + "; ".join(
            f"{r['group']} {r['label'].split('=')[1]} → {r['val_loss']:.4f}" for r in winners
        )
        + "."
    ]
    out.append(
        "Rows are every (optimizer, learning rate) of the sweep; a sweep whose best rate is "
        "at its edge may do better beyond it."
    )
    return out


OPTIMIZER_STUDY = Study(
    name="optimizers",
    title="Optimizers at their best learning rate, same token budget",
    question="With each optimizer at the best learning rate of a small sweep and the same "
    "token budget, which reaches the lowest validation loss?",
    varied="optimizer.name (AdamW, Adam, SGD+momentum, LAMB, Lion, Adafactor, Muon) × "
    "optimizer.lr (a sweep around a per-optimizer centre)",
    fixed="model, data, steps × batch (the token budget), cosine schedule with warmup, clipping "
    "at 1.0, seed; betas/eps/weight decay are each optimizer's tjx.optim default",
    runs=optimizer_runs,
    columns=(Column("optimizer", "group", ""), VAL, BPB, STATUS),
    headline="val_loss",
    conclude=optimizer_conclude,
)
