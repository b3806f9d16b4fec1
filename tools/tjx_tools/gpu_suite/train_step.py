"""The trainer's own jitted step on the device: tokens/s, MFU, largest batch, memory fit, compile.

gpt2_small as the issue states it (seq 1024, bf16 compute, scanned layers, chunked cross-entropy)
with each attention kernel by name on the same batch: Pallas, cuDNN and XLA (a smoke run on CPU:
Pallas interpreted and XLA). A kernel that fails is a failed row; the others still run. Timing
is ``tools/bench_train.py``'s (the step users run, synthetic token batches, median of timed steps
after compilation). MFU is reported against the datasheet's dense bf16 peak and against the bf16
matmul peak measured in the same run (environment section). Memory comes from XLA's analysis of
the compiled step (nothing executes): the largest batch whose step fits the device's memory, and
whether gpt2_medium and gpt2_large fit as their presets stand. Every memory figure and every
kernel row's estimate come from the trainer's own plan (`trainer.plan_here`, what ``python -m
trainer --plan`` prints, here compiled for the device in the machine), so the measured step time
and the plan's roofline estimate of the same step sit in one table.
"""

from __future__ import annotations

import time
from typing import Any

from bench_train import load, throughput, vocab_of

from tjx_tools.gpu_suite.report import Section, fmt, md_table

GIB = 2**30
#: The issue's gpt2_small step: bf16 compute, scanned layers, chunked cross-entropy.
STEP_SETS = [
    "model.scan_layers=true",
    "model.precision.compute_dtype=bfloat16",
    "train.chunked_ce=true",
]
#: The smoke run's step: the same code path on a model that compiles in seconds on 2 CPU cores.
SMOKE_SETS = [
    "data.batch_size=2",
    "data.seq_len=32",
    "model.max_seq_len=32",
    "model.d_model=32",
    "model.num_layers=2",
    "model.num_heads=2",
    "model.mlp_dim=64",
]


def _plan(smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"config": "tiny", "sets": SMOKE_SETS, "batches": (2,), "fit": ("tiny",), "steps": 2}
    return {
        "config": "gpt2_small",
        "sets": [],
        "batches": (16, 32, 64, 128),
        "fit": ("gpt2_medium", "gpt2_large"),
        "steps": 20,
    }


#: The device table entry a smoke run (CPU) estimates against: a TPU's, whose ``auto`` kernel is
#: XLA, the one kernel that compiles on a CPU (the figures check the harness, never performance).
SMOKE_DEVICE = "v5e"


def plan(name: str, sets: list[str], smoke: bool) -> dict[str, Any]:
    """The trainer's ``--plan`` of a config on this machine's devices (`trainer.plan_here`): the
    compiled peak, what the memory fit would do, and the roofline's estimated step time."""
    from trainer import plan_here, resolve

    cfg = load(name, sets)
    t0 = time.perf_counter()
    found = plan_here(resolve(cfg, vocab_of(cfg)), device=SMOKE_DEVICE if smoke else None)
    found["plan_s"] = time.perf_counter() - t0
    return found


def step_memory(name: str, sets: list[str], smoke: bool) -> tuple[int, float, dict[str, Any]]:
    """(compiled peak bytes, seconds, the plan) of a config's step as the plan compiles it."""
    found = plan(name, sets, smoke)
    tried = found["memory"]["tried"][0]  # the step as configured, before any memory fit
    return int(tried["peak_bytes"] or 0), found["plan_s"], found


def largest_batch(
    name: str,
    sets: list[str],
    batches: tuple[int, ...],
    budget: int,
    deadline: float,
    smoke: bool = False,
) -> list[Any]:
    """Peak memory of each batch size in turn until one does not fit (or time runs out)."""
    rows = []
    for b in batches:
        if time.perf_counter() > deadline:
            break
        peak, secs, _ = step_memory(name, [*sets, f"data.batch_size={b}"], smoke)
        rows.append({"batch": b, "peak_bytes": peak, "compile_s": secs, "fits": peak <= budget})
        if peak > budget:
            break
    return rows


def run(sec: Section, smoke: bool, meta: dict[str, Any], deadline: float) -> None:
    """Throughput (pallas, auto), medium/large fit, largest batch and its throughput, in that
    order of importance; what would start after ``deadline`` is skipped and said so."""
    from tjx.metrics import available_bytes

    cases = _plan(smoke)
    sets = [*STEP_SETS, *cases["sets"]]
    measured_peak = meta.get("peak_bf16_measured")
    budget = available_bytes() or 0
    rows: list[dict[str, Any]] = []
    presets: list[dict[str, Any]] = []

    def in_time(what: str) -> bool:
        if time.perf_counter() <= deadline:
            return True
        sec.notes.append(f"skipped (time budget): {what}")
        return False

    def measure(label: str, extra: list[str]) -> None:
        if not in_time(f"throughput, {label}"):
            return
        with sec.cell(f"throughput, {label}"):
            row = throughput(cases["config"], [*sets, *extra], cases["steps"])
            row["attention_impl"] = label
            # The plan's estimate of the same step, beside the measurement (a smoke run plans
            # only XLA's: the one kernel a CPU compiles under another device's kernel choice).
            row["est_step_s"] = row["est_over_measured"] = None
            if not smoke or label == "xla":
                est = plan(cases["config"], [*sets, *extra], smoke).get("estimate", {})
                row["est_step_s"] = est.get("seconds")
                if row["est_step_s"] and row["median_step_s"]:
                    row["est_over_measured"] = row["est_step_s"] / row["median_step_s"]
            table_peak = meta.get("peak_bf16_table")
            row["mfu_vs_measured"] = (
                row["mfu"] * table_peak / measured_peak
                if row["mfu"] and table_peak and measured_peak
                else None
            )
            rows.append(row)
            sec.summary["throughput"] = rows  # saved with the report at once
            if sec.saver is not None:
                sec.saver()

    for impl in ("pallas", "xla") if smoke else ("pallas", "cudnn", "xla"):
        measure(impl, [f"model.attention_impl={impl}"])
    for name in cases["fit"]:
        if in_time(f"{name} memory fit"):
            extra = [*STEP_SETS, *(cases["sets"] if smoke else [])]
            peak, secs, found = step_memory(name, extra, smoke)
            fits = peak <= budget
            fitted = found.get("train", {})
            presets.append({
                "config": name, "peak_bytes": peak, "compile_s": secs, "fits": fits,
                "plan_fit": "as configured" if found["memory"]["tried"][-1] is
                found["memory"]["tried"][0] else found["memory"]["tried"][-1]["change"],
                "plan_peak_bytes": fitted.get("peak_bytes"),
            })  # fmt: skip
    # Smoke: no Pallas under another device's kernel choice (see `measure`); XLA's batches.
    kernel = "model.attention_impl=xla" if smoke else "model.attention_impl=pallas"
    fit = largest_batch(cases["config"], [*sets, kernel], cases["batches"], budget, deadline, smoke)
    best = max((r["batch"] for r in fit if r["fits"]), default=None)
    if best is not None and best != load(cases["config"], sets).data.batch_size:
        measure(f"pallas, batch {best}", ["model.attention_impl=pallas", f"data.batch_size={best}"])
    sec.rows = rows
    sec.summary = {
        "throughput": rows,
        "budget_bytes": budget,
        "largest_batch": best,
        "batch_fit": fit,
        "presets": presets,
    }
    sec.markdown = "\n\n".join(
        [
            md_table(
                [
                    "config",
                    "attention",
                    "tokens/step",
                    "compile s",
                    "step s",
                    "est. step s (plan)",
                    "measured / est.",
                    "tokens/s",
                    "MFU (datasheet)",
                    "MFU (measured matmul)",
                ],
                [
                    [
                        r["config"],
                        r["attention_impl"],
                        r["tokens_per_step"],
                        r["compile_s"],
                        r["median_step_s"],
                        fmt(r.get("est_step_s"), ".4f"),
                        fmt(r.get("est_over_measured") and 1 / r["est_over_measured"], ".2f"),
                        f"{r['tokens_per_s']:,.0f}",
                        fmt(r["mfu"] and 100 * r["mfu"], ".1f"),
                        fmt(r["mfu_vs_measured"] and 100 * r["mfu_vs_measured"], ".1f"),
                    ]
                    for r in rows
                ],
            ),
            f"Device memory for the step: {budget / GIB:.1f} GiB. Largest batch (× seq) whose "
            f"compiled step fits: **{best}**.",
            md_table(
                ["step", "peak GiB", "compile s", "fits"],
                [
                    [
                        f"{cases['config']} batch {r['batch']}",
                        f"{r['peak_bytes'] / GIB:.2f}",
                        f"{r['compile_s']:.1f}",
                        r["fits"],
                    ]
                    for r in fit
                ]
                + [
                    [
                        f"{p['config']} (preset)",
                        f"{p['peak_bytes'] / GIB:.2f}",
                        f"{p['compile_s']:.1f}",
                        p["fits"],
                    ]
                    for p in presets
                ],
            ),
        ]
    )
