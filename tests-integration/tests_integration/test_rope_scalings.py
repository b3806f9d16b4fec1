"""tjx's RoPE scalings equal transformers' ``modeling_rope_utils`` for the same config.json.

Each case is a Llama ``config.json`` (its ``rope_scaling`` as published checkpoints write it);
transformers computes the inverse frequencies and attention factor in the scratch venv
(``_hf_peer``), tjx reads the same dict with its HF import (so its defaults, e.g. a missing
``original_max_position_embeddings``, are tested too) and computes them with
``tjx.nn.rope_parameters``. transformers works in float32: relative tolerance 1e-6.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests_integration._hf_peer import run_peer
from tjx import nn
from tjx.nn.hf.config import llama_config_from_hf

BASE = dict(
    model_type="llama",
    vocab_size=32,
    hidden_size=256,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=4,
    head_dim=64,
    rope_theta=10000.0,
)
_RNG = np.random.default_rng(0)
SHORT = (1.0 + _RNG.random(32)).round(4).tolist()
LONG = (1.0 + 8 * _RNG.random(32)).round(4).tolist()
# (name, max_position_embeddings, rope_scaling, seq_lens: None = transformers' init-time value)
CASES: list[tuple[str, int, dict[str, Any], list[int | None]]] = [
    ("linear", 4096, {"rope_type": "linear", "factor": 4.0}, [None]),
    ("dynamic", 2048, {"rope_type": "dynamic", "factor": 2.0}, [None, 1000, 4096, 10000]),
    # Qwen2.5's published form: "type" (the old key) and the pretraining length given.
    ("yarn qwen2.5", 32768,
     {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}, [None]),
    # DeepSeek's: mscale / mscale_all_dim and betas; original from max_position_embeddings.
    ("yarn mscale", 163840,
     {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096,
      "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}, [None]),
    ("yarn no truncate", 8192,
     {"rope_type": "yarn", "factor": 2.0, "truncate": False, "attention_factor": 1.3}, [None]),
    ("yarn no factor", 16384, {"rope_type": "yarn", "factor": None,
                               "original_max_position_embeddings": 4096}, [None]),
    ("longrope", 131072,
     {"rope_type": "longrope", "short_factor": SHORT, "long_factor": LONG,
      "original_max_position_embeddings": 4096}, [None, 4096, 5000]),
    ("llama3", 131072,
     {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, [None]),
]  # fmt: skip


def _entries() -> list[tuple[str, dict[str, Any], int | None]]:
    out = []
    for name, max_pos, scaling, lengths in CASES:
        config = {**BASE, "max_position_embeddings": max_pos, "rope_scaling": scaling}
        out += [(f"{name} @ {n}", config, n) for n in lengths]
    return out


@pytest.fixture(scope="module")
def peer(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    root: Path = tmp_path_factory.mktemp("rope")
    entries = [{"config": c, "seq_len": n} for _, c, n in _entries()]
    run_peer([{"rope": entries, "out": str(root / "rope.npz")}], root)
    return dict(np.load(root / "rope.npz"))


@pytest.mark.parametrize("index", range(len(_entries())), ids=[e[0] for e in _entries()])
def test_inverse_frequencies_and_attention_factor_equal_transformers(peer, index):
    _, hf, seq_len = _entries()[index]
    config = llama_config_from_hf(hf)
    p = config.position
    inv, factor = nn.rope_parameters(config.head_dim, p.rope_theta, p.rope_scaling, seq_len)
    np.testing.assert_allclose(inv, peer[f"inv_{index}"], rtol=1e-6)
    assert factor == pytest.approx(float(peer[f"factor_{index}"]), rel=1e-6)


def test_the_cases_reach_every_branch(peer):
    """Dynamic grows its base past the original length only; longrope switches to its long
    factors past it; yarn's attention factor is not 1; the no-factor yarn took max/original."""
    names = [e[0] for e in _entries()]
    dyn = [peer[f"inv_{names.index(f'dynamic @ {n}')}"] for n in (None, 1000, 4096, 10000)]
    np.testing.assert_array_equal(dyn[0], dyn[1])
    assert (dyn[3][1:] < dyn[2][1:]).all() and (dyn[2][1:] < dyn[1][1:]).all()
    long = [peer[f"inv_{names.index(f'longrope @ {n}')}"] for n in (None, 4096, 5000)]
    np.testing.assert_array_equal(long[0], long[1])
    assert not np.allclose(long[1], long[2])
    assert float(peer[f"factor_{names.index('yarn qwen2.5 @ None')}"]) > 1.0
    no_factor = llama_config_from_hf(_entries()[names.index("yarn no factor @ None")][1])
    assert no_factor.position.rope_scaling.factor == 4.0
