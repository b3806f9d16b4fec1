"""``python -m eval --checkpoint`` of a DPO run (``data.format: preference``) prints DPO's held-out
metrics, the trainer's own ``val_*`` numbers: a tiny ``dpo_tiny`` run of a few steps is trained
here (through the trainer's public face) and its last validation record is compared with the
evaluator's, for a full fine-tune (the reference restored from the checkpoint's frozen copy) and a
LoRA run (the reference is the base with the adapters off)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from eval.cli import main
from eval.heldout import evaluate_run
from eval.preference import reference_params, settings
from eval.runs import RunError, load_run
from trainer import plan_argv
from trainer import run as train

EVAL_BATCH, EVAL_BATCHES = 4, 2
BETA = 0.1
SETS = [
    "model.d_model=32",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=64",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
    "data.batch_size=4",
    f"eval.batch_size={EVAL_BATCH}",
    "train.steps=6",
    "train.log_every=6",
    "train.eval_every=6",
    f"train.eval_batches={EVAL_BATCHES}",
    "train.checkpoint_every=6",
    "train.sample_every=0",
    "optimizer.schedule.warmup_steps=0",
    f"preference.beta={BETA}",
    # a large step, so the policy moves off its reference in a few steps (margins well off 0)
    "optimizer.schedule.peak_lr=0.01",
]
#: Every DPO number the trainer's validation logs (``val_<key>``).
KEYS = [
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "logps/accuracies",
    "pairs",
]


def _dpo_run(tmp: Path, name: str, *sets: str) -> Path:
    run = tmp / name
    argv = ["--config", "dpo_tiny", "--run-dir", str(run)]
    for item in [*SETS, f"data.cache_dir={tmp / 'cache'}", *sets]:
        argv += ["--set", item]
    assert train(plan_argv(argv)) == 0
    return run


def _last_validation(run: Path) -> dict[str, float]:
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in records if "val_loss" in r][-1]
    return {k: float(last[f"val_{k}"]) for k in KEYS}


def _assert_the_trainers(run: Path) -> dict[str, float]:
    logged = _last_validation(run)
    ours = evaluate_run(load_run(run), batch_size=EVAL_BATCH, max_batches=EVAL_BATCHES)
    assert sorted(ours) == sorted(KEYS)
    # A reward is β × (log π - log π_ref) of float32 sums near -23, so it is exact only to
    # β × one float32 step of those sums (the trainer adds its rows on 8 devices, in another
    # order): 2 × 0.1 × 1.9e-6 ≈ 3.8e-7 absolute. Every other number: relative 1e-5.
    logp = max(abs(logged["logps/chosen"]), abs(logged["logps/rejected"]))
    rewards = 2 * BETA * float(np.spacing(np.float32(logp)))
    for key in KEYS:
        slack = rewards if key.startswith("rewards/") and key != "rewards/accuracies" else 0.0
        assert ours[key] == pytest.approx(logged[key], rel=1e-5, abs=slack), key
    # the policy moved off its reference: the comparison is not of zeros
    assert abs(logged["rewards/margins"]) > 1e-3
    return logged


@pytest.fixture(scope="module")
def tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dpo")


def test_a_full_fine_tune_scores_as_the_trainer_against_its_checkpointed_reference(tmp, capsys):
    run = _dpo_run(tmp, "full")
    logged = _assert_the_trainers(run)

    argv = ["--checkpoint", str(run), "--batch-size", str(EVAL_BATCH), "--attention-png", "none"]
    assert main([*argv, "--max-batches", str(EVAL_BATCHES)]) == 0
    out = capsys.readouterr().out
    row = next(x for x in out.splitlines() if x.startswith("rewards/accuracies "))
    assert float(row.split()[-1]) == pytest.approx(logged["rewards/accuracies"], abs=1e-4)
    assert f"{round(logged['pairs'])} held-out preference pairs" in out
    assert "its frozen copy" in out


def test_a_lora_run_scores_as_the_trainer_against_its_adapters_off(tmp):
    run = _dpo_run(tmp, "lora", "lora.enabled=true", "lora.rank=4", "lora.dropout=0.0")
    assert load_run(run).lora is not None
    _assert_the_trainers(run)


def test_a_pair_runs_refusals_are_one_line_each(tmp, run_dir, capsys):
    run = tmp / "lora"  # the LoRA run's checkpoint holds no frozen reference
    if not run.exists():
        run = _dpo_run(tmp, "lora", "lora.enabled=true", "lora.rank=4", "lora.dropout=0.0")
    loaded = load_run(run)
    with pytest.raises(RunError, match="holds no DPO reference model"):
        reference_params(dataclasses.replace(loaded, lora=None))
    hand_edited = {**loaded.config, "preference": {"beta": 0}}
    with pytest.raises(RunError, match="its preference section is not tjx.nn's PreferenceConfig"):
        settings(dataclasses.replace(loaded, config=hand_edited))
    assert main(["--checkpoint", str(run), "--data", "arithmetic"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "leave --data out" in err
    # DPO's loss beside a text run's cross-entropy would read as one number: refused.
    assert main(["--compare", str(run), str(run_dir[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "compare preference (DPO) runs with each other" in err
