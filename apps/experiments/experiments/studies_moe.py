"""Study 10: a mixture of experts against the dense model at equal active parameters (issue #41).

The claim everyone repeats: at the same active parameters — the same FLOPs per token — a
sparse mixture of experts reaches a lower held-out loss than the dense model in the same steps,
because each token uses only ``k`` of ``E`` experts while the layer holds ``E`` of them.

The configs share everything but the feed-forward layers of the LLaMA-style decoder (SwiGLU, so
an MLP of width ``m`` has ``3·d·m`` weights):

- **dense**: one MLP of width ``m`` (the scale's ``model.mlp.dim``);
- **MoE**: ``E`` experts of width ``m/k``, ``k`` of them per token, so a token's expert weights
  are ``k · 3·d·(m/k) = 3·d·m``, the dense MLP's, and the layer holds ``E/k`` times as many.
  The router (``d·E`` weights, a softmax over the experts, top-k, renormalised: Mixtral's) is
  the only extra per-token work; the row's ``active_params`` and ``flops_per_token`` (tjx-nn's
  counts, active weights only) show how small it is;
- **dense, as large as the MoE** (GPU scale): one MLP of width ``m·E/k``: the MoE's total
  parameters, dense, at ``E/k`` times the MLP FLOPs — the other end of the gap the MoE should
  close part of.
"""

from __future__ import annotations

from experiments.spec import Column, Row, RunContext, RunSpec, Study, base, shape_value, smoke_pick
from experiments.stats import difference, ranking, value_text
from trainer import RunDir  # no jax or orbax on import

#: Experts and experts per token at each scale (Mixtral's 8 and 2 above the smoke scale).
EXPERTS = {"smoke": (4, 2), "cpu": (8, 2), "gpu": (8, 2)}
DENSE, MOE, WIDE = "dense", "MoE, top-2 of 8 experts", "dense, as large as the MoE"
SMOKE_MOE = "MoE, top-2 of 4 experts"
#: The MoE config's group at every scale (its label names its experts).
MOE_GROUP = "moe"
#: The LLaMA-style decoder the speed run uses, byte-level, float32 on a CPU (bf16 on a GPU).
LR = {"smoke": 3e-3, "cpu": 3e-3, "gpu": 1e-3}
#: Steps beyond the scale's shape: at the CPU scale four times the other studies' 300, since
#: each expert sees only k/E of the tokens (at 600 steps the MoE's lead was within the noise).
STEPS = {
    "smoke": (),
    "cpu": ("train.steps=1200", "train.eval_every=100", "train.checkpoint_every=600"),
    "gpu": (),
}
#: The scales that also train the dense model of the MoE's total size (E/k times the MLP FLOPs:
#: on the 2-core machine it alone would take longer than the other two together).
WIDE_SCALES = ("gpu",)
#: Held-out batches the router's load is measured on after training.
LOAD_BATCHES = 4


def moe_label(scale: str) -> str:
    """The MoE config's label at ``scale`` (``MoE, top-2 of 8 experts``)."""
    return SMOKE_MOE if scale == "smoke" else MOE


def _common(scale: str) -> tuple[str, ...]:
    dtype = "bfloat16" if scale == "gpu" else "float32"
    return base(scale, "data.tokenizer=byte", "model.vocab_size=null", "model.num_kv_heads=null",
                f"model.precision.compute_dtype={dtype}", f"optimizer.schedule.peak_lr={LR[scale]}",
                "optimizer.clip_norm=1.0", *STEPS[scale])  # fmt: skip


def moe_runs(scale: str) -> list[RunSpec]:
    """Dense, the MoE of equal active parameters, and the dense model of the MoE's total size."""
    width = shape_value(scale, "model.mlp.dim")
    experts, k = EXPERTS[scale]
    if width % k:
        raise ValueError(f"the {scale} scale's mlp.dim {width} is not divisible by top-{k}")
    common = _common(scale)
    moe = (f"model.moe.num_experts={experts}", f"model.moe.experts_per_token={k}",
           f"model.moe.expert_mlp_dim={width // k}")  # fmt: skip
    runs = [
        RunSpec(DENSE, common, preset="llama_small", params=(("moe", False),)),
        RunSpec(
            moe_label(scale),
            (*common, *moe),
            preset="llama_small",
            group=MOE_GROUP,
            params=(("moe", True),),
        ),
    ]
    if scale in WIDE_SCALES:
        runs.append(RunSpec(WIDE, (*common, f"model.mlp.dim={width * experts // k}"),
                            preset="llama_small", params=(("moe", False),)))  # fmt: skip
    return smoke_pick(scale, runs, DENSE, SMOKE_MOE)


def moe_after(ctx: RunContext) -> Row:
    """The run's active matmul parameters and training FLOPs per token (tjx-nn's counts from the
    config the trainer wrote: only active weights count), and for an MoE run the router's load
    on held-out batches at the end: the busiest expert's share of the assignments over the fair
    share (1.0: perfectly balanced; worst MoE layer)."""
    from tjx import nn

    desc = RunDir(ctx.run_dir).read(RunDir.MODEL_FILE)
    config = nn.config_from_dict(desc)
    seq = int(ctx.config.data.seq_len)
    row: Row = {
        "active_params": float(nn.matmul_param_count(config)),
        "flops_per_token": float(nn.flops_per_token(config, seq)),
    }
    if ctx.spec.param("moe"):
        row.update(_router_load(ctx))
    return row


def _router_load(ctx: RunContext) -> Row:
    """The trained model's MoE statistics summed over `LOAD_BATCHES` held-out batches, as
    tjx-metrics' logged values (``moe_load_max``: the busiest expert over the fair share)."""
    import itertools

    import jax
    import numpy as np

    from eval import heldout_dir, load_run
    from tjx import data
    from tjx.metrics import moe_metrics

    run = load_run(ctx.run_dir)
    shard_dir, _ = heldout_dir(run, None)
    cfg = ctx.config
    batches = data.validation_batches(shard_dir, cfg.data.seq_len, cfg.eval.batch_size)
    sums = None
    for batch in itertools.islice(batches, LOAD_BATCHES):
        _, stats = run.model.forward(np.asarray(batch["inputs"]), deterministic=True)
        stats = jax.tree.map(np.asarray, stats)
        sums = stats if sums is None else jax.tree.map(np.add, sums, stats)
    if sums is None:
        return {}
    metrics = moe_metrics(sums)
    return {"load_max": metrics["moe_load_max"], "balance_loss": metrics["moe_balance_loss"]}


#: Counts of a config (the same in every seed): the table shows them without a ± 0.
COUNTS = ("active_params", "num_params", "flops_per_token")


def _prepare(rows: list[Row]) -> None:
    """In place: ``mflops_per_token`` for the table, and no spread on the counts."""
    for r in rows:
        for key in COUNTS:
            r.pop(f"{key}_std", None)
        if isinstance(r.get("flops_per_token"), float):
            r["mflops_per_token"] = r["flops_per_token"] / 1e6


def _rows(rows: list[Row], scale: str) -> tuple[Row | None, Row | None, Row | None]:
    by = {r["label"]: r for r in rows}
    return by.get(DENSE), by.get(moe_label(scale)), by.get(WIDE)


def moe_conclude(rows: list[Row], scale: str) -> list[str]:
    """The three configs ranked; the MoE's difference to dense with its noise; how much of the
    gap to the dense model of its total size it closes; the matched active parameters and FLOPs;
    speed and the router's balance."""
    _prepare(rows)
    dense, moe, wide = _rows(rows, scale)
    out = [f"Final validation loss (≈: no measurable difference): {ranking(rows, 'val_loss')}."]
    if dense and moe:
        d = difference(moe, dense, "val_loss")
        out.append(f"MoE − dense: {d.words(unit='nats')} at the same steps and tokens.")
        out.extend(_paired(dense, moe))
        out.append(_matched(dense, moe))
    if dense and moe and wide:
        gap = difference(dense, wide, "val_loss")
        if gap.measurable and gap.diff > 0:
            closed = difference(dense, moe, "val_loss").diff / gap.diff
            share = (
                f"closes {100 * closed:.0f} % of that gap at dense's FLOPs"
                if closed >= 0
                else "closes none of it (it is above dense)"
            )
            out.append(
                f"The dense model of the MoE's total size is {gap.diff:.4f} nats lower than dense "
                f"at {_ratio(wide, dense, 'flops_per_token')} its FLOPs per token; the MoE {share}."
            )
        else:
            out.append(
                f"The dense model of the MoE's total size ({value_text(wide, 'val_loss')}) is not "
                "measurably better than dense: at this size and length extra feed-forward "
                "parameters buy nothing, so there is no gap for experts to close."
            )
    if dense and moe and isinstance(moe.get("tokens_per_s"), float):
        out.append(
            f"Speed on this machine: MoE {value_text(moe, 'tokens_per_s', '.0f')} tokens/s, dense "
            f"{value_text(dense, 'tokens_per_s', '.0f')} ({_ratio(moe, dense, 'tokens_per_s')}) "
            "at equal FLOPs per token; routing, the sort by expert and the grouped matmuls cost "
            "time the FLOP count does not see, and a CPU's ratio says little about a GPU's "
            "(tools/bench_moe.py estimates the H100's)."
        )
    if moe and isinstance(moe.get("load_max"), float):
        out.append(
            "Router balance at the end: the busiest expert took "
            f"{value_text(moe, 'load_max', '.2f')} × its fair share of the held-out "
            "assignments (worst MoE layer; 1.00 = even; load-balancing loss at its default "
            "coefficient 0.01)."
        )
    return out


def _paired(dense: Row, moe: Row) -> list[str]:
    """MoE − dense seed by seed (a seed fixes the batch order, so the two saw the same batches);
    descriptive only: the verdict keeps the unpaired noise rule of every study."""
    by_seed = {r["seed"]: r.get("val_loss") for r in dense.get("per_seed", [])}
    diffs = [
        (r["seed"], float(r["val_loss"]) - float(by_seed[r["seed"]]))
        for r in moe.get("per_seed", [])
        if isinstance(r.get("val_loss"), float) and isinstance(by_seed.get(r["seed"]), float)
    ]
    if len(diffs) < 2:
        return []
    lower = sum(d < 0 for _, d in diffs)
    each = ", ".join(f"{d:+.4f} (seed {seed})" for seed, d in diffs)
    return [
        f"Seed by seed (the same seed: the same batches in the same order): MoE − dense = {each}; "
        f"the MoE is lower in {lower} of {len(diffs)} seeds. This pairing is descriptive: the "
        "verdict below uses the unpaired rule of every study."
    ]


def _ratio(a: Row, b: Row, key: str) -> str:
    return f"{float(a[key]) / float(b[key]):.2f}×"


def _matched(dense: Row, moe: Row) -> str:
    """The active parameters and FLOPs per token of the two, and their ratio."""
    return (
        f"Active matmul parameters {moe['active_params']:,.0f} (MoE) vs "
        f"{dense['active_params']:,.0f} (dense), {_ratio(moe, dense, 'active_params')}; "
        f"training FLOPs per token {_ratio(moe, dense, 'flops_per_token')} (the router's d·E "
        "weights are the difference); "
        f"total parameters {moe['num_params']:,.0f} vs {dense['num_params']:,.0f}."
    )


MOE_STUDY = Study(
    name="moe",
    title="Mixture of experts vs dense at equal active parameters",
    question="At equal active parameters and FLOPs per token, does a mixture of experts reach a "
    "lower held-out loss than the dense model in the same steps?",
    varied="the feed-forward layers: a dense SwiGLU MLP of width m; an MoE of E experts of width "
    "m/k with top-k routing (softmax, renormalised: Mixtral's; 8 and 2 above the smoke scale), "
    "the same active weights; at the GPU scale also a dense MLP of width m·E/k (the MoE's total "
    "parameters)",
    fixed="LLaMA-style decoder (RMSNorm, RoPE, SwiGLU) of the scale's size, byte-level "
    "Shakespeare, AdamW at one learning rate with warmup and cosine decay, clipping at 1.0, "
    "steps and batch (the same tokens); MoE: dropless, load-balancing loss 0.01, no z-loss, "
    "router in float32, every layer MoE; 3 seeds per config",
    runs=moe_runs,
    columns=(
        Column("val loss (nats)", "val_loss"),
        Column("active matmul params", "active_params", ",.0f"),
        Column("total params", "num_params", ",.0f"),
        Column("MFLOPs/token (train)", "mflops_per_token", ".3f"),
        Column("tokens/s", "tokens_per_s", ".0f"),
        Column("busiest expert (× fair)", "load_max", ".2f"),
        Column("status", "status", ""),
    ),
    headline="val_loss",
    conclude=moe_conclude,
    curves=("loss", "val_loss"),
    after_run=moe_after,
    notes=(
        "The learning rate is one for all configs, not tuned per config: an MoE's best "
        "rate may differ, so a loss won or lost here is at that rate.",
        "At the CPU scale the dense model of the MoE's total size is left out (E/k = 4 times "
        "the MLP's FLOPs: on 2 cores it takes longer than the other two configs together); the "
        "GPU scale trains it, and apps/experiments/README.md gives a 600-step CPU measurement "
        "of it.",
        "The train loss of the MoE includes its load-balancing loss (0.01 × about 1 per layer); "
        "the validation loss is the cross-entropy alone.",
    ),
)
