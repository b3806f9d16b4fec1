"""The objective a model kind trains (tjx-nn's), what a step counts, the names the validation
metrics take, and that the config's loss settings reach tjx-nn's objectives (whose losses are
tested against float64 references in tjx-nn)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import metrics, nn
from trainer.config.typed import read_config, resolve, step_config
from trainer.step.train_step import make_eval_step, make_loss_fn

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
def test_kind_to_objective(kind, name, unit, extra):
    cfg = read_config({"model": {"kind": kind}})
    assert cfg.objective is nn.objective_of(nn.MODEL_KINDS[kind])  # tjx-nn's, not a copy
    assert (cfg.task, cfg.objective.unit, cfg.objective.extra_vocab) == (name, unit, extra)


def test_a_step_counts_images_or_the_continued_half():
    from trainer.config.typed import units_per_step

    vit = read_config({"model": {"kind": "vit"}, "data": {"batch_size": 8}})
    assert units_per_step(vit) == 8
    encdec = read_config({"model": {"kind": "encdec"}, "data": {"seq_len": 10}})
    assert units_per_step(encdec) == encdec.data.batch_size * 6
    gpt2 = read_config({"data": {"seq_len": 10, "batch_size": 3}})
    assert units_per_step(gpt2) == 30


def _split(model):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    return graphdef, nnx.to_pure_dict(params), rest


@pytest.mark.parametrize("chunked", [True, False])
def test_the_configs_loss_settings_reach_tjx_nn(chunked):
    train = {"chunked_ce": chunked, "ce_chunk_size": 4, "z_loss": 1e-2, "mlm_probability": 0.4}
    cfg = read_config({"model": {"kind": "gpt2", **TINY}, "train": train})
    run = resolve(cfg, 30)
    model = nn.build_model(run.model, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(1)
    tokens = jnp.asarray(rng.integers(0, 30, (2, 9)), jnp.int32)
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    graphdef, params, rest = _split(model)
    loss, aux = make_loss_fn(graphdef, rest, step_config(run))(params, batch, jnp.asarray(0))
    want = nn.objective_loss(model, batch, chunked=chunked, chunk_size=4, z_loss=1e-2)
    np.testing.assert_allclose(float(loss), float(want.loss), rtol=1e-6)
    assert set(aux) == {"sum_loss", "num_tokens", "num_correct"}
    assert float(loss) > float(aux["sum_loss"]) / int(aux["num_tokens"])  # the z-loss is in


def test_masked_lm_eval_masks_with_the_runs_fixed_key():
    """The trainer's validation masks as the evaluator does: tjx-nn's key of the run's seed."""
    cfg = read_config({"model": {"kind": "bert", **TINY}, "train": {"seed": 3}})
    model = nn.build_model(resolve(cfg, 40).model, rngs=nnx.Rngs(0))  # + BERT's [MASK] id
    rng = np.random.default_rng(2)
    batch = {
        "inputs": jnp.asarray(rng.integers(0, 40, (2, 12)), jnp.int32),
        "segment_ids": jnp.ones((2, 12), jnp.int32),
    }
    graphdef, params, rest = _split(model)
    got = make_eval_step(graphdef, rest, step_config(cfg))(params, batch)
    logits, labels = nn.objective_logits(model, batch, key=nn.eval_mask_key(3), mask_prob=0.15)
    want = metrics.lm_stats(logits, labels, top_k=(1, 5, 10))
    assert int(got["num_tokens"]) > 0 and set(got) == set(want)
    for name in want:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(want[name]), rtol=1e-6)
