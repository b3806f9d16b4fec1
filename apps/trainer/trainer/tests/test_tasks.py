"""The task objects: which task a model kind trains, their losses against float64 references, and
the names their validation metrics take."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn
from trainer import tasks
from trainer.config import build_config
from trainer.model_build import nn_config


def _np_ce(logits, labels):
    """Per-row cross-entropy in float64 over rows whose label is not -100: (sum, count)."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    keep = labels != -100
    top = logits.max(-1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    return float((logz - picked)[keep].sum()), int(keep.sum())


@pytest.mark.parametrize(
    ("kind", "name", "unit", "extra"),
    [("gpt2", "lm", "tokens", 0), ("llama", "lm", "tokens", 0), ("bert", "mlm", "tokens", 1)],
)
def test_kind_to_task(kind, name, unit, extra):
    task = tasks.for_config(build_config({"model": {"kind": kind}}))
    assert (task.name, task.unit, task.extra_vocab) == (name, unit, extra)


def test_image_task_counts_images_and_names_its_metrics():
    cfg = build_config({"model": {"kind": "vit", "num_classes": 10}, "data": {"batch_size": 8}})
    task = tasks.for_config(cfg)
    assert task.unit == "images" and task.units_per_step(cfg) == 8
    assert not (task.writes_samples or task.bits_per_byte or task.fits_memory)
    out = {"loss": 1.0, "perplexity": 2.7, "top1": 0.5, "top5": 0.9, "top10": 1.0, "num_tokens": 8}
    assert task.metrics(out, cfg) == {"loss": 1.0, "accuracy": 0.5, "num_images": 8, "top5": 0.9}


def test_masked_lm_loss_is_the_masked_tokens_cross_entropy():
    cfg = build_config({"model": {"kind": "bert", "d_model": 16, "num_layers": 1, "num_heads": 2}})
    model = nn.build_model(nn_config(cfg.model, 41), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(3)
    batch = {
        "inputs": jnp.asarray(rng.integers(0, 40, (4, 12)), jnp.int32),
        "segment_ids": jnp.asarray([[1] * 12, [1] * 6 + [2] * 6, [1] * 9 + [0] * 3, [1] * 12]),
    }
    key = jax.random.key(11)
    loss, aux = tasks.MaskedLM().loss(model, batch, key, cfg, deterministic=True)
    inputs, labels = nn.mlm_mask(
        batch["inputs"],
        key,
        mask_id=40,
        vocab_size=40,
        mask_prob=cfg.train.mlm_probability,
        special_mask=batch["segment_ids"] <= 0,
    )
    total, count = _np_ce(model(inputs, attention_mask=batch["segment_ids"]), labels)
    assert count > 0 and int(aux["num_tokens"]) == count
    assert float(aux["sum_loss"]) == pytest.approx(total, rel=1e-5)
    assert float(loss) == pytest.approx(total / count, rel=1e-5)


def test_classify_loss_is_the_images_cross_entropy():
    cfg = build_config({"model": {"kind": "vit", "d_model": 16, "num_layers": 1, "num_heads": 2}})
    model = nn.build_model(nn_config(cfg.model, 2), rngs=nnx.Rngs(1))
    rng = np.random.default_rng(4)
    size = cfg.model.image_size
    batch = {
        "images": jnp.asarray(rng.random((6, size, size, 1)), jnp.float32),
        "labels": jnp.asarray(rng.integers(0, 10, (6,)), jnp.int32),
    }
    loss, aux = tasks.Classify().loss(model, batch, jax.random.key(0), cfg, deterministic=True)
    logits, labels = tasks.Classify().eval_logits(model, batch, cfg)
    total, count = _np_ce(logits, labels)
    assert int(aux["num_tokens"]) == count == 6
    assert float(loss) == pytest.approx(total / 6, rel=1e-5)
    want_correct = int((np.asarray(logits).argmax(-1) == np.asarray(labels)).sum())
    assert int(aux["num_correct"]) == want_correct


def test_seq2seq_continues_the_first_half_of_each_window():
    """The loss is the decoder's cross-entropy on the window's second half, given the first half
    to the encoder (float64 reference through the model's own forward pass)."""
    cfg = build_config(
        {
            "model": {"kind": "encdec", "d_model": 16, "num_layers": 1, "num_heads": 2},
            "data": {"seq_len": 10},
            "train": {"chunked_ce": False},
        }
    )
    task = tasks.for_config(cfg)
    assert task.name == "seq2seq" and task.units_per_step(cfg) == cfg.data.batch_size * 6
    model = nn.build_model(nn_config(cfg.model, 30), rngs=nnx.Rngs(2))
    rng = np.random.default_rng(5)
    tokens = rng.integers(0, 30, (3, 11)).astype(np.int32)
    seg = np.ones((3, 10), np.int32)
    seg[2, 8:] = 0  # padding at the end of one row
    targets = np.where(seg > 0, tokens[:, 1:], -100).astype(np.int32)
    batch = {"inputs": jnp.asarray(tokens[:, :-1]), "targets": jnp.asarray(targets)}
    batch["segment_ids"] = jnp.asarray(seg)
    loss, aux = task.loss(model, batch, jax.random.key(0), cfg, deterministic=True)
    logits = model(
        batch["inputs"][:, :5],
        batch["inputs"][:, 4:],
        src_segment_ids=batch["segment_ids"][:, :5],
        tgt_segment_ids=batch["segment_ids"][:, 4:],
    )
    total, count = _np_ce(logits, targets[:, 4:])
    assert count == 3 * 6 - 2 and int(aux["num_tokens"]) == count
    assert float(loss) == pytest.approx(total / count, rel=1e-5)
    eval_logits, labels = task.eval_logits(model, batch, cfg)
    np.testing.assert_allclose(eval_logits, logits, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, targets[:, 4:])
