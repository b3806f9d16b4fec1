"""What a run's row records beyond the trainer's log: the uniform-guess loss and blow-ups."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.results import BLOW_UP_MARGIN, first_blow_up, train_row, uniform_loss
from experiments.runner import read_row, write_row
from experiments.spec import RunSpec


def test_uniform_loss_is_ln_of_the_runs_vocabulary(tmp_path: Path) -> None:
    assert uniform_loss(tmp_path) is None  # no model.json
    (tmp_path / "model.json").write_text(json.dumps({"fields": {"vocab_size": 257}}))
    assert uniform_loss(tmp_path) == math.log(257)
    (tmp_path / "model.json").write_text(json.dumps({"fields": {"num_classes": 10}}))
    assert uniform_loss(tmp_path) is None  # a classifier names no vocabulary


def test_first_blow_up_is_the_first_finite_loss_past_the_margin() -> None:
    uniform = math.log(257)
    records = [
        {"step": 1, "loss": uniform - 0.01},
        {"step": 2, "val_loss": 9.0},  # an evaluation line: no train loss
        {"step": 3, "loss": uniform + BLOW_UP_MARGIN - 1e-3},  # within the margin
        {"step": 4, "loss": float("nan")},  # non-finite: the trainer's divergence, not a blow-up
        {"step": 5, "loss": uniform + BLOW_UP_MARGIN + 1e-3},
        {"step": 6, "loss": 1e9},
    ]
    assert first_blow_up(records, uniform) == 5
    assert first_blow_up(records[:4], uniform) is None
    assert first_blow_up(records, None) is None  # no vocabulary, no yardstick


def test_a_row_reads_nan_and_infinity_back_from_the_runs_standard_json(tmp_path: Path) -> None:
    from tjx.metrics import JsonlLogger
    from trainer import RunDir

    with JsonlLogger(tmp_path / "metrics.jsonl") as log:
        log.log_scalars(1, {"loss": 5.0, "grad_norm": 1.5, "tokens_per_s": 10.0})
        log.log_scalars(2, {"loss": math.nan, "grad_norm": math.inf, "tokens_per_s": 12.0})
    summary = {"step": 2, "val_loss": 8703.0, "val_perplexity": math.inf, "num_params": 5}
    RunDir(tmp_path).write_final(summary)
    row = train_row(RunSpec("x"), tmp_path, {"exit": 0, "started": 0.0, "ended": 1.0})
    assert row["diverged_at"] == 2  # the NaN loss is NaN again, not a missing value
    assert row["train_loss"] == 5.0 and row["max_grad_norm"] == 1.5
    assert row["val_loss"] == 8703.0 and row["step"] == 2
    row["val_perplexity"] = math.inf
    write_row(tmp_path / "summary.json", row)
    text = (tmp_path / "summary.json").read_text()
    assert "Infinity" not in text.replace('"Infinity"', "")  # no bare token: standard JSON
    assert read_row(tmp_path / "summary.json")["val_perplexity"] == math.inf
