"""``--replay RUN`` of the fine-tuning objectives (#73): an SFT run (``data.format: chat``), a
DPO run started from it (``data.format: preference``, its reference the SFT weights, restored
from the DPO run's checkpoint) and a GRPO run (``data.format: prompts``, its rollouts sampled
again with the run's keys) replayed bit for bit against their logged losses, with the probes
that apply to their batches; a probe that does not apply is one line, exit 2.

Tiny shapes on CPU: a one-layer Llama of width 16 on the presets' generated tasks.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import trainer.step.grpo as grpo
from tjx.metrics import read_jsonl
from trainer.cli import main

#: Both runs' shapes and settings: every step logged, a checkpoint every 4 of 6 steps.
SETS = [
    "model.d_model=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.num_kv_heads=1",
    "model.mlp.dim=32",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=6",
    "train.checkpoint_every=4",
    "train.log_every=1",
    "train.eval_every=0",
    "train.sample_every=0",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def _train(root: Path, preset: str, name: str, *sets: str, init_from: Path | None = None) -> Path:
    argv = ["--config", preset, "--run-dir", str(root / name)]
    for item in [*SETS, f"data.cache_dir={root / 'cache'}", *sets]:
        argv += ["--set", item]
    argv += [] if init_from is None else ["--init-from", str(init_from)]
    assert main(argv) == 0
    return root / name


def _logged(run: Path) -> dict[int, dict[str, float]]:
    return {r["step"]: r for r in read_jsonl(run / "metrics.jsonl") if "loss" in r}


def _norms_add_up(values: dict[str, dict[str, float]], run: dict[str, float]) -> None:
    """The layers' norms are the run's logged global ones cut up (float32 sums, rtol 1e-5)."""
    for probe, metric in (("grad_norms", "grad_norm"), ("update_norms", "update_norm")):
        total = np.sqrt(sum(v**2 for v in values[probe].values()))
        assert total == pytest.approx(run[metric], rel=1e-5), probe


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 steps of SFT on chat rows (sft_tiny), checkpoints at 4 and 6."""
    return _train(tmp_path_factory.mktemp("sft"), "sft_tiny", "sft")


def test_an_sft_replay_is_bit_exact_with_the_probes_of_a_chat_batch(
    sft_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps 5–6 from step 4's checkpoint replay bit for bit; the default probes are those that
    apply to a chat batch (no ``documents``): the layers' norms add up to the logged ones, and
    each row's mean loss over its assistant tokens averages, weighted by them, to the loss."""
    capsys.readouterr()
    assert main(["--replay", str(sft_run), "--steps", "5:6"]) == 0
    said = capsys.readouterr().out
    assert "replay: restored step 4" in said
    assert "faithful: 2 logged losses replayed bit for bit" in said
    folder = sft_run / "replay-5-6"
    values = json.loads((folder / "probes.json").read_text())["steps"]
    logged = _logged(sft_run)
    for step in (5, 6):
        probed, run = values[str(step)], logged[step]
        assert probed["loss"] == probed["logged"] == run["loss"]  # bit for bit
        _norms_add_up(probed, run)
        assert list(probed["activation_max"]) == ["layer 0"]
        assert np.isfinite(probed["attention_logit_max"]["layer 0"])
        assert len(probed["sequence_loss"]) == 8
    report = (folder / "report.md").read_text()
    assert "### Tokens with the largest loss" in report
    assert "documents (" not in report and "### Documents behind the loss" not in report


def test_a_killed_sft_run_replays_from_its_start(
    sft_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Killed after step 6 was logged, before its checkpoint: steps 1–6 replay from the run's
    start (step 4's checkpoint gone too) bit for bit."""
    run = tmp_path / "run"
    shutil.copytree(sft_run, run)
    for step in ("4", "6"):
        shutil.rmtree(run / "checkpoints" / step)
    (run / "final.json").unlink()
    capsys.readouterr()
    argv = ["--replay", str(run), "--steps", "1:6", "--probe", "grad_norms", "--out",
            str(tmp_path / "report")]  # fmt: skip
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "replay: from the run's start (step 0)" in said
    assert "faithful: 6 logged losses replayed bit for bit" in said


def test_a_probe_that_does_not_apply_to_a_chat_batch_is_one_line(
    sft_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["--replay", str(sft_run), "--steps", "5:6", "--probe", "documents", "--out",
            str(tmp_path / "report")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "--probe: documents does not apply to SFT (data.format chat)" in err
    assert "choose from grad_norms, update_norms, activations, attention, tokens" in err
    assert not (tmp_path / "report").exists()


@pytest.fixture(scope="module")
def dpo_run(sft_run: Path) -> Path:
    """6 steps of DPO on preference pairs from the SFT run's weights (the reference), with its
    tokenizer; checkpoints at 4 and 6."""
    tokenizer = json.loads((sft_run / "data.json").read_text())["tokenizer"]
    sets = (f"data.tokenizer={tokenizer}", "optimizer.schedule.peak_lr=2e-3")
    return _train(sft_run.parent, "dpo_tiny", "dpo", *sets, init_from=sft_run)


def test_a_dpo_replay_restores_its_reference_and_is_bit_exact(
    dpo_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps 5–6 from step 4's checkpoint replay bit for bit: the policy and its frozen reference
    (the SFT weights, which the replay does not load from the SFT run: the checkpoint's) as the
    run had them. The default probes are the gradient and update norms of the DPO loss; they add
    up to the logged norms."""
    logged = _logged(dpo_run)
    # the policy has left its reference: a replay on a fresh reference would not reproduce these
    assert logged[5]["loss"] != pytest.approx(np.log(2), abs=1e-4)
    capsys.readouterr()
    assert main(["--replay", str(dpo_run), "--steps", "5:6"]) == 0
    said = capsys.readouterr().out
    assert "replay: restored step 4" in said
    assert "faithful: 2 logged losses replayed bit for bit" in said
    values = json.loads((dpo_run / "replay-5-6" / "probes.json").read_text())["steps"]
    for step in (5, 6):
        probed, run = values[str(step)], logged[step]
        assert probed["loss"] == probed["logged"] == run["loss"]
        assert set(probed) == {"loss", "logged", "grad_norms", "update_norms"}
        _norms_add_up(probed, run)


def test_a_token_probe_of_a_dpo_run_is_one_line(
    dpo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    argv = ["--replay", str(dpo_run), "--steps", "5:6", "--probe", "grad_norms,tokens",
            "--out", str(tmp_path / "report")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "--probe: tokens does not apply to DPO (data.format preference)" in err
    assert err.endswith("choose from grad_norms, update_norms")


@pytest.fixture(scope="module")
def grpo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 steps of GRPO from random weights (grpo_tiny): 4 prompts of 4 completions a step, the
    length reward (which varies in a group: the advantages are not all 0) and a KL term (beta),
    so that each loss depends on the completions sampled; checkpoints at 4 and 6."""
    sets = ("data.batch_size=16", "grpo.group_size=4", "grpo.max_new_tokens=8",
            "grpo.rewards=[length]", "grpo.beta=0.04", "optimizer.schedule.warmup_steps=1",
            "optimizer.schedule.peak_lr=1e-2")  # fmt: skip
    return _train(tmp_path_factory.mktemp("grpo"), "grpo_tiny", "grpo", *sets)


def test_a_grpo_replay_samples_the_rollouts_again_and_is_bit_exact(
    grpo_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Steps 5–6 from step 4's checkpoint and 1–2 from the run's start replay bit for bit: each
    step's rollout sampled again with the step's key from the state it starts from, scored, and
    the update made on it. The default probes (gradient and update norms of the GRPO loss) add
    up to the logged norms."""
    logged = _logged(grpo_run)
    assert all(logged[s]["loss"] != 0.0 for s in range(1, 7))  # the completions count
    capsys.readouterr()
    assert main(["--replay", str(grpo_run), "--steps", "5:6"]) == 0
    said = capsys.readouterr().out
    assert "replay: restored step 4" in said
    assert "faithful: 2 logged losses replayed bit for bit" in said
    values = json.loads((grpo_run / "replay-5-6" / "probes.json").read_text())["steps"]
    for step in (5, 6):
        probed, run = values[str(step)], logged[step]
        assert probed["loss"] == probed["logged"] == run["loss"]
        assert set(probed) == {"loss", "logged", "grad_norms", "update_norms"}
        _norms_add_up(probed, run)
    argv = ["--replay", str(grpo_run), "--steps", "1:2", "--out", str(tmp_path / "start")]
    assert main(argv) == 0
    said = capsys.readouterr().out
    assert "replay: from the run's start (step 0)" in said
    assert "faithful: 2 logged losses replayed bit for bit" in said


def test_a_grpo_replay_with_other_rollouts_names_the_first_step_that_differs(
    grpo_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rollouts are part of the replayed step: sampled under another key stream than the
    run's, step 5's completions differ, and so does its loss: one line naming step 5, exit 2."""
    monkeypatch.setattr(grpo, "ROLLOUT_STREAM", grpo.ROLLOUT_STREAM + 1)
    capsys.readouterr()
    argv = ["--replay", str(grpo_run), "--steps", "5:6", "--out", str(tmp_path / "other")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0, err
    assert "--replay: step 5 differs from the run: its loss is " in err
