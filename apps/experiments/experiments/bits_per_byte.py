"""Study 7: decoder experiments in bits per byte — what weight decay, dropout and a WSD hold
phase do to held-out bits per byte, and how far attention reaches over training."""

from __future__ import annotations

import math

from experiments import measure
from experiments.spec import Column, Row, RunContext, RunSpec, Study, base, shape_value
from experiments.stats import difference

# --- 7. bits per byte --------------------------------------------------------------------------


def bpb_runs(scale: str) -> list[RunSpec]:
    half = f"train.checkpoint_every={shape_value(scale, 'train.steps') // 2}"
    common = base(scale, half, "optimizer.weight_decay=0.1", "model.dropout=0.0")
    runs = [
        RunSpec("baseline (wd 0.1, no dropout, cosine)", common),
        RunSpec("no weight decay", (*common, "optimizer.weight_decay=0.0")),
        RunSpec("dropout 0.1", (*common, "model.dropout=0.1")),
        RunSpec("hold phase (WSD)", (*common, "optimizer.schedule.name=wsd")),
    ]
    return runs if scale != "smoke" else runs[:2]


def bpb_conclude(rows: list[Row], scale: str) -> list[str]:
    out = []
    ref = rows[0] if rows else None
    for r in rows[1:]:
        if ref:
            d = difference(r, ref, "val_bits_per_byte")
            if math.isfinite(d.diff):
                out.append(f"{r['label']}: {d.words(unit='bits/byte')} against the baseline.")
    for r in rows:
        if isinstance(r.get("attn_start"), float):
            out.append(
                f"{r['label']}: mean attended distance {r['attn_start']:.1f} → "
                f"{r['attn_middle']:.1f} → {r['attn_end']:.1f} tokens (start → middle → end, "
                "mean of the seeds)."
            )
    return out


BPB_STUDY = Study(
    name="bits_per_byte",
    title="Decoder experiments in bits per byte",
    question="What do weight decay, dropout and a WSD hold phase do to held-out bits per byte, "
    "and how does the attention reach change over training?",
    varied="optimizer.weight_decay (0.1/0), model.dropout (0/0.1), schedule cosine vs WSD",
    fixed="byte-level GPT-2-style model, Shakespeare, AdamW, steps; 3 seeds per config",
    runs=bpb_runs,
    columns=(Column("val bits/byte", "val_bits_per_byte"), Column("train bits/byte", "train_bpb"),
             Column("attn dist start", "attn_start", ".1f"), Column("middle", "attn_middle", ".1f"),
             Column("end", "attn_end", ".1f")),  # fmt: skip
    headline="val_bits_per_byte",
    conclude=bpb_conclude,
    curves=("bits_per_byte", "val_bits_per_byte"),
    after_run=lambda ctx: {**measure.attention_stages(ctx), **_train_bpb(ctx)},
)


def _train_bpb(ctx: RunContext) -> Row:
    from experiments.results import read_metrics, series

    _, values = series(read_metrics(ctx.run_dir), "bits_per_byte")
    return {"train_bpb": values[-1] if values else None}
