"""Every study's smoke version (two configs, a few steps) runs and writes its report; a rerun
skips finished configs and continues a half-finished one from its checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.claims_table import verdict_table
from experiments.cli import main
from experiments.registry import STUDIES
from experiments.runner import StudyError
from experiments.spec import Row
from experiments.stability import PRESET_LR, pair_label
from experiments.stats import aggregate, difference
from experiments.studies_grpo import (
    ACTING_LABEL,
    CONTROL_LABEL,
    GRPO_LABEL,
    MORE_SFT_LABEL,
    PLATEAU_RISE,
    SFT_LABEL,
    START_FILE,
    TASK,
    choose_start,
    grpo_conclude,
    plateau,
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One runs folder for the module: its XLA cache serves every study's identical shapes."""
    root = tmp_path_factory.mktemp("experiments")
    return root / "runs", root / "docs"


def _run(study: str, folders: tuple[Path, Path], *extra: str) -> int:
    runs, docs = folders
    return main([study, "--scale", "smoke", "--runs-dir", str(runs), "--out", str(docs), *extra])


@pytest.mark.parametrize("name", list(STUDIES))
def test_smoke_study_writes_its_report(name: str, folders: tuple[Path, Path]) -> None:
    study = STUDIES[name]
    assert _run(name, folders) == 0
    out = folders[1] / name
    readme = (out / "README.md").read_text()
    header = "| config | " + " | ".join(c.header for c in study.columns) + " |"
    assert header in readme
    rows = [json.loads(line) for line in (out / "raw" / "results.jsonl").read_text().splitlines()]
    # Two configs; the side-by-side has a row per side of each, a sweep one point past its edge,
    # the GRPO study its start beside its two arms (GRPO, continued SFT).
    two = 4 if study.kind == "nanogpt" else 3 if study.sweep or study.kind == "grpo" else 2
    assert len(rows) == two
    for row in rows:
        assert f"| {row['label']} |" in readme
        assert row["machine"] and row["measured_at"]
        if study.kind == "train":  # every config ran with the smoke scale's one seed
            assert [r["seed"] for r in row["per_seed"]] == [0] and row["seeds"] == 1
    assert "## Verdict on the seeds' claims" in readme
    claims = readme.split("## Verdict on the seeds' claims")[1]
    # A claim row quoting a seed file (the MoE study's claim is issue #41's).
    assert claims.count("\n| 00") + claims.count("\n| issue #") >= 1
    assert (out / "bars.png").stat().st_size > 1000
    if study.curves:
        assert (out / "curves.png").stat().st_size > 1000
    assert "## What it shows\n\n- " in readme


def test_positions_rows_hold_the_longer_lengths_and_two_seeds_differ(
    folders: tuple[Path, Path],
) -> None:
    assert _run("positions", folders, "--seeds", "2") == 0  # seed 0 ran above: only seed 1 runs
    rows = {
        r["label"]: r
        for r in map(
            json.loads, (folders[1] / "positions/raw/results.jsonl").read_text().splitlines()
        )
    }
    assert rows["learned"]["val_loss_2x"] is None  # a learned table cannot go beyond
    assert all(isinstance(rows["rope"][f"val_loss_{k}x"], float) for k in (1, 2, 4))
    # Two seeds give two different runs: different initial weights and batch order.
    first, second = (r["val_loss"] for r in rows["rope"]["per_seed"])
    assert first != second
    assert rows["rope"]["val_loss_std"] > 0


def test_a_rerun_skips_finished_configs_and_resumes_a_half_finished_one(
    folders: tuple[Path, Path],
) -> None:
    assert _run("schedules", folders) == 0
    base = folders[0] / "schedules" / "smoke"
    done, half = base / pair_label(PRESET_LR, False) / "seed_0", base / "cosine" / "seed_0"
    stamp = (done / "summary.json").stat().st_mtime_ns
    # Make cosine's seed half-finished: only its step-2 checkpoint remains, as after a kill at
    # step 3.
    for name in ("summary.json", "status.json", "final.json"):
        (half / name).unlink()
    shutil.rmtree(half / "checkpoints" / "4")
    assert _run("schedules", folders) == 0
    assert (done / "summary.json").stat().st_mtime_ns == stamp
    status = json.loads((half / "status.json").read_text())
    assert status["resumed"] is True and status["exit"] == 0
    assert json.loads((half / "final.json").read_text())["step"] == 4


def test_the_moe_study_matches_active_parameters_and_measures_the_router(
    folders: tuple[Path, Path],
) -> None:
    assert _run("moe", folders) == 0  # the smoke run above: only the report is written again
    out = folders[1] / "moe"
    rows = {
        r["group"]: r for r in map(json.loads, (out / "raw/results.jsonl").read_text().splitlines())
    }
    dense, moe = rows["dense"], rows["moe"]
    # Equal active weights but for the router's d·E (d_model 32, 4 experts, 1 layer); the MoE
    # holds twice the dense MLP's weights (4 experts of half the width).
    assert moe["active_params"] - dense["active_params"] == 32 * 4
    assert moe["flops_per_token"] > dense["flops_per_token"]
    assert moe["num_params"] - dense["num_params"] == 32 * 4 + 3 * 32 * 64
    assert moe["load_max"] >= 1.0 and "load_max" not in dense
    readme = (out / "README.md").read_text()
    assert "| issue #41 |" in readme and "MoE − dense: " in readme


@pytest.mark.parametrize(("study", "seeds"), [("positions", "0"), ("memory", "2")])
def test_seeds_must_be_positive_and_only_for_training_studies(
    study: str, seeds: str, folders: tuple[Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(study, folders, "--seeds", seeds) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"experiments: error: --seeds {seeds}: "), err


def test_the_grpo_study_compares_rl_with_continued_sft_from_a_levelled_start(
    folders: tuple[Path, Path],
) -> None:
    assert _run("grpo", folders) == 0  # the smoke run above: only the report is written again
    out = folders[1] / "grpo"
    rows = {
        r["group"]: r for r in map(json.loads, (out / "raw/results.jsonl").read_text().splitlines())
    }
    start = rows[SFT_LABEL]
    assert start["rule"]["rise_points"] == PLATEAU_RISE and start["plateau"][0] == start["steps"]
    # Every arm starts from the start's checkpoint: the only one the SFT run keeps.
    kept = folders[0] / "grpo/smoke" / SFT_LABEL / "seed_0/checkpoints"
    assert sorted(p.name for p in kept.iterdir() if p.name.isdigit()) == [str(start["steps"])]
    sft, grpo = rows[MORE_SFT_LABEL], rows[GRPO_LABEL]
    # The same updates; only the RL run logs a KL (and its row keeps the largest).
    assert sft["steps"] == grpo["steps"] and "kl_max" not in sft and grpo["kl_max"] >= 0
    assert sft["per_seed"][0]["gain"] == sft["success"] - start["success"]
    readme = (out / "README.md").read_text()
    assert "GRPO − continued SFT: " in readme and "| issue #72 |" in readme
    assert "Verdict: **" in readme
    # The start is the long strings' (its task kept with it), every arm's task the same.
    assert json.loads((kept.parent / START_FILE).read_text())["source"] == TASK
    arm = folders[0] / "grpo/smoke" / GRPO_LABEL / "seed_0/config.yaml"
    assert f"source: {TASK}" in arm.read_text()


def _arm(label: str, successes: list[float], **extra: float) -> Row:
    """An arm's row as `run_grpo` folds it: its seeds' rows (gains over a 90 % start)."""
    return aggregate(
        [{"label": label, "group": label, "seed": i, "success": s, "gain": s - 90.0,
          "steps": 60, **extra} for i, s in enumerate(successes)]  # fmt: skip
    )


def _rows(
    grpo: list[float], levelled: bool = True, clip: float = 0.01, success: float = 90.0
) -> list[Row]:
    start = {"label": "SFT start (step 120)", "group": SFT_LABEL, "success": success,
             "prompts": 400, "steps": 120, "levelled_off": levelled, "plateau": [120, 160],
             "rule": {"rise_points": PLATEAU_RISE, "span_steps": 40}, "in_band": False,
             "measured": {"120": 90.0, "160": 91.0}, "seeds": 1}  # fmt: skip
    return [
        start,
        _arm(GRPO_LABEL, grpo),
        _arm(MORE_SFT_LABEL, [91.0, 92.0, 93.0]),
        _arm(ACTING_LABEL, [95.0, 96.0, 97.0], clip_max=clip, kl_max=0.002),
        _arm(CONTROL_LABEL, [60.0, 70.0, 80.0]),
    ]


@pytest.mark.parametrize(
    ("grpo", "levelled", "start", "verdict", "claim"),
    [
        ([97.0, 98.0, 99.0], True, 90.0, "**RL beats more SFT**", "agrees"),
        ([91.0, 93.0, 95.0], True, 90.0, "**RL does not beat more SFT measurably**", "cannot"),
        ([80.0, 81.0, 82.0], True, 90.0, "**more SFT beats RL**", "disagrees"),
        ([97.0, 98.0, 99.0], False, 90.0, "**cannot tell** — SFT had not", "cannot"),
        # A start near 100 % leaves no room: the task cannot separate the two.
        ([97.0, 98.0, 99.0], True, 96.0, "**cannot tell** — SFT levels off at 96.0 %", "cannot"),
        # A flat stretch at 0 % is a task SFT never learnt, not a plateau to start from.
        ([97.0, 98.0, 99.0], True, 2.0, "**cannot tell** — SFT levels off at 2.0 %", "cannot"),
    ],
)
def test_the_grpo_verdict_weighs_rl_against_continued_sft_with_the_seeds_spread(
    grpo: list[float], levelled: bool, start: float, verdict: str, claim: str
) -> None:
    rows = _rows(grpo, levelled, success=start)
    lines = grpo_conclude(rows, "cpu")
    assert lines[-1].startswith(f"Verdict: {verdict}")
    # GRPO − SFT: the difference of the means, ± sqrt(1² + 1²) (each arm's seeds' std is 1+).
    d = difference(rows[1], rows[2], "success")
    assert f"GRPO − continued SFT: {d.words('.1f', 'points')}" in "\n".join(lines)
    table = "\n".join(verdict_table("grpo", rows))
    assert "| issue #72 |" in table and f"**{claim}" in table.split("| issue #72 |")[1]


@pytest.mark.parametrize(("clip", "acted"), [(0.01, True), (0.0, False)])
def test_the_report_says_whether_clipping_and_kl_acted(clip: float, acted: bool) -> None:
    lines = grpo_conclude(_rows([97.0, 98.0, 99.0], clip=clip), "cpu")
    line = next(x for x in lines if x.startswith("In the μ = "))
    assert ("act in every seed." in line) is acted
    assert ("did not act" in line) is not acted


@pytest.mark.parametrize(
    ("measured", "flat"),
    [
        # Rising, then within 5 points of the best after it from step 110 on.
        ({90: 60.0, 100: 80.0, 110: 93.0, 120: 95.0, 130: 97.0, 140: 96.0}, [110, 120, 130, 140]),
        # A slow climb of 3 points a checkpoint is not a plateau past 5 points in all.
        ({100: 80.0, 110: 83.0, 120: 86.0, 130: 89.0}, [120, 130]),
        # Early zeros do not join a plateau the rise separates from.
        ({10: 0.0, 20: 0.0, 30: 50.0, 40: 52.0}, [30, 40]),
    ],
)
def test_the_plateau_is_the_newest_checkpoints_within_the_rise_of_the_best_after(
    measured: dict[int, float], flat: list[int]
) -> None:
    assert plateau(measured) == flat


def test_a_start_of_the_short_reversal_task_asks_for_a_fresh_study(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The study before #72's second round trained its start on 'reverse' (3-5 letters), where
    # SFT levels off at 100 %: its runs folder is refused in one line, nothing trained or lost.
    sft = tmp_path / "runs/grpo/smoke" / SFT_LABEL / "seed_0"
    (sft / "checkpoints/120").mkdir(parents=True)
    (sft / "config.yaml").write_text("data:\n  source: reverse\n")
    start = {"step": 120, "success": 100.0, "levelled_off": True, "plateau": [120, 200]}
    (sft / START_FILE).write_text(json.dumps(start))
    assert _run("grpo", (tmp_path / "runs", tmp_path / "docs")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'reverse' task, not 'reverse_long'" in err[0], err
    assert "--fresh" in err[0] and sorted(p.name for p in sft.iterdir()) == sorted(
        ["checkpoints", "config.yaml", START_FILE]
    )
    assert not (tmp_path / "docs").exists()
    # A start.json alone (no config.yaml) without its task is the short task's too.
    (sft / "config.yaml").unlink()
    with pytest.raises(StudyError, match="'reverse' task"):
        choose_start(sft, "cpu", 0.0)


def test_a_start_chosen_by_the_band_rule_asks_for_a_fresh_study(tmp_path: Path) -> None:
    (tmp_path / START_FILE).write_text(json.dumps({"step": 76, "success": 28.5, "in_band": True}))
    with pytest.raises(StudyError, match="--fresh"):
        choose_start(tmp_path, "cpu", 0.0)
