"""``load_hf`` / ``save_hf`` for the LLaMA family without transformers: layouts, shards, dtypes
and Llama 3 RoPE scaling against a float64 reference (transformers itself: tests-integration)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from tjx import nn as tnn
from tjx.nn.hf.config import llama_config_from_hf, llama_config_to_hf
from tjx.nn.hf.llama import llama_mapping
from tjx.nn.positions import apply_rope

SCALING = (8.0, 1.0, 4.0, 16)


def _config(**kw):
    base = dict(
        vocab_size=48,
        max_seq_len=32,
        d_model=32,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        mlp=tnn.MLPConfig(dim=40),
        position=tnn.PositionConfig(rope_theta=5e5, rope_scaling=SCALING),
        **{"attention.qkv_bias": True},
    )
    return tnn.make_config(tnn.LlamaConfig, base | kw)


def _model(config, seed=0):
    model = tnn.Llama(config, rngs=nnx.Rngs(seed))
    # Random norms and biases (init makes them 1 and 0): a swapped tensor changes the logits.
    flat = tnn.get_flat_params(model)
    rs = np.random.RandomState(seed)
    tnn.set_flat_params(model, {k: v + 0.1 * rs.randn(*v.shape) for k, v in flat.items()})
    return model


def _tokens():
    return jnp.asarray(np.random.RandomState(3).randint(0, 48, (2, 10)), jnp.int32)


def _reference_inv_freq(dim, theta, scaling):
    """Meta's ``apply_scaling`` (llama-models), one frequency at a time in Python floats."""
    factor, low, high, original = scaling
    out = []
    for i in range(dim // 2):
        freq = 1.0 / theta ** (2 * i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < original / high:
            out.append(freq)
        elif wavelen > original / low:
            out.append(freq / factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append((1 - smooth) * freq / factor + smooth * freq)
    return np.asarray(out)


def test_llama3_rope_matches_a_float64_reference():
    with jax.enable_x64(True):
        rs = np.random.RandomState(0)
        x = rs.randn(2, 7, 3, 64)
        pos = rs.randint(0, 5000, (2, 7))
        got = np.asarray(
            apply_rope(jnp.asarray(x), jnp.asarray(pos), theta=5e5, scaling=(8.0, 1.0, 4.0, 8192))
        )
        inv = _reference_inv_freq(64, 5e5, (8.0, 1.0, 4.0, 8192))
        ang = pos[..., None, None] * inv  # [b, s, 1, half]
        x1, x2 = x[..., :32], x[..., 32:]
        want = np.concatenate(
            [x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1
        )
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    # The three bands all occur: some frequencies are kept, some divided, some blended.
    base = 1.0 / 5e5 ** (np.arange(32) / 32)
    ratio = inv / base
    assert np.isclose(ratio, 1).any() and np.isclose(ratio, 1 / 8).any()
    assert ((ratio > 1 / 8 + 1e-9) & (ratio < 1 - 1e-9)).any()


def test_rope_scaling_is_refused_without_rope_and_checked():
    with pytest.raises(ValueError, match="only position.kind 'rope' uses it"):
        tnn.GPT2Config(position=tnn.PositionConfig(rope_scaling=SCALING))
    with pytest.raises(ValueError, match="rope_scaling: RopeScaling.high_freq_factor must exceed"):
        _config(position=tnn.PositionConfig(rope_scaling=(8.0, 4.0, 1.0, 16)))
    # Llama 3's four numbers (configs saved before the typed form) read as the typed form.
    want = tnn.RopeScaling(type="llama3", factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                           original_max_position_embeddings=16)  # fmt: skip
    assert (
        _config(position=tnn.PositionConfig(rope_scaling=[8, 1, 4, 16])).position.rope_scaling
        == want
    )


def test_qwen2_layout_has_biases_on_qkv_only():
    names = set(llama_mapping(_config()).shapes)
    biases = sorted(n.split(".")[-2] for n in names if n.endswith(".bias") and ".0." in n)
    assert biases == ["k_proj", "q_proj", "v_proj"]
    assert llama_config_to_hf(_config())["model_type"] == "qwen2"
    assert llama_config_to_hf(_config(**{"attention.qkv_bias": False}))["model_type"] == "llama"


@pytest.mark.parametrize("tied", [False, True])
def test_config_json_round_trips(tied):
    config = _config(
        tie_embeddings=tied, head_dim=16, attention=tnn.AttentionConfig(qkv_bias=False)
    )  # 16 != 32 / 4
    hf = llama_config_to_hf(config)
    assert llama_config_from_hf(hf) == config


@pytest.mark.parametrize("scan", [False, True])
def test_save_and_load_round_trip_in_shards(tmp_path, scan):
    model = _model(_config(scan_layers=scan))
    files = tnn.save_hf(model, tmp_path / "out", max_shard_size="8KB")
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and shards == sorted(f for f in files if f.startswith("model-"))
    assert set(index["weight_map"]) == set(llama_mapping(model.config).shapes)
    again, config = tnn.load_hf(tmp_path / "out", scan_layers=scan)
    assert config == model.config
    np.testing.assert_array_equal(np.asarray(again(_tokens())), np.asarray(model(_tokens())))


def test_weights_load_into_the_param_dtype_and_save_in_the_chosen_one(tmp_path):
    model = _model(_config())
    tnn.save_hf(model, tmp_path / "bf16", dtype="bfloat16")
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), framework="np") as f:
        assert {f.get_slice(k).get_dtype() for k in list(f.keys())} == {"BF16"}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    f32, _ = tnn.load_hf(tmp_path / "bf16")
    want = {
        k: v.astype(jnp.bfloat16).astype(np.float32) for k, v in tnn.get_flat_params(model).items()
    }
    got = tnn.get_flat_params(f32)
    assert all(got[k].dtype == np.float32 for k in got)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])
    half, _ = tnn.load_hf(tmp_path / "bf16", precision=tnn.Precision(jnp.bfloat16, jnp.bfloat16))
    assert {v.dtype for v in tnn.get_flat_params(half).values()} == {np.dtype(jnp.bfloat16)}
    tnn.save_hf(half, tmp_path / "fp16", dtype="float16")
    with safe_open(str(tmp_path / "fp16" / "model.safetensors"), framework="np") as f:
        assert {f.get_slice(k).get_dtype() for k in list(f.keys())} == {"F16"}


def test_save_copies_the_tokenizer_files(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "tokenizer.json").write_text("{}")
    (tmp_path / "src" / "tokenizer_config.json").write_text("{}")
    files = tnn.save_hf(_model(_config()), tmp_path / "out", tokenizer_from=tmp_path / "src")
    assert {"tokenizer.json", "tokenizer_config.json"} <= set(files)
    assert (tmp_path / "out" / "tokenizer.json").read_text() == "{}"


def test_gpt2_goes_through_the_same_pair(tmp_path):
    gpt2 = tnn.GPT2(
        tnn.gpt2_config(d_model=16, num_layers=1, num_heads=2, vocab_size=40, max_seq_len=12),
        rngs=nnx.Rngs(0),
    )
    tnn.save_hf(gpt2, tmp_path / "g")
    model, config = tnn.load_hf(tmp_path / "g")
    assert isinstance(model, tnn.GPT2) and tnn.hf_kind(tmp_path / "g") == "gpt2"
    tokens = _tokens() % 40
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(gpt2(tokens)))
    with pytest.raises(ValueError, match="not a GPT-2 checkpoint"):
        tnn.save_hf(_model(_config()), tmp_path / "l")
        tnn.load_hf_gpt2(tmp_path / "l")
