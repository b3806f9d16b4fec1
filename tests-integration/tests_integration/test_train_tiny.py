"""The `tiny` config trains end to end as a separate process and its validation loss falls.

Threshold: byte-level Shakespeare starts at ln(257) ≈ 5.55 nats/byte; after 120 steps of the tiny
GPT (batch 16 × 64 bytes) the validation loss must be below 2.9 nats/byte, and every evaluation
must be lower than the one before it.
"""

from __future__ import annotations

import itertools
import json
import math

import pytest
import yaml

from tests_integration._helpers_apps import app_env, check_ok, final, read_log, train, val_losses

VAL_LOSS_THRESHOLD = 2.9


def test_tiny_trains_end_to_end(tmp_path):
    run_dir = tmp_path / "tiny"
    sets = [
        "train.steps=120",
        "data.seq_len=64",
        "data.batch_size=16",
        "optimizer.schedule.warmup_steps=10",
        "train.eval_every=40",
        "train.eval_batches=4",
        "train.sample_every=120",
        "train.checkpoint_every=60",
        "sampling.max_new_tokens=40",
    ]
    # Run-bound (120 steps): the trainer's steps compile at LLVM's -O1, not the tests' -O0
    # (pants.toml), as the other long runs' batches do: 137 -> 80 CPU s (2026-11-27).
    env = app_env()
    flags = [f for f in env["XLA_FLAGS"].split() if "optimization_level" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, "--xla_backend_optimization_level=1"])
    proc = train(tmp_path, str(run_dir), sets, env=env)
    check_ok(proc)
    out = proc.stdout
    assert "running on CPU" in out and "done: 120 steps" in out
    # The first line names the preset and only what the command changes; config.yaml keeps all.
    assert out.startswith("config: preset tiny; changed: data.seq_len=64, optimizer.schedule.")
    assert "# effective config" not in out
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train"]["steps"] == 120 and saved["data"]["seq_len"] == 64
    for name in ("metrics.jsonl", "loss_curve.png", "final.json", "model.json", "data.json"):
        assert (run_dir / name).is_file(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit()) == [
        "120",
        "60",
    ]
    samples = sorted((run_dir / "samples").glob("step_*.txt"))
    assert [p.name for p in samples] == ["step_0000120.txt"]
    assert "ROMEO:" in samples[0].read_text()
    vals = val_losses(run_dir)
    assert sorted(vals) == [40, 80, 120]
    losses = [vals[s] for s in sorted(vals)]
    assert losses[0] < math.log(257)
    assert all(b < a for a, b in itertools.pairwise(losses)), losses
    assert losses[-1] < VAL_LOSS_THRESHOLD, losses
    summary = final(run_dir)
    assert summary["step"] == 120 and summary["interrupted_by"] is None
    assert abs(summary["val_loss"] - losses[-1]) < 1e-9
    record = next(r for r in read_log(run_dir) if r["step"] == 120 and "val_loss" in r)
    for key in ("val_perplexity", "val_bits_per_byte", "val_top1", "val_top5", "val_top10"):
        assert key in record
    assert record["val_top1"] <= record["val_top5"] <= record["val_top10"] <= 1.0
    # The training loss in bits per byte too (byte tokens: about one byte per token).
    train_rec = next(r for r in read_log(run_dir) if r["step"] == 120 and "loss" in r)
    bpb = (
        train_rec["loss"]
        / math.log(2)
        / json.loads((run_dir / "data.json").read_text())["bytes_per_token"]
    )
    assert train_rec["bits_per_byte"] == pytest.approx(bpb, rel=1e-9)
