"""Shared fixtures of the evaluator's unit tests."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from tjx import ckpt, data, nn


@pytest.fixture()
def rng():
    """A fresh NumPy generator per test."""
    return np.random.default_rng(1234)


@pytest.fixture()
def run_dir(tmp_path):
    tok = data.load_tokenizer("byte")
    docs = [f"Line {i}: what's in a name? that which we call a rose.\n" * 3 for i in range(30)]
    data.pretokenize(
        docs, tok, tmp_path / "shards", split="validation", num_workers=1, progress=False
    )
    fields = {
        "vocab_size": 257,
        "max_seq_len": 16,
        "d_model": 16,
        "num_layers": 2,
        "num_heads": 2,
        "precision": {"param_dtype": "float32", "compute_dtype": "float32"},
    }
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: hand-made\n")
    (run / "model.json").write_text(json.dumps({"class": "GPT2Config", "fields": fields}))
    (run / "data.json").write_text(
        json.dumps(
            {
                "tokenizer": "byte",
                "val_dir": str(tmp_path / "shards" / "validation"),
                "bytes_per_token": 1.0,
                "seq_len": 16,
                "cache_dir": str(tmp_path / "cache"),
            }
        )
    )
    model = nn.GPT2(nn.GPT2Config(**{**fields, "precision": "fp32"}), rngs=nnx.Rngs(3))
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    manager = ckpt.CheckpointManager(run / "checkpoints", async_save=False)
    manager.save(3, state={"params": params, "step": np.int32(3)}, config={}, force=True)
    manager.close()
    return run, model
