"""The jitted step's pieces: losses and metric sums against float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from trainer.config import build_config
from trainer.model_build import describe_nn_config, nn_config
from trainer.state import build
from trainer.step import make_eval_step
from trainer.tasks import token_loss

SMALL = {
    "model": {"d_model": 16, "num_layers": 2, "num_heads": 2, "mlp_dim": 32, "max_seq_len": 16},
    "data": {"seq_len": 8, "batch_size": 8},
    "optimizer": {"schedule": {"warmup_steps": 1}},
    "train": {"steps": 4, "ce_chunk_size": 4},
    "eval": {"batch_size": 8},
}


def _batch(rng, b=8, s=8, vocab=40):
    tokens = rng.integers(0, vocab, (b, s + 1)).astype(np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": np.ones((b, s), np.int32),
        "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy(),
    }


@pytest.fixture(scope="module")
def model():
    cfg = build_config(SMALL)
    from tjx import nn

    return nn.build_model(nn_config(cfg.model, 40), rngs=nnx.Rngs(0))


@pytest.mark.parametrize("z_loss", [0.0, 1e-3])
def test_chunked_and_plain_losses_agree_with_float64(model, z_loss):
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.normal(size=(2, 8, 16)), jnp.float32)
    targets = rng.integers(0, 40, (2, 8)).astype(np.int32)
    targets[0, :3] = -100
    w = np.asarray(model.unembedding(), np.float64)
    logits = np.asarray(hidden, np.float64) @ w
    mask = targets != -100
    logz = np.log(np.exp(logits).sum(-1))
    ce = logz - np.take_along_axis(logits, np.where(mask, targets, 0)[..., None], -1)[..., 0]
    want = (ce[mask].sum() + z_loss * (logz[mask] ** 2).sum()) / mask.sum()
    for chunked in (True, False):
        cfg = build_config(
            {**SMALL, "train": {**SMALL["train"], "chunked_ce": chunked, "z_loss": z_loss}}
        )
        out = token_loss(model, hidden, jnp.asarray(targets), cfg)
        assert float(out["loss"]) == pytest.approx(want, rel=1e-5)
        assert float(out["sum_loss"]) == pytest.approx(ce[mask].sum(), rel=1e-5)
        assert int(out["num_tokens"]) == mask.sum()
        assert int(out["num_correct"]) == (logits.argmax(-1) == targets)[mask].sum()


def test_train_step_lowers_loss_and_accumulation_matches_one_batch():
    rng = np.random.default_rng(2)
    batch = _batch(rng, b=16)
    results = {}
    for accum in (1, 2):
        cfg = build_config(
            {
                **SMALL,
                "optimizer": {**SMALL["optimizer"], "accumulation_steps": accum},
                "data": {"seq_len": 8, "batch_size": 16},
            }
        )
        setup = build(cfg, 40)
        from trainer.step import make_train_step

        step = jax.jit(make_train_step(setup.graphdef, setup.rest, setup.tx, cfg))
        st = setup.state
        losses = []
        for _ in range(4):
            st, out = step(st, batch)
            losses.append(float(out["loss"]))
        assert int(st["step"]) == 4
        results[accum] = (losses, st["params"])
        evals = jax.jit(make_eval_step(setup.graphdef, setup.rest, cfg))(st["params"], batch)
        assert int(evals["num_tokens"]) == 128
    assert results[1][0][-1] < results[1][0][0]  # same batch 4 times: the loss falls
    np.testing.assert_allclose(results[1][0], results[2][0], rtol=2e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[2][1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_describe_nn_config_is_json_ready():
    import json

    cfg = build_config({**SMALL, "model": {**SMALL["model"], "compute_dtype": "bfloat16"}})
    desc = describe_nn_config(nn_config(cfg.model, 40))
    text = json.dumps(desc)
    assert desc["class"] == "GPT2Config" and "bfloat16" in text
    assert desc["fields"]["vocab_size"] == 40
