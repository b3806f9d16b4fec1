"""An image run (ViT on the digits) is evaluated as the trainer's validation scores it: held-out
accuracy and top-k, against a float64 reference of the same batches."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from eval.cli import main
from tjx import ckpt, data, nn

FIELDS = {
    "image_size": 8,
    "patch_size": 4,
    "num_channels": 1,
    "num_classes": 10,
    "d_model": 16,
    "num_layers": 1,
    "num_heads": 2,
    "mlp": {"dim": 32},
    "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
}


@pytest.fixture()
def vit_run(tmp_path):
    """A hand-made image run: what the trainer writes for ``vit_digits`` (eval.top_k [1, 3])."""
    run = tmp_path / "vit"
    run.mkdir()
    (run / "config.yaml").write_text(
        "train: {eval_batches: 3}\neval: {batch_size: 32, top_k: [1, 3]}\n"
    )
    (run / "model.json").write_text(json.dumps({"class": "ViTConfig", "fields": FIELDS}))
    (run / "data.json").write_text(json.dumps({"source": "digits", "tokenizer": None}))
    config = nn.config_from_dict({"class": "ViTConfig", "fields": {**FIELDS, "precision": "fp32"}})
    model = nn.ViT(config, rngs=nnx.Rngs(7))  # the model.json as the evaluation reads it
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(4, state={"params": params, "step": np.int32(4)}, config={}, force=True)
    manager.close()
    return run, model


def _metric(text, name):
    line = next(ln for ln in text.splitlines() if ln.split() and ln.split()[0] == name)
    return float(line.split()[1].replace(",", ""))


def _reference(model, batches):
    """float64 mean cross-entropy, top-1 and top-3 accuracy over the images of ``batches``."""
    logits = np.concatenate([np.asarray(model(b["images"]), np.float64) for b in batches])
    labels = np.concatenate([b["labels"] for b in batches])
    top = logits.max(-1)
    lse = np.log(np.exp(logits - top[:, None]).sum(-1)) + top
    loss = (lse - logits[np.arange(len(labels)), labels]).mean()
    order = np.argsort(-logits, axis=-1)
    hits = {k: (order[:, :k] == labels[:, None]).any(-1).mean() for k in (1, 3)}
    return loss, hits, len(labels)


@pytest.mark.parametrize("written", [None, "none"])  # "none": data.json of older image runs
def test_an_image_run_prints_accuracy_and_its_top_k(vit_run, capsys, written):
    run, model = vit_run
    info = json.loads((run / "data.json").read_text())
    (run / "data.json").write_text(json.dumps({**info, "tokenizer": written}))
    assert main(["--checkpoint", str(run), "--batch-size", "32", "--max-batches", "3"]) == 0
    out = capsys.readouterr().out
    images = data.prepare_image_run_data("digits").validation_batches(32, 3)
    loss, hits, count = _reference(model, list(images))
    # The table prints 4 decimals: a loss within that, accuracies of 96 images exactly so.
    assert _metric(out, "loss") == pytest.approx(loss, abs=5e-5)
    assert _metric(out, "accuracy") == pytest.approx(hits[1], abs=5e-5)
    assert _metric(out, "top3") == pytest.approx(hits[3], abs=5e-5)
    assert _metric(out, "num_images") == count == 96
    for lm_only in ("perplexity", "bits_per_token", "bits_per_byte", "top1", "top5", "top10"):
        assert f"\n{lm_only} " not in out
    assert "(96 held-out images: the first 3 batches of 32)" in out


def test_the_whole_split_is_scored_by_default_and_the_note_says_how_val_differs(vit_run, capsys):
    run, _ = vit_run
    assert main(["--checkpoint", str(run), "--batch-size", "40"]) == 0
    out = capsys.readouterr().out
    assert _metric(out, "num_images") == 360  # every batch full: 9 × 40 of the 360 images
    assert "its first 3 batches of 32 images, so they differ a little" in out


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--data", "shakespeare"], "--data: an image run is scored on its own held-out images"),
        (["--generate", "x"], "--generate: needs a decoder or encoder-decoder run, not an image"),
        (["--batch-size", "400"], "--batch-size: 400 is more than the 360 held-out images"),
    ],
)
def test_what_an_image_run_cannot_do_is_one_line(vit_run, capsys, extra, needle):
    run, _ = vit_run
    assert main(["--checkpoint", str(run), "--max-batches", "1", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eval: error: {needle}") and "Traceback" not in err


def test_an_image_run_of_another_source_names_its_data_file(vit_run, capsys):
    run, _ = vit_run
    (run / "data.json").write_text(json.dumps({"source": "cifar", "tokenizer": None}))
    assert main(["--checkpoint", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"eval: error: --checkpoint: {str(run / 'data.json')!r}: ")
    assert "'digits'" in err
