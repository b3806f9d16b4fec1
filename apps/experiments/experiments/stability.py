"""Studies 2 and 5, the two about blowing up: depth stability and learning-rate schedules.

Both tell a run that *diverged* (a non-finite loss or gradient; the trainer stops it after
``train.max_bad_steps`` such steps and exits 3) from one that *blew up*: a logged train loss,
finite, more than 1 nat above ln V — clearly worse than a uniform guess over the vocabulary,
where an untrained model starts (`experiments.results.first_blow_up`). Both compare final
validation losses with the unigram model's on the same held-out windows
(`experiments.measure.unigram`): a model at that loss has learned token frequencies and
nothing about context.
"""

from __future__ import annotations

import math

from experiments import measure
from experiments.results import BLOW_UP_MARGIN
from experiments.spec import Column, Row, RunContext, RunSpec, Study, base, smoke_pick
from experiments.stats import difference, ranking, value_text

VAL = Column("val loss (nats)", "val_loss")
BPB = Column("val bits/byte", "val_bits_per_byte", ".3f")
STATUS = Column("status", "status", "")
BLEW_UP = Column("blew up at step", "blew_up_at", "")
PEAK = Column("peak train loss", "peak_loss", ".3g")
UNIGRAM = "the unigram model"


def _fmt(x: object, spec: str = ".4f") -> str:
    return format(x, spec) if isinstance(x, float) else "—"


def unigram_of(rows: list[Row]) -> float | None:
    """The unigram loss on the held-out windows (the same for every config of a study)."""
    return next((float(r["unigram_loss"]) for r in rows if r.get("unigram_loss")), None)


def _after(ctx: RunContext) -> Row:
    return measure.unigram(ctx)


def _seeds(row: Row, key: str) -> str:
    """`` in 2/3 seeds`` for an aggregated row (``""`` for a single run)."""
    n = row.get("seeds")
    return f" in {row.get(key + '_seeds', 0)}/{n} seeds" if isinstance(n, int) and n > 1 else ""


def below(row: Row, unigram: float) -> bool:
    """Whether the row's final validation loss is below ``unigram`` by more than its seeds'
    spread (a measurable difference)."""
    d = difference(row, {"val_loss": unigram}, "val_loss")
    return d.measurable and d.diff < 0


def fate(row: Row, unigram: float | None) -> str:
    """What happened to one config, in words: diverged / blew up (in how many of its seeds, the
    earliest step) / final loss (mean ± std of the seeds) vs the unigram's."""
    parts = []
    if row.get("diverged_at") is not None:
        parts.append(
            f"diverged{_seeds(row, 'diverged_at')}: a non-finite loss or gradient from step "
            f"{row['diverged_at']} (the trainer stopped it)"
        )
    if row.get("blew_up_at") is not None:
        parts.append(
            f"blew up{_seeds(row, 'blew_up_at')} at step {row['blew_up_at']} (train loss up to "
            f"{row['peak_loss']:.3g}, more than {BLOW_UP_MARGIN:g} nat above ln V = "
            f"{row['uniform_loss']:.3f}, the loss of a uniform guess)"
        )
    val = row.get("val_loss")
    if isinstance(val, float) and math.isfinite(val):
        text = f"final validation loss {value_text(row, 'val_loss')}"
        if unigram is not None:
            side = "below" if below(row, unigram) else "not measurably below"
            text += f", {side} {UNIGRAM}'s {unigram:.4f} ({val - unigram:+.4f})"
        parts.append(text)
    elif row.get("diverged_at") is None:
        parts.append("no finite final validation loss")
    return "; ".join(parts)


# --- 2. depth stability ------------------------------------------------------------------------

#: SGD with momentum (tjx.optim's 0.9) at a rate this high takes steps in proportion to the
#: gradient, which is what clipping and warmup bound. (AdamW's step does not grow with the
#: gradient: at the CPU scale no AdamW rate made the raw config diverge while the fixes learned.)
DEPTH_OPTIMIZER = (
    "optimizer.name=sgd",
    "optimizer.schedule.peak_lr=1.0",
    "optimizer.b1=null",
    "optimizer.b2=null",
    "optimizer.eps=null",
    "optimizer.weight_decay=null",
)
DEPTH_SHAPE = {
    "smoke": ("model.num_layers=4",),
    "cpu": ("model.num_layers=48", "model.d_model=32", "model.num_heads=2", "model.mlp.dim=128",
            "model.max_seq_len=32", "data.seq_len=32", "data.batch_size=8", "train.steps=600",
            "train.log_every=1", "train.eval_every=100", "train.checkpoint_every=300"),
    "gpu": ("model.num_layers=48", "model.d_model=128", "model.num_heads=4", "model.mlp.dim=512",
            "train.log_every=1"),
}  # fmt: skip
RAW = "post-LN, no clip, no warmup"
FIXED = "pre-LN + clip + warmup"


def depth_runs(scale: str) -> list[RunSpec]:
    """The raw config, then the fixes added one at a time (pre-LN, clipping, warmup, init)."""
    common = base(scale, *DEPTH_SHAPE[scale], *DEPTH_OPTIMIZER, "model.scan_layers=true",
                  "train.max_bad_steps=5")  # fmt: skip
    raw = (
        "model.norm.position=post",
        "optimizer.clip_norm=null",
        "optimizer.schedule.warmup_steps=0",
    )
    pre_clip = ("model.norm.position=pre", "optimizer.clip_norm=1.0")
    runs = [
        RunSpec(RAW, (*common, *raw)),
        RunSpec("pre-LN", (*common, *raw, "model.norm.position=pre")),
        RunSpec("pre-LN + clip 1.0", (*common, *raw, *pre_clip)),
        RunSpec(FIXED, (*common, *pre_clip)),
        RunSpec("+ init 0.006", (*common, *pre_clip, "model.init.std=6e-3")),
    ]  # fmt: skip
    return smoke_pick(scale, runs, RAW, FIXED)


def depth_conclude(rows: list[Row], scale: str) -> list[str]:
    """One line per config (diverged / blew up / final loss, largest gradient norm), then which
    configs neither diverged nor blew up and which beat the unigram."""
    unigram = unigram_of(rows)
    out = [
        f"{r['label']}: {fate(r, unigram)}; largest gradient norm "
        f"{_fmt(r.get('max_grad_norm'), '.3g')}."
        for r in rows
    ]
    calm = [r for r in rows if r.get("diverged_at") is None and r.get("blew_up_at") is None]
    out.append(
        "Neither diverged nor blew up: " + (", ".join(r["label"] for r in calm) or "none") + "."
    )
    beat = []
    if unigram is not None:
        beat = [r for r in rows if below(r, unigram)]
        out.append(
            f"Measurably below {UNIGRAM}'s {unigram:.4f} at the end: "
            + (", ".join(f"{r['label']} ({value_text(r, 'val_loss')})" for r in beat) or "none")
            + "."
        )
    if calm and rows[0] not in calm:
        line = f"With the fixes added in the table's order, {calm[0]['label']} is the first "
        line += "config that neither diverged nor blew up"
        line += f", and {beat[0]['label']} the first below {UNIGRAM}." if beat else "."
        out.append(line)
    out.append(
        "curves.png draws every config's train loss and gradient norm at every step (log "
        "scales) and its validation loss; a diverged run's curves end where its values stop "
        "being finite."
    )
    return out


DEPTH_STUDY = Study(
    name="depth_stability",
    title="Depth stability: a deep narrow stack",
    question="Does a deep narrow stack trained at a high rate without clipping or warmup diverge, "
    "where, and which fix (pre-LN, clipping, warmup, smaller init) stops it?",
    varied="model.norm.position (post/pre), optimizer.clip_norm (none/1.0), warmup (0/the "
    "scale's), model.init.std (0.02/0.006), added one at a time",
    fixed="48 layers (4 in the smoke test), narrow width (32 at the CPU scale), scanned layers, "
    "SGD with momentum 0.9 at lr 1.0 with cosine decay, no weight decay, data, steps; 3 seeds; the "
    "trainer stops a run after 5 bad steps in a row",
    runs=depth_runs,
    columns=(STATUS, BLEW_UP, PEAK, VAL, Column("max grad norm", "max_grad_norm", ".3g")),
    headline="max_grad_norm",
    conclude=depth_conclude,
    curves=("loss", "grad_norm", "val_loss"),
    log_curves=("loss", "grad_norm", "max_grad_norm"),
    after_run=_after,
    notes=(
        "SGD, not AdamW (an earlier version of this study): AdamW's step does not grow with the "
        "gradient, so clipping hardly acts on it, and when this CPU scale was tuned (AdamW at "
        "rates 3e-3 to 3) no rate made the raw config diverge or blow up while the fixes still "
        "learned: up to 0.05 the raw config stalled at the unigram loss without blowing up, and "
        "from 0.05 up the fixes stalled there too.",
        "The GPU scale (width 128, the same optimizer and rate) has not been run yet.",
    ),
)

# --- 5. schedules ------------------------------------------------------------------------------

#: The tiny preset's AdamW rate (apps/trainer/configs/tiny.yaml), which the schedules share.
PRESET_LR = 5e-3
#: The warmup pairs' peak rates: the preset's, 6× and 60× it. Each rate runs with a constant
#: schedule with and without warmup, clipping at 1.0 in both: the pair differs in warmup alone.
PAIR_LRS = (PRESET_LR, 3e-2, 0.3)
SCHEDULES = ("cosine", "linear", "inverse_sqrt", "wsd", "constant")


def pair_label(lr: float, warm: bool) -> str:
    """``constant, warmup, lr 0.03`` / ``constant, no warmup, lr 0.03``."""
    return f"constant, {'warmup' if warm else 'no warmup'}, lr {lr:g}"


def schedule_runs(scale: str) -> list[RunSpec]:
    """The five schedules at the preset's rate, then the warmup pairs at `PAIR_LRS`."""
    s = "optimizer.schedule.name"
    common = base(scale, "train.log_every=1", "train.max_bad_steps=5")
    runs = [RunSpec(name, (*common, f"{s}={name}")) for name in SCHEDULES]
    for lr in PAIR_LRS:
        for warm in (True, False):
            if lr == PRESET_LR and warm:
                continue  # that is the "constant" schedule above
            sets = (*common, f"{s}=constant", f"optimizer.schedule.peak_lr={lr:g}")
            sets += () if warm else ("optimizer.schedule.warmup_steps=0",)
            runs.append(RunSpec(pair_label(lr, warm), sets, group=f"lr {lr:g}"))
    return smoke_pick(scale, runs, "cosine", pair_label(PRESET_LR, False))


def warm_row(rows: list[Row], lr: float, warm: bool) -> Row | None:
    """The constant-schedule row at ``lr`` with or without warmup."""
    label = "constant" if warm and lr == PRESET_LR else pair_label(lr, warm)
    return next((r for r in rows if r["label"] == label), None)


def schedule_conclude(rows: list[Row], scale: str) -> list[str]:
    """The schedules ranked (≈: no measurable difference), then each warmup pair's difference
    and the fates of runs that diverged or blew up."""
    unigram = unigram_of(rows)
    scheds = [r for r in rows if r["label"] in SCHEDULES]
    out = [
        f"The schedules at lr {PRESET_LR:g} with warmup, by final validation loss (≈: no "
        f"measurable difference): {ranking(scheds, 'val_loss')}."
    ]
    for lr in PAIR_LRS:
        warm, cold = warm_row(rows, lr, True), warm_row(rows, lr, False)
        if warm and cold:
            d = difference(cold, warm, "val_loss")
            out.append(
                f"Constant lr {lr:g}, no warmup minus warmup (clipping in both): "
                f"{d.words(unit='nats')}."
            )
    for r in rows:
        if r.get("diverged_at") is not None or r.get("blew_up_at") is not None:
            out.append(f"{r['label']}: {fate(r, unigram)}.")
    return out


SCHEDULE_STUDY = Study(
    name="schedules",
    title="Learning-rate schedules",
    question="How do cosine, linear, inverse-sqrt, WSD (warmup-stable-decay, the hold phase) and "
    "constant compare, and does dropping warmup, at the same peak rate, hurt or diverge?",
    varied="optimizer.schedule.name at the preset's rate; then a constant schedule with and "
    "without warmup at the same peak rate, for rates " + ", ".join(f"{lr:g}" for lr in PAIR_LRS),
    fixed=f"AdamW (the schedules at the tiny preset's lr {PRESET_LR:g}), the scale's warmup steps "
    "where there is warmup, clipping at 1.0 everywhere, model, data, steps; 3 seeds per config; "
    "every step logged",
    runs=schedule_runs,
    columns=(VAL, BPB, STATUS, BLEW_UP, PEAK),
    headline="val_loss",
    conclude=schedule_conclude,
    curves=("loss", "learning_rate", "val_loss"),
    log_curves=("loss", "learning_rate"),
    after_run=_after,
)
