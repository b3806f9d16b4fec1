"""The task objects: which task a model kind trains, what a step counts, the names their
validation metrics take, and that the config's loss settings reach tjx-nn's objectives (whose
losses are tested against float64 references in tjx-nn)."""

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

TINY = {"d_model": 16, "num_layers": 1, "num_heads": 2}


@pytest.mark.parametrize(
    ("kind", "name", "unit", "extra"),
    [
        ("gpt2", "lm", "tokens", 0),
        ("llama", "lm", "tokens", 0),
        ("bert", "mlm", "tokens", 1),
        ("vit", "classify", "images", 0),
        ("encdec", "seq2seq", "tokens", 0),
    ],
)
def test_kind_to_task(kind, name, unit, extra):
    task = tasks.for_config(build_config({"model": {"kind": kind}}))
    assert (task.name, task.unit, task.extra_vocab) == (name, unit, extra)
    assert task.objective is nn.objective_of(nn.MODEL_KINDS[kind])  # tjx-nn's, not a copy
    # The trainer's extras: samples and the memory fit are for decoder-only models.
    assert task.writes_samples == task.fits_memory == (name == "lm")
    assert task.bits_per_byte == (name in ("lm", "seq2seq"))  # every token scored


def test_image_task_counts_images_and_names_its_metrics():
    cfg = build_config({"model": {"kind": "vit", "num_classes": 10}, "data": {"batch_size": 8}})
    task = tasks.for_config(cfg)
    assert task.unit == "images" and task.units_per_step(cfg) == 8
    assert not (task.writes_samples or task.bits_per_byte or task.fits_memory)
    out = {"loss": 1.0, "perplexity": 2.7, "top1": 0.5, "top5": 0.9, "top10": 1.0, "num_tokens": 8}
    assert task.metrics(out, cfg) == {"loss": 1.0, "accuracy": 0.5, "num_images": 8, "top5": 0.9}


def test_seq2seq_counts_the_continued_half():
    cfg = build_config({"model": {"kind": "encdec"}, "data": {"seq_len": 10}})
    task = tasks.for_config(cfg)
    assert task.name == "seq2seq" and task.units_per_step(cfg) == cfg.data.batch_size * 6


@pytest.mark.parametrize("chunked", [True, False])
def test_the_configs_loss_settings_reach_tjx_nn(chunked):
    train = {"chunked_ce": chunked, "ce_chunk_size": 4, "z_loss": 1e-2, "mlm_probability": 0.4}
    cfg = build_config({"model": {"kind": "gpt2", **TINY}, "train": train})
    model = nn.build_model(nn_config(cfg.model, 30), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 30, (2, 9)), jnp.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    loss, aux = tasks.loss(model, batch, jax.random.key(0), cfg, deterministic=True)
    want = nn.objective_loss(model, batch, chunked=chunked, chunk_size=4, z_loss=1e-2)
    assert float(loss) == float(want.loss) and set(aux) == {"sum_loss", "num_tokens", "num_correct"}
    assert float(loss) > float(aux["sum_loss"]) / int(aux["num_tokens"])  # the z-loss is in


def test_masked_lm_eval_masks_with_the_runs_fixed_key():
    """The trainer's validation masks as the evaluator does: tjx-nn's key of the run's seed."""
    cfg = build_config({"model": {"kind": "bert", **TINY}, "train": {"seed": 3}})
    model = nn.build_model(nn_config(cfg.model, 41), rngs=nnx.Rngs(0))
    rng = np.random.default_rng(2)
    batch = {
        "inputs": jnp.asarray(rng.integers(0, 40, (2, 12)), jnp.int32),
        "segment_ids": jnp.ones((2, 12), jnp.int32),
    }
    logits, labels = tasks.eval_logits(model, batch, cfg)
    key = nn.eval_mask_key(3)
    want, want_labels = nn.objective_logits(model, batch, key=key, mask_prob=0.15)
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_array_equal(logits, want)
