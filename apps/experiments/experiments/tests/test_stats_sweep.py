"""Seeds, error bars and sweep extension: the rules every study's report follows, on made-up rows
(no training)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable

import numpy as np
import pytest

from experiments.claims import AGREES, CANNOT_TELL, DISAGREES, failure_words, lower, within
from experiments.runner import seed_spec
from experiments.spec import Column, Row, RunSpec, Sweep
from experiments.stats import NO_DIFFERENCE, aggregate, difference, ranking, tied_with_best
from experiments.sweep import extend, next_value


def test_aggregate_is_the_mean_and_sample_std_of_the_seeds() -> None:
    xs = np.random.default_rng(0).normal(2.0, 0.1, 3).tolist()
    seed_rows = [{"label": "a", "group": "a", "val_loss": x, "seed": i} for i, x in enumerate(xs)]
    row = aggregate(seed_rows)
    assert row["val_loss"] == pytest.approx(statistics.fmean(xs), abs=1e-12)
    assert row["val_loss_std"] == pytest.approx(float(np.std(xs, ddof=1)), abs=1e-12)
    assert row["seeds"] == 3 and row["per_seed"] == seed_rows and row["status"] == "finished"
    assert "val_loss_n" not in row  # every seed had a value


def test_aggregate_counts_failed_seeds_and_keeps_the_earliest_failure() -> None:
    seed_rows: list[Row] = [
        {"label": "a", "val_loss": 2.0, "diverged_at": None},
        {"label": "a", "val_loss": math.nan, "diverged_at": 17},
        {"label": "a", "val_loss": 2.2, "diverged_at": 9},
    ]
    row = aggregate(seed_rows)
    assert row["diverged_at"] == 9 and row["diverged_at_seeds"] == 2
    assert row["val_loss"] == pytest.approx(2.1) and row["val_loss_n"] == 2
    assert row["status"] == "diverged in 2/3 seeds (first at step 9)"
    assert Column("v", "val_loss").cell(row) == "2.1000 ± 0.1414 (2/3 seeds)"


def test_a_difference_within_the_combined_noise_is_no_measurable_difference() -> None:
    a = {"label": "a", "v": 1.00, "v_std": 0.03}
    b = {"label": "b", "v": 1.04, "v_std": 0.04}  # noise hypot(0.03, 0.04) = 0.05 > 0.04
    c = {"label": "c", "v": 1.20, "v_std": 0.04}
    d = difference(b, a, "v")
    assert d.noise == pytest.approx(0.05) and not d.measurable
    assert d.words().endswith(NO_DIFFERENCE)
    assert d.words(unit="nats") == f"+0.0400 ± 0.0500 nats, {NO_DIFFERENCE}"  # unit, then words
    assert difference(c, a, "v").measurable
    assert ranking([c, b, a], "v") == "a 1.0000 ± 0.0300 ≈ b 1.0400 ± 0.0400 < c 1.2000 ± 0.0400"
    assert [r["label"] for r in tied_with_best([c, b, a], "v")] == ["b", "a"]


def test_verdicts_never_rank_within_the_noise() -> None:
    a = {"label": "a", "v": 1.00, "v_std": 0.03}
    assert lower(a, {"label": "b", "v": 1.04, "v_std": 0.04}, "v", "v")[1] == CANNOT_TELL
    assert lower(a, {"label": "b", "v": 1.2, "v_std": 0.04}, "v", "v")[1] == AGREES
    assert lower(a, {"label": "b", "v": 0.8, "v_std": 0.04}, "v", "v")[1] == DISAGREES
    assert within(0.05, 0.02, 0.1) == AGREES
    assert within(0.5, 0.2, 0.1) == DISAGREES
    assert within(0.09, 0.02, 0.1) == CANNOT_TELL


def test_each_seed_runs_the_config_with_its_own_train_seed() -> None:
    spec = RunSpec("x", ("train.seed=7", "model.d_model=8"), group="g", params=(("lr", 1.0),))
    one = seed_spec(spec, 2)
    assert one.sets[-1] == "train.seed=2"  # the last --set wins over the study's own
    assert one.label == "x" and one.group == "g" and one.param("seed") == 2
    assert one.param("lr") == 1.0


def _lr_spec(group: str, lr: float) -> RunSpec:
    return RunSpec(
        f"{group} {lr:g}",
        (f"optimizer.schedule.peak_lr={lr:g}",),
        group=group,
        params=(("lr", lr),),
    )


SWEEP = Sweep(param="lr", factor=3.0, make=lambda s, lr: _lr_spec(s.group, lr), max_extensions=4)


def _fake_rows(
    optimum: float, diverge_above: float = math.inf
) -> tuple[list[str], Callable[[list[RunSpec]], list[Row]]]:
    """rows_of for a sweep whose loss is |log(lr / optimum)| (and NaN above diverge_above)."""
    ran: list[str] = []

    def rows_of(specs: list[RunSpec]) -> list[Row]:
        out = []
        for s in specs:
            lr = float(s.param("lr"))
            if s.label not in ran:
                ran.append(s.label)
            loss = math.nan if lr > diverge_above else abs(math.log(lr / optimum))
            out.append({"label": s.label, "group": s.group, "val_loss": loss})
        return out

    return ran, rows_of


def test_a_sweep_with_its_best_at_the_top_is_extended_until_the_best_lies_inside() -> None:
    ran, rows_of = _fake_rows(optimum=30.0)
    specs, notes = extend([_lr_spec("a", lr) for lr in (1.0, 3.0)], rows_of, SWEEP)
    assert [float(s.param("lr")) for s in specs] == pytest.approx([1.0, 3.0, 9.0, 27.0, 81.0])
    assert "best lr 27 of 1 … 81" in notes[0] and "inside the sweep" in notes[0]
    assert len(ran) == 5


def test_a_sweep_extends_downwards_and_stops_at_its_limit_saying_so() -> None:
    _, rows_of = _fake_rows(optimum=1e-6)
    specs, notes = extend([_lr_spec("a", lr) for lr in (1.0, 3.0)], rows_of, SWEEP, limit=2)
    assert min(float(s.param("lr")) for s in specs) == pytest.approx(1 / 9)
    assert "still at the edge after 2 extensions" in notes[0]


def test_a_diverged_point_past_the_edge_brackets_the_best() -> None:
    _, rows_of = _fake_rows(optimum=100.0, diverge_above=5.0)
    specs, notes = extend([_lr_spec("a", lr) for lr in (1.0, 3.0)], rows_of, SWEEP)
    assert len(specs) == 3
    assert "best lr 3" in notes[0] and "the point past it diverged" in notes[0]


def test_next_value_is_none_when_the_best_is_inside() -> None:
    pts = [(1.0, {"val_loss": 3.0}), (3.0, {"val_loss": 2.0}), (9.0, {"val_loss": 2.5})]
    assert next_value(pts, SWEEP) is None
    assert next_value(pts[:2], SWEEP) == pytest.approx(9.0)
    assert next_value(pts[1:], SWEEP) == pytest.approx(1.0)


def test_the_reports_training_time_adds_up_every_seeds_run() -> None:
    from experiments.report import _load_note

    seeds = [{"wall_s": 10.0, "load": [0.5, 1.5]}, {"wall_s": 20.0, "load": [0.7, 1.0]}]
    other = [{"wall_s": 4.0, "load": [0.2, 0.4]}, {"wall_s": 6.0, "load": [0.3, 0.6]}]
    note = _load_note([aggregate(seeds), aggregate(other)])
    # 10 + 20 + 4 + 6 s, not the two configs' means (15 + 5); loads of every seed (0.2 to 1.5).
    assert "trained for 40 s in all" in note and "0.2–1.5" in note


def test_a_failed_config_says_how_it_failed_in_how_many_seeds() -> None:
    blew = {"blew_up_at": 2, "blew_up_at_seeds": 3, "seeds": 3, "diverged_at": None}
    assert failure_words(blew) == "blew up in 3/3 seeds (first at step 2)"
    both = {**blew, "diverged_at": 15, "diverged_at_seeds": 2}
    assert failure_words(both) == "diverged in 2/3 seeds (first at step 15)"


def test_the_moe_claim_needs_matched_active_parameters_and_a_gap_beyond_the_noise() -> None:
    from experiments.claims_table import MOE

    def rows(moe_loss: float, moe_active: float) -> list[Row]:
        dense = {"label": "dense", "group": "dense", "active_params": 1000.0}
        moe = {"label": "MoE", "group": "moe", "active_params": moe_active}
        return [
            {**dense, "val_loss": 2.0, "val_loss_std": 0.01},
            {**moe, "val_loss": moe_loss, "val_loss_std": 0.01},
        ]

    claim = MOE[0]
    assert claim.verdict(rows(1.9, 1010.0))[1] == AGREES
    assert claim.verdict(rows(2.1, 1010.0))[1] == DISAGREES
    assert claim.verdict(rows(1.99, 1010.0))[1] == CANNOT_TELL  # 0.01 < sqrt(2) · 0.01
    measured, verdict, why = claim.verdict(rows(1.9, 1100.0))  # 10 % more active weights
    assert verdict == CANNOT_TELL and "+10.0 %" in measured and "not matched" in why


def test_an_fp8_row_is_judged_against_bf16_within_its_band_or_the_seeds_noise() -> None:
    from experiments.training_choices import FP8_BAND, fp8_verdicts

    bf16 = {"label": "bf16 compute", "val_loss": 2.0, "val_loss_std": 0.001}
    near = {"label": "bf16 + fp8 tensorwise", "val_loss": 2.0 * (1 + FP8_BAND / 2)}
    far = {"label": "bf16 + fp8 rowwise", "val_loss": 2.0 * (1 + 2 * FP8_BAND)}
    lines = fp8_verdicts([bf16, near, far, {"label": "fp32", "val_loss": 1.9}])
    assert len(lines) == 2  # the fp8 rows only
    assert lines[0].startswith("bf16 + fp8 tensorwise: final validation loss +1.00 % vs bf16")
    assert ": within the 2 % band" in lines[0] and ": OUTSIDE the 2 % band" in lines[1]
