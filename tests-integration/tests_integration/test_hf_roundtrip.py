"""Every supported HF family round-trips through transformers (PyTorch in a scratch venv).

transformers builds tiny random models (GQA, MQA, head_dim != d/heads, the RoPE scalings llama3,
yarn, dynamic and longrope, sliding windows in every layer and in some, tied and untied heads,
Qwen2's q/k/v bias, a sharded checkpoint; the MoE families: Mixtral, Qwen2-MoE with its gated
shared expert, a dense first layer and top-k weights left unnormalised, Qwen3-MoE with q/k norms
and head_dim != d/heads) and saves them; tjx loads each
with ``tjx.nn.load_hf``: float32 logits within 1e-4 relative of transformers', and 20 greedy
tokens identical. tjx saves each again with ``tjx.nn.save_hf`` (the Llama one sharded) and
transformers' ``AutoModelForCausalLM`` loads it as the same class, with the same logits.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

from tests_integration._hf_peer import run_peer
from tjx import nn

VOCAB, NEW = 96, 20
TOKENS = np.random.default_rng(0).integers(0, VOCAB, size=(2, 12)).tolist()
COMMON = dict(vocab_size=VOCAB, max_position_embeddings=64, bos_token_id=None, eos_token_id=None)
LLAMA3 = dict(
    rope_type="llama3",
    factor=8.0,
    low_freq_factor=1.0,
    high_freq_factor=4.0,
    original_max_position_embeddings=16,
)
SIZES = dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
CASES: dict[str, dict[str, Any]] = {
    # GQA (4 query heads, 2 kv), Llama 3 scaling, untied head; saved in shards both ways.
    "llama": dict(
        config=dict(
            model_type="llama",
            **SIZES,
            **COMMON,
            num_key_value_heads=2,
            rope_theta=500000.0,
            rope_scaling=LLAMA3,
        ),
        max_shard_size="20KB",
    ),
    # MQA, head_dim 16 (not 32 / 4), tied embeddings, no sliding window.
    "mistral": dict(
        config=dict(
            model_type="mistral",
            **SIZES,
            **COMMON,
            num_key_value_heads=1,
            head_dim=16,
            sliding_window=None,
            tie_word_embeddings=True,
        ),
        model_type="mistral",  # a Llama config saves as llama unless asked
    ),
    # Biases on q/k/v only, GQA.
    "qwen2": dict(config=dict(model_type="qwen2", **SIZES, **COMMON, num_key_value_heads=2)),
    # A window of 5 shorter than the 12 scored tokens and the 24 generated: every layer slides,
    # so tjx decodes with a rolling cache of 5 slots.
    "mistral-window": dict(
        config=dict(
            model_type="mistral",
            **SIZES,
            **COMMON,
            num_key_value_heads=2,
            sliding_window=5,
        ),
        model_type="mistral",
    ),
    # Qwen2.5's YaRN (4x of 16 pretrained positions) and a window on layer 1 only
    # (max_window_layers 1): a mixed per-layer pattern.
    "qwen2-yarn": dict(
        config=dict(
            model_type="qwen2",
            **SIZES,
            **COMMON,
            num_key_value_heads=2,
            rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
            use_sliding_window=True,
            sliding_window=6,
            max_window_layers=1,
        ),
    ),
    # Dynamic NTK past 8 positions (the 12 scored tokens, the 24 generated ones).
    "llama-dynamic": dict(
        config=dict(
            model_type="llama",
            **SIZES,
            **{**COMMON, "max_position_embeddings": 8},
            num_key_value_heads=2,
            rope_scaling={"rope_type": "dynamic", "factor": 4.0},
        ),
    ),
    # LongRoPE: long factors past 8 pretrained positions.
    "llama-longrope": dict(
        config=dict(
            model_type="llama",
            **SIZES,
            **COMMON,
            num_key_value_heads=2,
            rope_scaling={
                "rope_type": "longrope",
                "original_max_position_embeddings": 8,
                "short_factor": [1.0, 1.2, 1.5, 2.0],
                "long_factor": [1.0, 2.0, 4.0, 8.0],
            },
        ),
    ),
    "mixtral": dict(
        config=dict(
            model_type="mixtral", **SIZES, **COMMON, num_key_value_heads=2, num_local_experts=4,
            num_experts_per_tok=2, sliding_window=None,
        )  # fmt: skip
    ),
    "qwen2_moe": dict(
        config=dict(
            model_type="qwen2_moe", **SIZES, **COMMON, num_key_value_heads=2, num_experts=4,
            num_experts_per_tok=2, moe_intermediate_size=24, shared_expert_intermediate_size=40,
            norm_topk_prob=False, mlp_only_layers=[0],
        )  # fmt: skip
    ),
    "qwen3_moe": dict(
        config=dict(
            model_type="qwen3_moe", **SIZES, **COMMON, num_key_value_heads=2, head_dim=16,
            num_experts=4, num_experts_per_tok=2, moe_intermediate_size=24, norm_topk_prob=True,
        )  # fmt: skip
    ),
    "gpt2": dict(
        config=dict(
            model_type="gpt2",
            vocab_size=VOCAB,
            n_positions=64,
            n_embd=32,
            n_layer=2,
            n_head=4,
            bos_token_id=None,
            eos_token_id=None,
        )
    ),
}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("hf")
    tokens = np.asarray(TOKENS, np.int32)
    np.save(root / "tokens.npy", tokens.astype(np.int64))
    makes = [
        {
            "make": {
                "config": case["config"],
                "max_shard_size": case.get("max_shard_size"),
                "tokens": TOKENS,
                "new": NEW,
            },
            "out": str(root / name),
        }
        for name, case in CASES.items()
    ]
    run_peer(makes, root)
    out: dict[str, dict[str, Any]] = {}
    scores = []
    for name, case in CASES.items():
        model, config = nn.load_hf(root / name)
        greedy = nn.generate(model, jnp.asarray(tokens[:1, :4]), max_new_tokens=NEW, temperature=0)
        files = nn.save_hf(
            model,
            root / f"{name}-tjx",
            max_shard_size=case.get("max_shard_size", "5GB"),
            model_type=case.get("model_type"),
        )
        out[name] = {
            "peer": dict(np.load(root / name / "peer.npz")),
            "tjx": np.asarray(model(jnp.asarray(tokens))),
            "greedy": np.asarray(greedy),
            "config": config,
            "files": files,
            "source_files": sorted(p.name for p in (root / name).iterdir()),
        }
        scores.append(
            {
                "score": str(root / f"{name}-tjx"),
                "tokens": str(root / "tokens.npy"),
                "out": str(root / f"{name}-back.npz"),
                "new": NEW,
            }
        )
    run_peer(scores, root)
    for name in CASES:
        out[name]["back"] = dict(np.load(root / f"{name}-back.npz"))
    return out


@pytest.mark.parametrize("family", list(CASES))
def test_hf_checkpoint_loads_with_the_same_logits_and_greedy_tokens(results, family):
    r = results[family]
    assert _rel(r["tjx"], r["peer"]["logits"]) < 1e-4
    np.testing.assert_array_equal(r["greedy"], r["peer"]["greedy"])


@pytest.mark.parametrize("family", list(CASES))
def test_saved_checkpoint_loads_in_transformers_as_the_same_model(results, family):
    r = results[family]
    assert str(r["back"]["arch"]) == str(r["peer"]["arch"])
    assert _rel(r["back"]["logits"], r["peer"]["logits"]) < 1e-6
    np.testing.assert_array_equal(r["back"]["greedy"], r["peer"]["greedy"])


def test_windows_and_scalings_are_read_as_their_configs_say(results):
    """The window cases score 12 tokens and generate 24 with windows of 5 and 6: the logits and
    greedy tokens compared above are those of a window that slides (a rolling cache for
    mistral, whose every layer is windowed)."""
    mistral, qwen = results["mistral-window"]["config"], results["qwen2-yarn"]["config"]
    assert mistral.attention.sliding_window == 5 and mistral.attention.window_pattern is None
    assert nn.cache_slots(mistral, 24) == 5
    assert qwen.layer_windows() == (None, 6) and nn.cache_slots(qwen, 24) == 24
    assert qwen.position.rope_scaling.type == "yarn" and qwen.max_seq_len == 64  # max(64, 4 x 16)
    dynamic = results["llama-dynamic"]["config"]
    assert dynamic.position.rope_scaling.original_max_position_embeddings == 8
    assert dynamic.max_seq_len == 32  # 8 x factor 4: dynamic NTK scales past 8
    assert results["llama-longrope"]["config"].position.rope_scaling.factor == 8.0  # 64 / 8


def test_the_cases_cover_what_the_configs_carry(results):
    llama, mistral, qwen = (results[k]["config"] for k in ("llama", "mistral", "qwen2"))
    assert llama.num_kv_heads == 2 and llama.position.rope_scaling == nn.RopeScaling.parse(
        [8.0, 1.0, 4.0, 16]
    )
    assert not llama.tie_embeddings and mistral.tie_embeddings
    assert mistral.num_kv_heads == 1 and mistral.head_dim == 16 != mistral.d_model // 4
    assert qwen.attention.qkv_bias and not qwen.use_bias
    # transformers wrote the Llama checkpoint in shards, and tjx did too.
    assert "model.safetensors.index.json" in results["llama"]["source_files"]
    assert "model.safetensors.index.json" in results["llama"]["files"]
    mixtral, qwen2_moe, qwen3_moe = (results[k]["config"] for k in ("mixtral", "qwen2_moe",
                                                                        "qwen3_moe"))  # fmt: skip
    moe = mixtral.moe
    assert moe.num_experts == 4 and moe.router_norm_topk and not moe.num_shared_experts
    assert nn.moe_layers(qwen2_moe) == (False, True) and not qwen2_moe.moe.router_norm_topk
    assert qwen2_moe.moe.shared_expert_gate and qwen2_moe.moe.shared_expert_mlp_dim == 40
    assert qwen2_moe.attention.qkv_bias and qwen3_moe.attention.qk_norm and qwen3_moe.head_dim == 16
