"""The masked-LM, image and encoder-decoder runs end to end: train a few steps, then evaluate.

The masked-LM and image runs call the trainer's ``main`` in this process (`call_train`), as the
evaluator's is called (`call_app`): the same command line and printed lines, without another
interpreter to start and import; the encoder-decoder run is a trainer process (the command as a
shell runs it).

``bert_tiny``'s run used to crash the evaluator (it called BERT with a decoder's arguments) and
``vit_digits``'s asked the Hugging Face hub for a tokenizer called "none"; the image run logged
language-model names (perplexity, tokens/s, top-10 of 10 classes).
"""

from __future__ import annotations

import json

import pytest
import yaml

from tests_integration._helpers_apps import call_app, call_train, check_ok, read_log, train


def read_config(run_dir):
    """The run's resolved config (config.yaml)."""
    return yaml.safe_load((run_dir / "config.yaml").read_text())


FEW = [
    "train.steps=6",
    "train.eval_every=3",
    "train.eval_batches=2",
    "train.checkpoint_every=0",
    "train.log_every=1",
    "optimizer.schedule.warmup_steps=1",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


def test_bert_tiny_trains_and_evaluates_on_masked_tokens(tmp_path):
    sets = [*FEW, "model.d_model=32", "model.mlp.dim=64", "data.seq_len=32", "data.batch_size=8"]
    check_ok(call_train(tmp_path, "bert", [*sets, "model.max_seq_len=32"], config="bert_tiny"))
    log = read_log(tmp_path / "bert")
    val = [r for r in log if "val_loss" in r]
    assert [r["step"] for r in val] == [3, 6] and val[-1]["val_num_tokens"] > 0
    assert "val_bits_per_byte" not in val[-1]  # only the masked tokens are scored
    argv = [
        "--checkpoint",
        "bert",
        "--max-batches",
        "2",
        "--batch-size",
        "16",
    ]  # as eval.batch_size
    proc = call_app("eval", argv, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "held-out masked tokens" in proc.stdout and "perplexity" in proc.stdout
    # The evaluator masks as the trainer's evaluation does: on the same two batches, one loss.
    loss_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("loss "))
    assert abs(float(loss_line.split()[1]) - val[-1]["val_loss"]) < 1e-4


def test_vit_digits_logs_image_metrics_and_the_evaluator_prints_the_same(tmp_path):
    """One held-out loop (tjx-metrics' `evaluate_heldout` of tjx-nn's objective logits): the
    evaluator's numbers of the last checkpoint on the trainer's batches are its val_* ones."""
    from eval import evaluate_run, load_run

    check_ok(call_train(tmp_path, "vit", FEW, config="vit_digits"))
    log = read_log(tmp_path / "vit")
    steps = [r for r in log if "loss" in r and "val_loss" not in r]
    assert all("images_per_s" in r and "tokens_per_s" not in r for r in steps)
    val = [r for r in log if "val_loss" in r][-1]
    assert val["step"] == 6 and 0.0 <= val["val_accuracy"] <= 1.0
    for lm_only in ("val_perplexity", "val_bits_per_token", "val_top10"):
        assert lm_only not in val
    assert json.loads((tmp_path / "vit" / "data.json").read_text())["tokenizer"] is None
    size = read_config(tmp_path / "vit")["eval"]["batch_size"]
    got = evaluate_run(load_run(tmp_path / "vit"), batch_size=size, max_batches=2)
    assert sorted(f"val_{k}" for k in got) == sorted(k for k in val if k.startswith("val_"))
    assert got["num_images"] == val["val_num_images"] == 2 * size
    # Counts of the same images: identical. The loss: the same float32 sums, added across the
    # trainer's 8 devices in another order (the 8-device mesh), so to 1e-6 relative.
    assert got["accuracy"] == val["val_accuracy"] and got["top5"] == val["val_top5"]
    assert got["loss"] == pytest.approx(val["val_loss"], rel=1e-6)
    argv = ["--checkpoint", "vit", "--batch-size", str(size), "--max-batches", "2"]
    proc = call_app("eval", argv, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = {ln.split()[0]: ln.split()[1] for ln in proc.stdout.splitlines() if ln.strip()}
    assert printed["accuracy"] == f"{val['val_accuracy']:.4f}"
    assert printed["top5"] == f"{val['val_top5']:.4f}"
    assert abs(float(printed["loss"]) - val["val_loss"]) <= 5e-5  # printed to 4 decimals
    assert f"{2 * size} held-out images: the first 2 batches of {size}" in proc.stdout


def test_the_encoder_decoder_trains_from_the_command_line(tmp_path):
    sets = [
        *FEW,
        "model.kind=encdec",
        "model.d_model=32",
        "model.num_layers=1",
        "model.mlp.dim=64",
        "model.max_seq_len=32",
        "data.seq_len=32",
        "data.batch_size=8",
    ]
    check_ok(train(tmp_path, "encdec", sets))
    log = read_log(tmp_path / "encdec")
    losses = [r["loss"] for r in log if "loss" in r and "val_loss" not in r]
    assert len(losses) == 6 and losses[-1] < losses[0]
    val = [r for r in log if "val_loss" in r][-1]
    assert val["val_num_tokens"] == 2 * 16 * 17  # eval_batches × eval.batch_size × (32 - 16 + 1)
    model = json.loads((tmp_path / "encdec" / "model.json").read_text())
    assert model["class"] == "EncoderDecoderConfig"
    argv = ["--checkpoint", "encdec", "--max-batches", "2", "--batch-size", "16"]
    argv += ["--generate", "ROMEO:", "--max-new-tokens", "5", "--temperature", "0"]
    proc = call_app("eval", argv, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "544 held-out tokens continuing the first half of their window" in proc.stdout
    # The evaluator scores the continuation as the trainer's evaluation does: one loss.
    loss_line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("loss "))
    assert abs(float(loss_line.split()[1]) - val["val_loss"]) < 1e-4
    assert "bits_per_byte" in proc.stdout  # every continued token is scored
    sample = proc.stdout.split("--- sample (prompt 'ROMEO:'; greedy; seed 0; 5 new tokens) ---\n")
    assert sample[1].startswith("ROMEO:")  # the prompt, then what the decoder continued
