"""The evaluator reads a trained tiny checkpoint: metrics, samples, comparison, attention PNG."""

from __future__ import annotations

import re

import pytest

from tests_integration._helpers_apps import check_ok, final, run_app, trained_small_run


def _metric(text: str, name: str, column: int = 0) -> float:
    line = next(ln for ln in text.splitlines() if ln.split() and ln.split()[0] == name)
    return float(line.split()[1 + column])


def test_eval_reads_a_trained_tiny_checkpoint(tmp_path):
    run = trained_small_run(tmp_path)
    png = tmp_path / "attn.png"
    # The trainer's held-out batches: eval.batch_size=8 × train.eval_batches=2.
    args = ["--checkpoint", str(run), "--batch-size", "8", "--max-batches", "2"]
    proc = run_app(
        "eval",
        [*args, "--generate", "ROMEO:", "--max-new-tokens", "12", "--attention-png", str(png)],
        tmp_path,
    )
    check_ok(proc)
    assert "Warning:" not in proc.stderr, proc.stderr  # no Python warning text (#71)
    out = proc.stdout
    assert f"run {run} at step 30" in out
    for name in ("loss", "perplexity", "bits_per_token", "bits_per_byte", "top1", "top5", "top10"):
        _metric(out, name)
    # Same checkpoint, same batches → the trainer's final validation loss.
    assert _metric(out, "loss") == pytest.approx(final(run)["val_loss"], rel=1e-5)
    assert _metric(out, "top1") <= _metric(out, "top5") <= _metric(out, "top10") <= 1.0
    assert re.search(r"^ROMEO:", out, re.M)
    assert png.is_file() and png.stat().st_size > 1000
    assert re.search(r"attention distance per layer \(mean tokens\): [\d.]+, [\d.]+ →", out)


def test_eval_compare_and_other_data(tmp_path):
    run = trained_small_run(tmp_path)
    text = tmp_path / "held.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 40)
    proc = run_app(
        "eval",
        [
            "--compare",
            str(run),
            str(run),
            "--data",
            str(text),
            "--max-batches",
            "1",
            "--batch-size",
            "2",
        ],
        tmp_path,
    )
    check_ok(proc)
    header = next(ln.split() for ln in proc.stdout.splitlines() if ln.startswith("metric"))
    assert header == ["metric", "small_run@30", "small_run@30"]
    assert _metric(proc.stdout, "loss", 0) == _metric(proc.stdout, "loss", 1)
