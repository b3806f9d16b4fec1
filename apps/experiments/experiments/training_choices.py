"""Studies 1, 3 and 4, each a choice in how a model is trained, compared by held-out loss: the
position scheme, the precision, the optimizer (2 and 5 are in `experiments.stability`)."""

from __future__ import annotations

import math

from experiments import measure
from experiments.measure import LENGTH_FACTORS
from experiments.spec import (
    Column,
    Row,
    RunContext,
    RunSpec,
    Study,
    Sweep,
    base,
    best,
    shape_value,
    smoke_pick,
)
from experiments.stats import NO_DIFFERENCE, difference, ranking, tied_with_best

#: No positions first (the baseline), then the two absolute schemes, then the relative ones.
POSITIONS = ("none", "sinusoidal", "learned", "rope", "alibi", "t5")
VAL = Column("val loss (nats)", "val_loss")
BPB = Column("val bits/byte", "val_bits_per_byte", ".3f")
STATUS = Column("status", "status", "")


# --- 1. positions ------------------------------------------------------------------------------


def positions_runs(scale: str) -> list[RunSpec]:
    seq = shape_value(scale, "data.seq_len")
    runs = []
    for pos in POSITIONS:
        # A learned table has max_seq_len rows and cannot go beyond them; every other scheme
        # accepts 4× the training length (the model is only told it may see that many).
        longest = seq if pos == "learned" else 4 * seq
        runs.append(
            RunSpec(pos, base(scale, f"model.position.kind={pos}", f"model.max_seq_len={longest}"))
        )
    return smoke_pick(scale, runs, "learned", "rope")


def positions_conclude(rows: list[Row], scale: str) -> list[str]:
    """At each length the schemes ranked by held-out loss (``≈``: no measurable difference)."""
    out = []
    for factor in LENGTH_FACTORS:
        key = f"val_loss_{factor}x"
        if any(isinstance(r.get(key), float) for r in rows):
            out.append(f"At {factor}× the training length: {ranking(rows, key)}.")
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
    varied="model.position.kind: learned, sinusoidal, RoPE, ALiBi, T5 relative bias, none (NoPE)",
    fixed="GPT-2-style model, data, optimizer (AdamW, cosine), steps; 3 seeds per scheme; models "
    "other than learned are built with max_seq_len = 4× the training length",
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
        RunSpec("fp32", base(scale, "model.precision.compute_dtype=float32")),
        RunSpec("bf16 compute", base(scale, "model.precision.compute_dtype=bfloat16")),
        RunSpec("fp16 + dynamic loss scale",
                base(scale, "model.precision.compute_dtype=float16",
                     "optimizer.loss_scale=dynamic")),
        *(RunSpec(f"bf16 + fp8 {scaling}",
                  base(scale, "model.precision.compute_dtype=bfloat16",
                       "model.precision.matmul=fp8", f"model.precision.fp8_scaling={scaling}"))
          for scaling in ("tensorwise", "rowwise")),
        # Delayed scaling (tensorwise only): scales from the last 16 steps' amaxes.
        RunSpec("bf16 + fp8 tensorwise delayed",
                base(scale, "model.precision.compute_dtype=bfloat16",
                     "model.precision.matmul=fp8", "model.precision.fp8_recipe=delayed")),
    ]  # fmt: skip
    return smoke_pick(scale, runs, "fp32", "bf16 compute")


def precision_after(ctx: RunContext) -> Row:
    return measure.peak_memory(ctx)


def precision_rows(rows: list[Row]) -> None:
    """Add the loss difference to fp32 in percent (``delta_pct``, with the combined noise of the
    two configs as ``delta_pct_std``) and steps/s to each row, in place."""
    ref = next((r for r in rows if r["label"] == "fp32"), None)
    for r in rows:
        d = difference(r, ref, "val_loss") if ref else None
        if ref and d and math.isfinite(d.diff):
            r["delta_pct"] = 100.0 * d.diff / float(ref["val_loss"])
            r["delta_pct_std"] = 100.0 * d.noise / float(ref["val_loss"])
        if isinstance(r.get("tokens_per_s"), float) and r.get("tokens_per_step"):
            r["steps_per_s"] = r["tokens_per_s"] / r["tokens_per_step"]


def precision_conclude(rows: list[Row], scale: str) -> list[str]:
    precision_rows(rows)
    ref = next((r for r in rows if r["label"] == "fp32"), None)
    out = []
    for r in rows:
        if ref and r is not ref and isinstance(r.get("delta_pct"), float):
            d = difference(r, ref, "val_loss")
            verdict = "" if d.measurable else f", {NO_DIFFERENCE}"
            out.append(
                f"{r['label']}: final validation loss {r['delta_pct']:+.3f} ± "
                f"{r['delta_pct_std']:.3f} % vs fp32 ({d.diff:+.4f} ± {d.noise:.4f} nats{verdict})."
            )
    out.extend(fp8_verdicts(rows))
    out.append(F32_PARTS)
    out.append("On a CPU, bf16/fp16 arithmetic is emulated; their steps/s say nothing about a GPU.")
    return out


#: The band an fp8 run's final validation loss must keep around bf16's (relative): torchao and
#: torchtitan report fp8 loss curves within ~1 % of bf16 at scale; a 2-layer, 300-step CPU run
#: has fewer terms to average each product's rounding over, so twice that.
FP8_BAND = 0.02


def fp8_verdicts(rows: list[Row]) -> list[str]:
    """One line per fp8 row: its final validation loss against the bf16 run's, inside the
    `FP8_BAND` (or within the seeds' noise) or not."""
    bf16 = next((r for r in rows if r["label"] == "bf16 compute"), None)
    out = []
    for r in rows:
        if not r["label"].startswith("bf16 + fp8") or bf16 is None:
            continue
        d = difference(r, bf16, "val_loss")
        if not math.isfinite(d.diff):
            continue
        rel = d.diff / float(bf16["val_loss"])
        inside = abs(rel) <= FP8_BAND or abs(d.diff) <= 2 * d.noise
        out.append(
            f"{r['label']}: final validation loss {100 * rel:+.2f} % vs bf16 "
            f"({d.diff:+.4f} ± {d.noise:.4f} nats): "
            + ("within" if inside else "OUTSIDE")
            + f" the {100 * FP8_BAND:.0f} % band (float8 products of the linear layers only)."
        )
    return out


#: What tjx-nn computes in float32 whatever the compute dtype (tjx/nn/precision.py, norms.py,
#: losses.py, the attention kernels): the bf16 run is already "bf16 with norms, softmax and loss
#: in float32", so its cost comes from what is left in bf16.
F32_PARTS = (
    "tjx-nn already keeps in float32, whatever model.precision.compute_dtype says: the parameters "
    "and optimizer state, the layer-norm statistics, the attention softmax, the output logits and "
    "the loss; the bf16 run differs from fp32 only in the matmul inputs and the activations "
    "(residual stream included) carried between them, so any cost of bf16 here comes from those."
)


PRECISION_STUDY = Study(
    name="precision",
    title="Precision: fp32, bf16 compute, fp16 with dynamic loss scaling, fp8 linear products",
    question="How much do bf16, fp16 (dynamic loss scaling) and fp8 linear products change the "
    "final loss, the speed and the compiled memory of the step?",
    varied="model.precision.compute_dtype (float32 / bfloat16 / float16 + "
    "optimizer.loss_scale=dynamic), model.precision.matmul=fp8 (tensorwise / rowwise current "
    "scaling, tensorwise delayed scaling over 16 steps)",
    fixed="fp32 parameters and optimizer state (norm statistics, softmax, logits and loss are "
    "float32 in every config), model, data, optimizer, steps; 3 seeds per config",
    runs=precision_runs,
    columns=(VAL, Column("Δ vs fp32 (%)", "delta_pct", "+.3f"),
             Column("steps/s", "steps_per_s", ".2f"),
             Column("peak MiB", "peak_mib", ".1f"), STATUS),  # fmt: skip
    headline="val_loss",
    conclude=precision_conclude,
    after_run=precision_after,
)

# --- 4. optimizers -----------------------------------------------------------------------------

#: Each optimizer's first sweep: its centre rate × these factors (a factor of 3 apart, the step
#: by which `LR_SWEEP` extends a sweep whose best rate is at an edge).
SWEEP = {"smoke": (1.0, 3.0), "cpu": (1 / 3, 1.0, 3.0), "gpu": (0.25, 0.5, 1.0, 2.0, 4.0)}
OPTIMIZERS = {"adamw": 3e-3, "adam": 3e-3, "sgd": 0.1, "lamb": 3e-3, "lion": 3e-4,
              "adafactor": 1e-2, "muon": 2e-2}  # fmt: skip


def optimizer_spec(scale: str, name: str, lr: float) -> RunSpec:
    """One optimizer at one rate; weight decay and betas are its tjx.optim defaults (null)."""
    sets = base(scale, f"optimizer.name={name}", f"optimizer.schedule.peak_lr={lr:.3g}",
                "optimizer.b1=null", "optimizer.b2=null", "optimizer.eps=null",
                "optimizer.weight_decay=null")  # fmt: skip
    return RunSpec(f"{name} lr={lr:.3g}", sets, group=name, params=(("lr", lr), ("scale", scale)))


def optimizer_runs(scale: str) -> list[RunSpec]:
    names = ("adamw",) if scale == "smoke" else tuple(OPTIMIZERS)
    return [optimizer_spec(scale, n, OPTIMIZERS[n] * f) for n in names for f in SWEEP[scale]]


#: Every optimizer's rate sweep is extended by ×3 / ÷3 until its best rate lies inside.
LR_SWEEP = Sweep(
    param="lr",
    factor=3.0,
    make=lambda spec, lr: optimizer_spec(spec.param("scale"), spec.group, lr),
)


def optimizer_conclude(rows: list[Row], scale: str) -> list[str]:
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(r["group"], []).append(r)
    winners = [b for g in groups.values() if (b := best(g, "val_loss"))]
    tied = tied_with_best(winners, "val_loss")
    return [
        "Each optimizer at its best rate, ranked by final validation loss (≈: no measurable "
        f"difference): {ranking(winners, 'val_loss')}.",
        "Not measurably worse than the best: " + ", ".join(r["label"] for r in tied) + ".",
    ]


OPTIMIZER_STUDY = Study(
    name="optimizers",
    title="Optimizers at their best learning rate, same token budget",
    question="With each optimizer at the best learning rate of a small sweep and the same "
    "token budget, which reaches the lowest validation loss?",
    varied="optimizer.name (AdamW, Adam, SGD+momentum, LAMB, Lion, Adafactor, Muon) × "
    "optimizer.schedule.peak_lr (a sweep around a per-optimizer centre)",
    fixed="model, data, steps × batch (the token budget), cosine schedule with warmup, clipping "
    "at 1.0; 3 seeds per point; betas/eps/weight decay are each optimizer's tjx.optim default",
    runs=optimizer_runs,
    columns=(Column("optimizer", "group", ""), VAL, BPB, STATUS),
    headline="val_loss",
    conclude=optimizer_conclude,
    sweep=LR_SWEEP,
)
