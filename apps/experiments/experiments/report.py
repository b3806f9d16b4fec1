"""A study's report: ``README.md`` (question, what varied, what was fixed, the table, what it
shows), overlaid curves and bars as PNGs, and the raw JSONL of every run."""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Any

from experiments.claims_table import verdict_table
from experiments.results import read_metrics, series
from experiments.spec import Row, RunSpec, Study

CURVES_PNG = "curves.png"
BARS_PNG = "bars.png"


def slug(label: str) -> str:
    """A file-name-safe form of a run label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"


def table(study: Study, rows: list[Row]) -> str:
    """The markdown results table: one line per config."""
    head = ["config", *(c.header for c in study.columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["label"], *(c.cell(r) for c in study.columns)]) + " |")
    return "\n".join(lines)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(study: Study, runs: list[tuple[RunSpec, Path, Row]], path: Path) -> bool:
    """One panel per curve key, every run overlaid; False if no run logged any of them."""
    keys = [k for k in study.curves if any(series(read_metrics(d), k)[0] for _, d, _ in runs)]
    if not keys:
        return False
    plt = _plt()
    fig, axes = plt.subplots(1, len(keys), figsize=(5.5 * len(keys), 4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        for i, (_, run_dir, row) in enumerate(runs):
            steps, values = series(read_metrics(run_dir), key)
            shown = [(s, v) for s, v in zip(steps, values, strict=True) if math.isfinite(v)]
            if shown:  # one colour per run in every panel, also where another run has no line
                ax.plot(
                    *zip(*shown, strict=True),
                    label=row["label"],
                    color=f"C{i % 10}",
                    marker="." if len(shown) < 30 else None,
                )
        ax.set_xlabel("step")
        ax.set_title(key)
        if key in study.log_curves:
            ax.set_yscale("log")
    # The legend goes on the panel with the most runs drawn (a diverged run has no val curve).
    max(axes[0], key=lambda ax: len(ax.get_lines())).legend(fontsize=7)
    fig.suptitle(study.title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def plot_bars(study: Study, rows: list[Row], path: Path) -> bool:
    """Bars of the headline column per config (a config without a value gets none)."""
    shown = [r for r in rows if isinstance(r.get(study.headline), int | float)]
    if not shown:
        return False
    plt = _plt()
    header = next((c.header for c in study.columns if c.key == study.headline), study.headline)
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(shown) + 2), 4))
    values = [float(r[study.headline]) for r in shown]
    ax.bar(range(len(shown)), values, color="tab:blue")
    ax.set_xticks(
        range(len(shown)), [r["label"] for r in shown], rotation=30, ha="right", fontsize=7
    )
    ax.set_ylabel(header)
    if study.headline in study.log_curves:
        ax.set_yscale("log")
    finite = [v for v in values if math.isfinite(v)]
    if finite and min(finite) > 0 and study.headline.startswith("val"):
        lo, hi = min(finite), max(finite)  # losses differ in the decimals: zoom in on them
        ax.set_ylim(lo - 0.2 * (hi - lo + 1e-3), hi + 0.1 * (hi - lo + 1e-3))
    ax.set_title(f"{study.title}: {header}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True


def _load_note(rows: list[Row]) -> str:
    """How long the configs trained and how loaded the machine was, from the rows' ``wall_s``
    and ``load`` (the 1-minute load average as each config started and ended); "" without."""
    # A config's row holds its seeds' mean wall time: the study's time is every seed's run.
    runs: list[Row] = []
    for row in rows:
        seeds = row.get("per_seed")
        runs.extend(seeds if isinstance(seeds, list) else [row])
    walls = [float(r["wall_s"]) for r in runs if isinstance(r.get("wall_s"), int | float)]
    loads = [float(x) for r in runs if isinstance(r.get("load"), list) for x in r["load"]]
    if not walls or not loads:
        return ""
    cores = os.cpu_count() or 1
    text = (
        f"The configs trained for {sum(walls):.0f} s in all; the 1-minute load average was "
        f"{min(loads):.1f}–{max(loads):.1f} as they started and ended ({cores} cores, this "
        "study's own process included)."
    )
    if max(loads) > cores:
        text += " Other work shared the cores for part of that time, so the times are upper bounds."
    return text


def _seeds_note(rows: list[Row]) -> str:
    """How many seeds each config ran with (the table's ± is their standard deviation)."""
    seeds = sorted({int(r["seeds"]) for r in rows if isinstance(r.get("seeds"), int)})
    if not seeds:
        return ""
    n = "/".join(map(str, seeds))
    return (
        f"Each config ran with {n} seeds; a ± is the seeds' standard deviation (ddof 1), the "
        "value before it their mean."
    )


def write_report(
    study: Study, scale: str, runs: list[tuple[RunSpec, Path, Row]], out_dir: Path
) -> Path:
    """Write ``out_dir/README.md``, the PNGs and ``raw/``; returns the README's path."""
    from tjx.metrics import dumps_json  # standard JSON: a diverged run's NaN as null, named

    rows = [row for _, _, row in runs]
    findings = study.conclude(rows, scale)  # may add derived columns to the rows
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / "raw"
    shutil.rmtree(raw, ignore_errors=True)
    raw.mkdir()
    with (raw / "results.jsonl").open("w") as f:
        for row in rows:
            f.write(dumps_json({k: v for k, v in row.items() if k != "sweep_notes"}) + "\n")
    pictures = []
    if plot_curves(study, runs, out_dir / CURVES_PNG):
        pictures.append(f"![overlaid curves]({CURVES_PNG})")
    if plot_bars(study, rows, out_dir / BARS_PNG):
        pictures.append(f"![bars]({BARS_PNG})")
    for _, run_dir, row in runs:
        name = slug(row["label"])
        if (run_dir / "metrics.jsonl").is_file():
            shutil.copy(run_dir / "metrics.jsonl", raw / f"{name}.jsonl")
        for png in sorted(run_dir.glob("attention_*.png")):
            shutil.copy(png, out_dir / f"{name}_{png.name}")
            pictures.append(f"![{row['label']}: {png.stem}]({name}_{png.name})")
    dates = sorted({r["measured_at"] for r in rows if r.get("measured_at")})
    when = dates[0] if len(dates) == 1 else f"{dates[0]} – {dates[-1]}" if dates else "?"
    machines = sorted({r["machine"] for r in rows if r.get("machine")})
    shared = _load_note(rows)
    text = [
        f"# {study.title}",
        "",
        f"Scale **{scale}**, measured {when} on {'; '.join(machines) or '?'}. Re-run with "
        f"`python -m experiments {study.name} --scale {scale}` (`--scale gpu` on a GPU). "
        + _seeds_note(rows),
        "",
        *([shared, ""] if shared else []),
        f"**Question.** {study.question}",
        "",
        f"**Varied.** {study.varied}",
        "",
        f"**Held fixed.** {study.fixed}",
        "",
        *(f"_Note: {note}_\n" for note in study.notes),
        "## Results",
        "",
        table(study, rows),
        "",
        "## What it shows",
        "",
        *(f"- {line}" for line in findings),
        *(f"- Sweep: {line}" for line in (rows[0].get("sweep_notes", []) if rows else [])),
        "",
        "## Verdict on the seeds' claims",
        "",
        "A difference within the combined noise of the seeds "
        "(sqrt(std_a² + std_b²)) decides nothing: it is *no measurable difference*.",
        "",
        *verdict_table(study.name, rows),
        "",
        "## Plots",
        "",
        *(f"{p}\n" for p in pictures),
        "## Raw data",
        "",
        "`raw/results.jsonl` holds every row above (all measured fields; `per_seed` holds each "
        "seed's own row); `raw/<config>.jsonl` is the first seed's metrics log. The exact "
        "trainer overrides of each config are in "
        "`apps/experiments/experiments/` (the study's `runs`).",
        "",
    ]
    path = out_dir / "README.md"
    path.write_text("\n".join(text))
    return path
