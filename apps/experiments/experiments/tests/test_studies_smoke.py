"""Every study's smoke version (two configs, a few steps) runs and writes its report; a rerun
skips finished configs and continues a half-finished one from its checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from experiments.cli import main
from experiments.registry import STUDIES
from experiments.stability import PRESET_LR, pair_label


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
    # Two configs; the side-by-side has a row per side of each, a sweep one point past its edge.
    assert len(rows) == (4 if study.kind == "nanogpt" else 3 if study.sweep else 2)
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
