"""The jitted train and eval steps: the loss falls, accumulation matches one batch, the eval sums
count every token (the losses themselves are tjx-nn's, tested there)."""

from __future__ import annotations

import jax
import numpy as np

from trainer.config.typed import read_config, resolve, step_config
from trainer.step.state import build
from trainer.step.train_step import make_eval_step

SMALL = {
    "model": {
        "d_model": 16,
        "num_layers": 2,
        "num_heads": 2,
        "mlp": {"dim": 32},
        "max_seq_len": 16,
    },
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


def test_train_step_lowers_loss_and_accumulation_matches_one_batch():
    rng = np.random.default_rng(2)
    batch = _batch(rng, b=16)
    results = {}
    for accum in (1, 2):
        cfg = read_config(
            {
                **SMALL,
                "optimizer": {**SMALL["optimizer"], "accumulation_steps": accum},
                "data": {"seq_len": 8, "batch_size": 16},
            }
        )
        run = step_config(resolve(cfg, 40))
        setup = build(run)
        from trainer.step.train_step import make_train_step

        step = jax.jit(make_train_step(setup.graphdef, setup.rest, setup.tx, run))
        st = setup.state
        losses = []
        for _ in range(4):
            st, out = step(st, batch)
            losses.append(float(out["loss"]))
        assert int(st.step) == 4
        results[accum] = (losses, st.param_tree())
        evals = jax.jit(make_eval_step(setup.graphdef, setup.rest, run))(st.param_tree(), batch)
        assert int(evals["num_tokens"]) == 128
    assert results[1][0][-1] < results[1][0][0]  # same batch 4 times: the loss falls
    np.testing.assert_allclose(results[1][0], results[2][0], rtol=2e-5)
    for a, b in zip(jax.tree.leaves(results[1][1]), jax.tree.leaves(results[2][1]), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
