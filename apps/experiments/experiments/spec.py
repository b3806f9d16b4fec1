"""What a study is: its question, its configs at each scale, its table and how it is summarised.

A study names trainer runs (a preset and ``--set`` overrides, exactly what ``python -m trainer``
takes) or, for the two studies that are not training runs, a `kind` that another module carries
out. The three scales share everything but the sizes: ``smoke`` (two configs, a few steps: the
tests), ``cpu`` (≤ 20 minutes on the project's 2-core machine, every seed included) and ``gpu``
(a lent GPU, unchanged).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCALES = ("smoke", "cpu", "gpu")
#: The seeds every config runs with (``train.seed``): its table shows mean ± standard deviation.
#: The smoke scale (the tests: does every study run and report) takes one; ``--seeds N`` gives
#: any scale seeds 0..N-1 instead.
SEEDS: dict[str, tuple[int, ...]] = {"smoke": (0,), "cpu": (0, 1, 2), "gpu": (0, 1, 2)}

#: A measured table row: ``label`` plus numbers (or text) named by the study's columns.
Row = dict[str, Any]


@dataclass(frozen=True)
class RunSpec:
    """One config of a study: a trainer preset with overrides (or a custom kind's parameters)."""

    label: str
    sets: tuple[str, ...] = ()
    preset: str = "tiny"
    #: Rows sharing a group are alternatives of one thing (an optimizer's learning rates).
    group: str = ""
    #: Free parameters for custom kinds (memory, nanogpt) and for `after_run` hooks.
    params: tuple[tuple[str, Any], ...] = ()
    #: The trainer's ``--init-from`` (a run's folder, ``RUN@STEP``); "" for a run from scratch.
    init_from: str = ""

    def param(self, name: str, default: Any = None) -> Any:
        """One of `params` by name."""
        return dict(self.params).get(name, default)


@dataclass(frozen=True)
class Column:
    """A table column: the header, the row key it shows and how (a format spec, e.g. ``.4f``)."""

    header: str
    key: str
    fmt: str = ".4f"

    def cell(self, row: Row) -> str:
        """The formatted cell (``—`` where the row has no value); ``mean ± std`` where the row
        holds ``<key>_std`` (of several seeds, or of repeated timings), with ``(k/n seeds)``
        where only k of its n seeds have one.
        """
        value = row.get(self.key)
        if value is None:
            return "—"
        if isinstance(value, float) and self.fmt:
            text = format(value, self.fmt)
            std = row.get(f"{self.key}_std")
            if isinstance(std, float) and row.get("seeds", 2) > 1:  # no spread from one seed
                text += f" ± {std:{self.fmt.lstrip('+')}}"
            if f"{self.key}_n" in row:
                text += f" ({row[self.key + '_n']}/{row['seeds']} seeds)"
            return text
        return str(value)


@dataclass(frozen=True)
class RunContext:
    """What an `after_run` hook gets: the finished run and the study's scale."""

    spec: RunSpec
    run_dir: Path
    scale: str
    config: Any  # the trainer's validated Config of the run


@dataclass(frozen=True)
class Sweep:
    """How a study's sweeps are extended (`experiments.sweep`): the swept parameter (a
    `RunSpec.param`), the step between points (a factor: the sweeps are geometric), the most
    extensions per group, the metric (lower is better) and how to build the config of a new
    value from one of the group's configs."""

    param: str
    factor: float
    make: Callable[[RunSpec, float], RunSpec]
    metric: str = "val_loss"
    max_extensions: int = 3


@dataclass(frozen=True)
class Study:
    """A named study: what it asks, what varies, what is fixed, its runs and its report."""

    name: str
    title: str
    question: str
    varied: str
    fixed: str
    runs: Callable[[str], Sequence[RunSpec]]
    columns: tuple[Column, ...]
    #: The row key of the bar chart.
    headline: str
    conclude: Callable[[list[Row], str], list[str]]
    #: "train" (trainer runs, experiments.runner), "memory" or "nanogpt".
    kind: str = "train"
    #: Scalars of metrics.jsonl drawn overlaid, one panel each.
    curves: tuple[str, ...] = ("loss", "val_bits_per_byte")
    #: Which of `curves` (and, if named, the headline's bars) are drawn on a log scale (a
    #: blow-up spans orders of magnitude).
    log_curves: tuple[str, ...] = ("grad_norm", "learning_rate")
    #: Extra measurements of a finished trainer run (merged into its row).
    after_run: Callable[[RunContext], Row] | None = None
    #: Caveats in words (what differs on a GPU, a choice the reader should know), for the
    #: README: one italic line each under "Held fixed".
    notes: tuple[str, ...] = field(default=())
    #: The study's swept value, extended until its best point lies inside (None: no sweep).
    sweep: Sweep | None = None


# The model and run shapes of the scales: every trainer study starts from one of these. The
# trainer's own progress bar and console log are off (the study shows one bar across runs), the
# memory pre-flight is off (these sizes fit; it would compile every step twice). The mesh is the
# trainer's default (every device data-parallel): the tests' 8 simulated CPU devices, one GPU.
COMMON = (
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "train.fit_memory=false",
    "train.sample_every=0",
)

SHAPES: dict[str, tuple[str, ...]] = {
    "smoke": (
        "model.d_model=32",
        "model.num_layers=1",
        "model.num_heads=2",
        "model.mlp.dim=64",
        "model.max_seq_len=16",
        "data.seq_len=16",
        "data.batch_size=8",
        "eval.batch_size=8",
        "train.eval_batches=1",
        "train.steps=4",
        "train.log_every=1",
        "train.eval_every=2",
        "train.checkpoint_every=2",
        "optimizer.schedule.warmup_steps=1",
        # One new token: the end-of-run sample is the prefill alone (no decode step to compile);
        # no smoke table shows the samples.
        "sampling.max_new_tokens=1",
    ),
    "cpu": (
        "model.d_model=64",
        "model.num_layers=2",
        "model.num_heads=4",
        "model.mlp.dim=256",
        "model.max_seq_len=64",
        "data.seq_len=64",
        "data.batch_size=16",
        "eval.batch_size=16",
        "train.eval_batches=8",
        "train.steps=300",
        "train.log_every=10",
        "train.eval_every=50",
        "train.checkpoint_every=150",
        "optimizer.schedule.warmup_steps=30",
        "sampling.max_new_tokens=32",
    ),
    "gpu": (
        "model.d_model=384",
        "model.num_layers=6",
        "model.num_heads=6",
        "model.mlp.dim=1536",
        "model.max_seq_len=256",
        "data.seq_len=256",
        "data.batch_size=64",
        "eval.batch_size=32",
        "train.eval_batches=32",
        "train.steps=3000",
        "train.log_every=20",
        "train.eval_every=250",
        "train.checkpoint_every=1000",
        "optimizer.schedule.warmup_steps=200",
        "sampling.max_new_tokens=64",
    ),
}


def base(scale: str, *extra: str) -> tuple[str, ...]:
    """The common overrides, the scale's shape, then ``extra`` (later ``--set`` wins)."""
    return (*COMMON, *SHAPES[scale], *extra)


def shape_value(scale: str, key: str) -> int:
    """An integer of a scale's shape, e.g. ``shape_value("cpu", "data.seq_len")`` → 64."""
    for item in SHAPES[scale]:
        name, _, value = item.partition("=")
        if name == key:
            return int(value)
    raise KeyError(key)


def smoke_pick(scale: str, runs: Sequence[RunSpec], *labels: str) -> list[RunSpec]:
    """At the smoke scale only the named two runs (the test's "two configs"); else all."""
    if scale != "smoke":
        return list(runs)
    return [r for r in runs if r.label in labels]


def best(rows: list[Row], key: str) -> Row | None:
    """The row with the lowest finite ``key``, or None."""
    finite = [r for r in rows if isinstance(r.get(key), float) and r[key] == r[key]]
    return min(finite, key=lambda r: float(r[key])) if finite else None
