"""The side-by-side harness: the alternation, the equivalence gate and the tjx worker."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from experiments.nanogpt.side_by_side import SHAPES, Shape, Worker, compare, prepare, tjx_env
from tjx import nn


class _Fake:
    """A worker whose step takes a fixed time; records the order it was asked in."""

    def __init__(self, name: str, first_loss: float, step_s: float, calls: list[str]) -> None:
        self.name, self.first_loss, self.step_s, self.calls = name, first_loss, step_s, calls

    def run(self, steps: int) -> float:
        self.calls.append(self.name)
        return self.step_s * steps


def test_compare_alternates_the_order_and_reports_the_ratio() -> None:
    calls: list[str] = []
    tjx, peer = _Fake("tjx", 5.0, 0.02, calls), _Fake("nanogpt", 5.0, 0.05, calls)
    out = compare(tjx, peer, rounds=4, steps=2, tokens=1000)  # type: ignore[arg-type]
    assert calls == ["tjx", "nanogpt", "nanogpt", "tjx"] * 2
    assert out["median_step_s"] == {"tjx": 0.02, "nanogpt": 0.05}
    assert out["tokens_per_s"]["tjx"] == pytest.approx(50_000)
    assert out["ratio"] == pytest.approx(2.5)


def test_compare_refuses_models_that_disagree_before_any_update() -> None:
    tjx, peer = _Fake("tjx", 5.0, 0.02, []), _Fake("nanogpt", 5.01, 0.05, [])
    with pytest.raises(RuntimeError, match="disagree before any update"):
        compare(tjx, peer, rounds=1, steps=1, tokens=10)  # type: ignore[arg-type]


def test_the_tjx_worker_runs_the_trainer_step_from_the_written_weights(tmp_path: Path) -> None:
    """``ready`` is the trainer's loss on batch 0 of the HF weights `prepare` wrote (checked
    against the model's own forward pass and a float64 log-softmax)."""
    shape = Shape(
        "t", "tiny", (), 61, 16, 4, 32, 2, 2, 64, ("model.d_model=32", "model.mlp.dim=64")
    )
    spec = prepare(shape, tmp_path, seed=3)
    env = tjx_env(JAX_PLATFORMS="cpu", XLA_FLAGS="")  # one device, as a user has
    argv = [sys.executable, "-m", "experiments.nanogpt.tjx_worker", json.dumps(spec)]
    worker = Worker("tjx", argv, env)
    try:
        assert worker.run(2) > 0
    finally:
        worker.close()
    model = nn.load_hf_gpt2(spec["weights_dir"])
    batches = np.load(spec["batches"])
    logits = np.asarray(model(batches["inputs"][0]), np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    want = -np.take_along_axis(logp, batches["targets"][0][..., None], -1).mean()
    assert worker.first_loss == pytest.approx(want, rel=1e-5)


def test_every_shape_matches_its_trainer_config() -> None:
    from experiments.nanogpt.tjx_worker import trainer_config

    for shape in SHAPES.values():
        cfg = trainer_config({"preset": shape.preset, "sets": shape.trainer_sets()})
        m = cfg.model  # model.vocab_size is set: no tokenizer needed
        got = (m.vocab_size, m.max_seq_len, m.d_model, m.num_layers, m.num_heads, m.mlp.dim)
        assert got == (shape.vocab, shape.seq, shape.d, shape.layers, shape.heads, shape.mlp)
        dtype = m.precision.compute_dtype
        assert (cfg.data.batch_size, m.dropout, dtype) == (shape.batch, 0.0, "float32")
