"""Gradient accumulation in the train step is token-weighted: uneven padding changes nothing.

With equal micro-batch weights (the old step), a micro-batch of mostly padding counted as much
as a full one, so 4 micro-batches gave another loss and gradient than the same batch in one pass.
"""

from __future__ import annotations

import jax
import numpy as np
import pytest

from trainer.config.typed import read_config, resolve, step_config
from trainer.step.state import build
from trainer.step.train_step import make_eval_step, make_train_step

VOCAB, B, S, MICRO = 40, 32, 8, 4  # 8 rows per micro-batch: one per simulated device
# Real tokens per row of each micro-batch. Valid targets per micro-batch: 0 (all padding), 8,
# 64 (no padding), 41 — deliberately uneven. The step interleaves (`interleave_rows`: micro-batch
# i is rows i, i + 4, ..., so each stays on every device), so the batch lists them interleaved.
MICRO_LENGTHS = ((0,) * 8, (1, 0, 2, 0, 1, 3, 0, 1), (8,) * 8, (5, 8, 2, 7, 8, 1, 6, 4))
LENGTHS = tuple(n for row in zip(*MICRO_LENGTHS, strict=True) for n in row)
VALID = [0, 8, 64, 41]


def _config(accum: int, **optimizer):
    return read_config(
        {
            "model": {
                "d_model": 16,
                "num_layers": 1,
                "num_heads": 2,
                "mlp": {"dim": 32},
                "max_seq_len": S,
            },
            "data": {"seq_len": S, "batch_size": B},
            # Plain SGD at a constant rate, no clipping or decay: step 1 moves the params by
            # exactly -lr * gradient, so comparing params compares gradients.
            "optimizer": {
                "name": "sgd",
                "clip_norm": None,
                "weight_decay": 0.0,
                "accumulation_steps": accum,
                "schedule": {"name": "constant", "warmup_steps": 0, "peak_lr": 0.5},
                **optimizer,
            },
            "train": {"steps": 2, "ce_chunk_size": 4},
            "eval": {"batch_size": B},
        }
    )


def _padded_batch(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (B, S + 1)).astype(np.int32)
    real = np.arange(S)[None, :] < np.asarray(LENGTHS)[:, None]
    return {
        "inputs": np.where(real, tokens[:, :-1], 0).astype(np.int32),
        "targets": np.where(real, tokens[:, 1:], -100).astype(np.int32),
        "segment_ids": real.astype(np.int32),
        "positions": np.broadcast_to(np.arange(S, dtype=np.int32), (B, S)).copy(),
    }


def _one_step(cfg, batch, *, eval_sums=False):
    run = step_config(resolve(cfg, VOCAB))
    setup = build(run)
    step = jax.jit(make_train_step(setup.graphdef, setup.rest, setup.tx, run))
    params0 = jax.tree.map(np.asarray, setup.state.param_tree())
    sums = None
    if eval_sums:  # sum of CE and token count of the whole batch, by the eval path
        sums = make_eval_step(setup.graphdef, setup.rest, run)(setup.state.param_tree(), batch)
    state, metrics = step(setup.state, batch)
    moved = jax.tree.map(lambda a, b: np.asarray(a) - b, state.param_tree(), params0)
    return moved, metrics, sums


@pytest.fixture(scope="module")
def one_pass():
    """accumulation_steps=1: the whole batch's token-mean loss and its gradient, in one pass."""
    return _one_step(_config(1), _padded_batch(0), eval_sums=True)


@pytest.mark.parametrize("optimizer", [{}, {"loss_scale": "dynamic"}], ids=["plain", "fp_scale"])
def test_uneven_padding_accumulates_to_the_one_pass_step(one_pass, optimizer) -> None:
    moved1, metrics1, sums = one_pass
    moved4, metrics4, _ = _one_step(_config(MICRO, **optimizer), _padded_batch(0))
    targets = _padded_batch(0)["targets"]
    assert [int((targets[i::MICRO] >= 0).sum()) for i in range(MICRO)] == VALID
    # The one-pass loss is the token mean, as an independent eval pass computes it.
    token_mean = float(sums["sum_loss"]) / int(sums["num_tokens"])
    assert float(metrics1["loss"]) == pytest.approx(token_mean, rel=1e-5)
    assert float(metrics4["loss"]) == pytest.approx(token_mean, rel=1e-5)
    assert int(metrics4["num_tokens"]) == int(metrics1["num_tokens"]) == sum(VALID)
    assert float(metrics4["grad_norm"]) == pytest.approx(float(metrics1["grad_norm"]), rel=1e-4)
    leaves1, leaves4 = jax.tree.leaves(moved1), jax.tree.leaves(moved4)
    assert max(float(np.abs(a).max()) for a in leaves1) > 1e-3  # the step really moved
    scale = max(float(np.abs(a).max()) for a in leaves1)
    for a, b in zip(leaves1, leaves4, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=2e-4 * scale)
