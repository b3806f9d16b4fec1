"""A finished run's numbers: its metrics.jsonl and final.json, read into one table row."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from typing import Any

from experiments.spec import Row, RunSpec
from trainer import RunDir  # no jax or orbax on import

METRICS_FILE = "metrics.jsonl"
#: Nats above ln V (a uniform guess; an untrained model starts within a few hundredths of it)
#: that a train loss must pass to count as a blow-up.
BLOW_UP_MARGIN = 1.0


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Every scalar record of the run's JSONL log (histogram and text records left out), read
    by tjx.metrics: a diverged loss is NaN again (the log writes it as null, named)."""
    from tjx.metrics import read_jsonl  # jax: loaded when a study reads its runs

    path = run_dir / METRICS_FILE
    if not path.is_file():
        return []
    return [rec for rec in read_jsonl(path) if "histograms" not in rec and "text" not in rec]


def series(records: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of ``key`` in log order; a step logged twice (a resume) keeps the last."""
    by_step: dict[int, float] = {}
    for rec in records:
        if key in rec and rec[key] is not None:
            by_step[int(rec["step"])] = float(rec[key])
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def _finite(x: float) -> bool:
    return isinstance(x, float) and math.isfinite(x)


def first_bad_step(records: list[dict[str, Any]]) -> int | None:
    """The first logged step whose loss is not finite or whose update was skipped."""
    for rec in records:
        loss = rec.get("loss")
        if loss is None:
            continue
        if not _finite(float(loss)) or rec.get("skipped"):
            return int(rec["step"])
    return None


def uniform_loss(run_dir: Path) -> float | None:
    """ln V, the loss of a uniform guess over the run's V-token vocabulary (where an untrained
    language model starts); None without a ``model.json`` naming ``vocab_size``."""
    path = run_dir / "model.json"
    if not path.is_file():
        return None
    vocab = json.loads(path.read_text()).get("fields", {}).get("vocab_size")
    return math.log(vocab) if isinstance(vocab, int) and vocab > 1 else None


def first_blow_up(records: list[dict[str, Any]], uniform: float | None) -> int | None:
    """The first logged step whose train loss is finite but more than `BLOW_UP_MARGIN` above
    ``uniform`` (ln V: a model clearly worse than a uniform guess, so it blew up), or None."""
    if uniform is None:
        return None
    for rec in records:
        loss = rec.get("loss")
        if loss is not None and _finite(float(loss)) and float(loss) > uniform + BLOW_UP_MARGIN:
            return int(rec["step"])
    return None


def train_row(spec: RunSpec, run_dir: Path, status: dict[str, Any]) -> Row:
    """The generic row of a trainer run: final validation metrics (``final.json``, else the last
    logged evaluation), last train loss, median tokens/s, largest gradient norm, divergence."""
    records = read_metrics(run_dir)
    row: Row = {"label": spec.label, "group": spec.group or spec.label}
    run = RunDir(run_dir)
    final = run.read(RunDir.FINAL_FILE) if run.final_file.is_file() else {}
    for key in ("val_loss", "val_bits_per_byte", "val_top1", "num_params", "step"):
        if key in final:
            row[key] = final[key]
        else:
            _, values = series(records, key)
            row[key] = values[-1] if values else None
    steps, losses = series(records, "loss")
    good = [v for v in losses if math.isfinite(v)]
    row["train_loss"] = good[-1] if good else None
    row["peak_loss"] = max(good) if good else None
    row["uniform_loss"] = uniform_loss(run_dir)
    row["blew_up_at"] = first_blow_up(records, row["uniform_loss"])
    _, rates = series(records, "tokens_per_s")
    # The first rate of a run includes its compilation; the median of the others is the speed.
    row["tokens_per_s"] = statistics.median(rates[1:]) if len(rates) > 1 else None
    _, norms = series(records, "grad_norm")
    finite_norms = [v for v in norms if math.isfinite(v)]
    row["max_grad_norm"] = max(finite_norms) if finite_norms else None
    bad = first_bad_step(records)
    diverged = status.get("exit") == 3
    row["diverged_at"] = bad if bad is not None else (steps[-1] if diverged and steps else None)
    row["status"] = f"diverged at step {row['diverged_at']}" if diverged else "finished"
    row["wall_s"] = round(float(status["ended"]) - float(status["started"]), 1)
    row["load"] = status.get("load")
    return row
