"""HF GPT-2 interop against a tiny checkpoint written here in HF's naming and Conv1D layout."""

import json
import re

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from tjx import nn as tnn
from tjx.nn.hf.gpt2 import config_to_hf

D, H, L, V, POS = 16, 2, 2, 40, 12


def _hf_weights(seed=0):
    rs = np.random.RandomState(seed)
    f = lambda *shape: (rs.randn(*shape) * 0.1).astype(np.float32)
    w = {"wte.weight": f(V, D), "wpe.weight": f(POS, D), "ln_f.weight": 1 + f(D), "ln_f.bias": f(D)}
    for i in range(L):
        p = f"h.{i}."
        w |= {
            p + "ln_1.weight": 1 + f(D),
            p + "ln_1.bias": f(D),
            p + "attn.c_attn.weight": f(D, 3 * D),
            p + "attn.c_attn.bias": f(3 * D),
            p + "attn.c_proj.weight": f(D, D),
            p + "attn.c_proj.bias": f(D),
            p + "ln_2.weight": 1 + f(D),
            p + "ln_2.bias": f(D),
            p + "mlp.c_fc.weight": f(D, 4 * D),
            p + "mlp.c_fc.bias": f(4 * D),
            p + "mlp.c_proj.weight": f(4 * D, D),
            p + "mlp.c_proj.bias": f(D),
        }
    return w


def _write_checkpoint(folder, weights, *, prefix=""):
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model_type": "gpt2",
        "vocab_size": V,
        "n_positions": POS,
        "n_embd": D,
        "n_layer": L,
        "n_head": H,
        "n_inner": None,
        "activation_function": "gelu_new",
        "layer_norm_epsilon": 1e-5,
    }
    (folder / "config.json").write_text(json.dumps(cfg))
    tensors = {prefix + k: v for k, v in weights.items()}
    # HF checkpoints may carry the causal-mask buffers; they are not parameters.
    tensors[prefix + "h.0.attn.bias"] = np.tril(np.ones((1, 1, POS, POS), np.float32))
    save_file(tensors, str(folder / "model.safetensors"))


def _np_gpt2(w, tokens):
    """GPT-2 forward in numpy straight from HF tensors (Conv1D: y = x @ W + b)."""

    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * g + b

    def gelu(x):
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))

    s = tokens.shape[1]
    x = w["wte.weight"][tokens] + w["wpe.weight"][np.arange(s)]
    hd = D // H
    for i in range(L):
        p = f"h.{i}."
        h = ln(x, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        qkv = h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]
        q, k, v = (a.reshape(*a.shape[:2], H, hd) for a in np.split(qkv, 3, axis=-1))
        att = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
        att = np.where(np.tril(np.ones((s, s), bool)), att, -np.inf)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", att, v).reshape(*x.shape[:2], D)
        x = x + o @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"]
        h = ln(x, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        x = (
            x
            + gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"])
            @ w[p + "mlp.c_proj.weight"]
            + w[p + "mlp.c_proj.bias"]
        )
    x = ln(x, w["ln_f.weight"], w["ln_f.bias"])
    return x @ w["wte.weight"].T


def test_load_matches_numpy_reference_and_round_trip_is_exact(tmp_path):
    weights = _hf_weights()
    _write_checkpoint(tmp_path / "ckpt", weights)
    model = tnn.load_hf_gpt2(tmp_path / "ckpt")
    assert model.config.d_model == D and model.config.num_layers == L
    assert tnn.count_params(model) == sum(v.size for v in weights.values())
    tokens = np.random.RandomState(1).randint(0, V, (2, 7))
    np.testing.assert_allclose(
        model(jnp.asarray(tokens)), _np_gpt2(weights, tokens), rtol=1e-4, atol=1e-5
    )
    tnn.save_hf_gpt2(model, tmp_path / "out")
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert set(saved) == set(weights)
    for name, value in weights.items():
        assert saved[name].dtype == value.dtype and np.array_equal(saved[name], value), name
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    assert cfg["n_embd"] == D and cfg["activation_function"] == "gelu_new"
    again = tnn.load_hf_gpt2(tmp_path / "out")
    flat_a, flat_b = tnn.get_flat_params(model), tnn.get_flat_params(again)
    assert all(np.array_equal(flat_a[k], flat_b[k]) for k in flat_a)


def test_prefixed_names_and_scanned_model(tmp_path):
    weights = _hf_weights(seed=3)
    _write_checkpoint(tmp_path / "ckpt", weights, prefix="transformer.")
    model = tnn.load_hf_gpt2(tmp_path / "ckpt", scan_layers=True)
    assert model.config.scan_layers
    tokens = np.random.RandomState(2).randint(0, V, (1, 5))
    np.testing.assert_allclose(
        model(jnp.asarray(tokens)), _np_gpt2(weights, tokens), rtol=1e-4, atol=1e-5
    )
    tnn.save_hf_gpt2(model, tmp_path / "out")
    saved = load_file(str(tmp_path / "out" / "model.safetensors"))
    assert all(np.array_equal(saved[k], v) for k, v in weights.items())


def test_errors(tmp_path):
    with pytest.raises(ValueError, match="no-such-model-xyz"):
        tnn.load_hf_gpt2("no-such-model-xyz")  # HF_HUB_OFFLINE=1 in tests
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="config.json"):
        tnn.load_hf_gpt2(tmp_path / "empty")
    llama = tnn.Llama(
        tnn.LlamaConfig(vocab_size=8, max_seq_len=4, d_model=8, num_heads=2, num_layers=1),
        rngs=__import__("flax").nnx.Rngs(0),
    )
    with pytest.raises(ValueError, match="GPT2"):
        tnn.save_hf_gpt2(llama, tmp_path / "x")
    weights = _hf_weights()
    weights["h.0.mlp.c_fc.weight"] = weights["h.0.mlp.c_fc.weight"][:, :5]
    _write_checkpoint(tmp_path / "bad", weights)
    with pytest.raises(ValueError, match="shape"):
        tnn.load_hf_gpt2(tmp_path / "bad")


def test_hub_names_are_the_published_checkpoints():
    assert tnn.HF_GPT2_NAMES[0] == "gpt2"
    assert {"gpt2-medium", "gpt2-large", "gpt2-xl"} <= set(tnn.HF_GPT2_NAMES)
    assert len(set(tnn.HF_GPT2_NAMES)) == len(tnn.HF_GPT2_NAMES)


def test_conflicts_are_the_settings_gpt2_weights_fix():
    fixed = tnn.HF_GPT2_FIXED
    # GPT-2's own values (and unset ones) fit; sizes and training settings are not GPT-2's to fix.
    assert tnn.hf_gpt2_conflicts(fixed) == {}
    assert tnn.hf_gpt2_conflicts({k: None for k in fixed}) == {}
    assert tnn.hf_gpt2_conflicts({"d_model": 7, "remat": "full", "dropout": 0.1}) == {}
    # Each fixed field set to another value conflicts; the answer follows HF_GPT2_FIXED's order.
    other = {
        "use_bias": False,
        "position.kind": "rope",
        "attention.type": "mla",
        "norm.kind": "rmsnorm",
        "norm.position": "post",
        "num_kv_heads": 1,
        "tie_embeddings": False,
    }
    assert set(other) == set(fixed)
    got = tnn.hf_gpt2_conflicts(other)
    assert got == other and list(got) == list(fixed)
    # A model whose config has one of these settings cannot be GPT-2's: the reference check is
    # that such a config cannot be exported (config_to_hf, which load/save share).
    base = dict(vocab_size=V, max_seq_len=POS, d_model=D, num_layers=1, num_heads=H)
    for field, value in other.items():
        extra = {"mla": tnn.MLAConfig(kv_latent_dim=4)} if field == "attention.type" else {}
        if field == "num_kv_heads":
            continue  # GPT2Config keeps GQA; its export refusal is checked below
        config = tnn.make_config(tnn.GPT2Config, {**base, field: value, **extra})
        with pytest.raises(ValueError, match=re.escape(field)):
            config_to_hf(config)
    with pytest.raises(ValueError, match="num_kv_heads"):
        config_to_hf(tnn.make_config(tnn.GPT2Config, {**base, "num_kv_heads": 1}))


def test_load_refuses_overrides_the_weights_cannot_take(tmp_path):
    _write_checkpoint(tmp_path / "ckpt", _hf_weights())
    with pytest.raises(ValueError, match=r"fix the architecture.*'position.kind': 'rope'.*learned"):
        tnn.load_hf_gpt2(tmp_path / "ckpt", **{"position.kind": "rope"})
    # Training settings apply to the loaded weights.
    model = tnn.load_hf_gpt2(tmp_path / "ckpt", remat="full", **{"attention.decode_topk": 2})
    assert (model.config.remat, model.config.attention.decode_topk) == ("full", 2)
