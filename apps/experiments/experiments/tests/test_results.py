"""What a run's row records beyond the trainer's log: the uniform-guess loss and blow-ups."""

from __future__ import annotations

import json
import math
from pathlib import Path

from experiments.results import BLOW_UP_MARGIN, first_blow_up, uniform_loss


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
