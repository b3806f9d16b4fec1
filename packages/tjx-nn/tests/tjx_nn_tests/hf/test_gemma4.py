"""Gemma 4 text checkpoints without transformers: tjx's export loads back to the same weights in
transformers' layout (shared layers without keys/values, global layers of their own width without
a value projection, the per-layer embeddings), transformers' defaults are read as it reads them,
what tjx cannot honour is refused in one line, and the new layer math (per-layer embeddings,
proportional RoPE, KV sharing while decoding) matches float64 NumPy (transformers itself:
tests-integration's test_hf_families.py)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from tjx import nn as tnn
from tjx.nn.families.gemma4 import Gemma4Options
from tjx.nn.families.gemma4.hf_image_text import gemma4_image_text_config
from tjx.nn.families.gemma4.hf_read import gemma4_config_from_hf
from tjx.nn.families.gemma4.hf_write import gemma4_config_to_hf
from tjx.nn.families.gemma4.layers import PerLayerEmbed, PerLayerInput
from tjx.nn.positions import proportional_rope
from tjx_nn_tests._helpers import saved_random

#: Layers local, global, local, global; the last two read layers 0 and 1's keys and values with a
#: double-wide MLP; global heads 16 wide (8 elsewhere), one key/value head, values = keys.
GEMMA4 = dict(
    vocab_size=24, max_seq_len=32, d_model=16, num_layers=4, num_heads=4, num_kv_heads=2,
    head_dim=8, mlp=tnn.MLPConfig(dim=12, activation="geglu"),
    attention=tnn.AttentionConfig(sliding_window=3,
    window_pattern=("local", "global"),
                                  qk_norm=True, query_pre_attn_scalar=1.0),
    norm=tnn.NormConfig(position="sandwich"), scale_embeddings=True,
    tie_embeddings=True,
    position=tnn.PositionConfig(rope_theta=10_000.0, rope_local_theta=100.0),
    gemma4=Gemma4Options(
        global_head_dim=16, global_kv_heads=1, global_values_from_keys=True,
        global_rope_proportion=0.25, value_norm=True, kv_shared_layers=2, kv_shared_mlp_dim=24,
        per_layer_input_dim=4, per_layer_vocab_size=20, layer_scale=True,
    ),
)  # fmt: skip
#: transformers 5.24's ``Gemma4TextConfig().to_dict()`` (the default text model) as saved.
DEFAULT_JSON = {
    "model_type": "gemma4_text", "architectures": ["Gemma4ForCausalLM"], "attention_bias": False,
    "attention_dropout": 0.0, "attention_k_eq_v": False, "bos_token_id": 2, "dtype": None,
    "enable_moe_block": False, "eos_token_id": 1, "final_logit_softcapping": None,
    "head_dim": 256, "hidden_activation": "gelu_pytorch_tanh", "hidden_size": 2304,
    "hidden_size_per_layer_input": 256, "initializer_range": 0.02, "intermediate_size": 9216,
    "layer_types": (["sliding_attention"] * 5 + ["full_attention"]) * 5,
    "max_position_embeddings": 131072, "moe_intermediate_size": None, "num_attention_heads": 8,
    "num_experts": None, "num_hidden_layers": 30, "num_key_value_heads": 4,
    "num_kv_shared_layers": 0, "pad_token_id": 0,
    "per_layer_config": {f"{i:02d}": {"head_dim": 512} for i in (5, 11, 17, 23, 29)},
    "rms_norm_eps": 1e-06,
    "rope_parameters": {
        "sliding_attention": {"rope_type": "default", "rope_theta": 10000.0},
        "full_attention": {"rope_type": "proportional", "partial_rotary_factor": 0.25,
                           "rope_theta": 1000000.0},
    },
    "sliding_window": 512, "tie_word_embeddings": True, "top_k_experts": None,
    "transformers_version": "5.24.0", "use_bidirectional_attention": None, "use_cache": True,
    "use_double_wide_mlp": False, "vocab_size": 262144, "vocab_size_per_layer_input": 262144,
}  # fmt: skip


def test_an_export_loads_back_as_the_same_model_in_transformers_layout(tmp_path):
    model, tensors = saved_random(tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, GEMMA4))
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("gemma4_text", ["Gemma4ForCausalLM"])
    assert (saved["global_head_dim"], saved["num_global_key_value_heads"]) == (16, 1)
    assert saved["use_double_wide_mlp"] and saved["num_kv_shared_layers"] == 2
    assert saved["rope_parameters"]["full_attention"]["partial_rotary_factor"] == 0.25
    loaded, config = tnn.load_hf(tmp_path / "ck")
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # Layer 1 (global): 16-wide heads, one key/value head, no value projection.
    assert tensors["model.layers.1.self_attn.q_proj.weight"].shape == (4 * 16, 16)
    assert tensors["model.layers.1.self_attn.k_proj.weight"].shape == (16, 16)
    assert "model.layers.1.self_attn.v_proj.weight" not in tensors
    assert tensors["model.layers.0.self_attn.v_proj.weight"].shape == (2 * 8, 16)
    # Layers 2-3 read layers 0-1's keys and values: no k/v tensors, a double-wide MLP.
    assert not any(f"layers.{i}.self_attn.k_" in n for n in tensors for i in (2, 3))
    assert tensors["model.layers.3.mlp.down_proj.weight"].shape == (16, 24)
    assert tensors["model.embed_tokens_per_layer.weight"].shape == (20, 4 * 4)
    np.testing.assert_array_equal(
        tensors["model.layers.2.layer_scalar"], want["stack.layers.2.scale"]
    )


#: GEMMA4 with the MoE block beside every MLP (26B-A4B's form): 4 experts, top 2.
MOE = dict(
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=6, router_aux_loss=0.0,
                      beside_mlp=True, router_input_norm=True, router_expert_scale=True),
)  # fmt: skip


def test_the_moe_block_beside_the_mlp_round_trips_in_transformers_layout(tmp_path):
    model, tensors = saved_random(tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, GEMMA4 | MOE))
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert saved["enable_moe_block"] and (saved["num_experts"], saved["top_k_experts"]) == (4, 2)
    loaded, config = tnn.load_hf(tmp_path / "ck")
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # gate_up_proj [E, 2f, d]: each expert's gate rows, then its up rows.
    fused, t = tensors["model.layers.0.experts.gate_up_proj"], "stack.layers.0.moe.experts."
    np.testing.assert_array_equal(fused[:, :6].transpose(0, 2, 1), want[t + "fc_gate.kernel"])
    np.testing.assert_array_equal(fused[:, 6:].transpose(0, 2, 1), want[t + "fc_in.kernel"])
    assert tensors["model.layers.0.experts.down_proj"].shape == (4, 16, 6)
    assert "model.layers.0.mlp.gate_proj.weight" in tensors  # the dense MLP stays


def test_the_default_config_is_read_as_transformers_reads_it():
    """transformers' default text config (as its to_dict writes it, ``per_layer_config`` and
    all); the same from a config.json leaving every key out, and from the release form
    (``global_head_dim``; ``num_global_key_value_heads`` read only with ``attention_k_eq_v``)."""
    config = gemma4_config_from_hf(DEFAULT_JSON)
    g = config.gemma4
    assert (config.d_model, config.num_layers, config.head_dim, g.global_head_dim) == (
        2304,
        30,
        256,
        512,
    )
    assert (
        config.attention.window_pattern == ("local",) * 5 + ("global",)
        and config.attention.sliding_window == 512
    )
    assert (
        config.position.rope_theta,
        config.position.rope_local_theta,
        g.global_rope_proportion,
    ) == (
        1e6,
        1e4,
        0.25,
    )
    assert (g.per_layer_input_dim, g.per_layer_vocab_size) == (256, None)
    assert g.value_norm and g.layer_scale and not config.norm.plus_one
    assert (
        config.attention.query_pre_attn_scalar,
        g.kv_shared_layers,
        g.global_kv_heads,
    ) == (
        1.0,
        0,
        None,
    )
    # Every other key left out: the same model (its sizes are required: `tjx.nn.hf.keys`).
    sizes = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
             "num_attention_heads")  # fmt: skip
    bare = gemma4_config_from_hf(
        {"model_type": "gemma4_text"} | {k: DEFAULT_JSON[k] for k in sizes}
    )
    assert bare == config
    # "vision": image tokens attend both ways, text stays causal: the same text model.
    assert gemma4_config_from_hf(DEFAULT_JSON | {"use_bidirectional_attention": "vision"}) == config
    release = {k: v for k, v in DEFAULT_JSON.items() if k != "per_layer_config"}
    assert gemma4_config_from_hf(release | {"num_global_key_value_heads": 1}) == config
    k_eq_v = gemma4_config_from_hf(release | {"attention_k_eq_v": True,
                                              "num_global_key_value_heads": 1})  # fmt: skip
    assert (k_eq_v.gemma4.global_kv_heads, k_eq_v.gemma4.global_values_from_keys) == (1, True)
    # The last layer is always global, as transformers forces it.
    forced = gemma4_config_from_hf(
        {k: DEFAULT_JSON[k] for k in sizes}
        | {
            "model_type": "gemma4_text",
            "num_hidden_layers": 2,
            "layer_types": ["sliding_attention"] * 2,
        }
    )
    assert forced.layer_windows() == (512, None)


#: A RoPE scaling on the sliding layers (transformers would scale them; tjx does not).
LINEAR_LOCAL = {
    "sliding_attention": {"rope_type": "linear", "factor": 2.0},
    "full_attention": {"rope_type": "default"},
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(enable_moe_block=True), "enable_moe_block true needs num_experts"),
        (dict(use_bidirectional_attention="all"), "use_bidirectional_attention 'all'"),
        (dict(hidden_activation="silu"), "hidden_activation must be one of"),
        (dict(attention_bias=True), "attention_bias true"),
        (
            dict(rope_parameters=LINEAR_LOCAL),
            "rope_parameters.sliding_attention rope_type 'linear'",
        ),
        (dict(per_layer_config={"1": {"head_dim": 16}}), "per_layer_config must override"),
        (dict(altup_num_inputs=4), "altup_num_inputs"),
    ],
)
def test_what_tjx_cannot_honour_is_refused_by_name(change, message):
    hf = gemma4_config_to_hf(tnn.make_config(tnn.LlamaConfig, GEMMA4)) | change
    with pytest.raises(ValueError, match=message):
        gemma4_config_from_hf(hf)


def test_an_image_text_folder_loads_as_its_text_model(tmp_path, capsys):
    """The published form: ``gemma4`` with a ``text_config``, the language model under
    ``model.language_model.``, towers beside (skipped in one line)."""
    model, tensors = saved_random(tmp_path / "text", tnn.make_config(tnn.LlamaConfig, GEMMA4))
    text = json.loads((tmp_path / "text" / "config.json").read_text())
    folder = tmp_path / "image-text"
    folder.mkdir()
    outer = {"model_type": "gemma4", "text_config": text, "vision_config": {"hidden_size": 4},
             "image_token_id": 5, "tie_word_embeddings": True}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(outer))
    stored = {k.replace("model.", "model.language_model.", 1): v for k, v in tensors.items()}
    stored["model.vision_tower.patch.weight"] = np.ones((2, 2), np.float32)
    save_file(stored, str(folder / "model.safetensors"))
    loaded, config = tnn.load_hf(folder)
    assert config == model.config
    got, want = tnn.get_flat_params(loaded), tnn.get_flat_params(model)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    assert capsys.readouterr().err.count("skipping the checkpoint's vision and audio towers") == 1
    with pytest.raises(ValueError, match="audio_soft_tokens"):
        gemma4_image_text_config(outer | {"audio_soft_tokens": 3})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"norm.plus_one": True}, "norm.plus_one=True .needs False."),
        ({"gemma4.value_norm": False}, "gemma4.value_norm=False .needs True."),
        ({"gemma4.kv_shared_mlp_dim": 20}, "gemma4.kv_shared_mlp_dim=20"),
        (
            {"gemma4.global_values_from_keys": False},
            "gemma4.global_values_from_keys=False .needs True.",
        ),
        (MOE | {"moe.router": "sigmoid"}, "moe.router='sigmoid' .needs 'softmax'."),
        (MOE | {"moe.router_expert_scale": False}, "moe.router_expert_scale=False .needs True."),
    ],
)
def test_a_config_gemma4_does_not_compute_is_not_saved_as_it(change, message):
    with pytest.raises(ValueError, match=f"'gemma4_text' cannot express this model: .*{message}"):
        dotted = {k: v for k, v in change.items() if "." in k}
        plain = {k: v for k, v in change.items() if "." not in k}
        gemma4_config_to_hf(tnn.make_config(tnn.LlamaConfig, GEMMA4 | plain).replace(**dotted))


def test_another_model_type_is_refused_naming_gemma4s_switches(tmp_path):
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, GEMMA4), rngs=nnx.Rngs(0))
    with pytest.raises(
        ValueError, match="'gemma3_text' cannot express gemma4.global_head_dim, gemma4.global_kv"
    ):
        tnn.save_hf(model, tmp_path, model_type="gemma3_text")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(scan_layers=True), "scan_layers True is not supported with gemma4.global_head_dim"),
        ({"gemma4.kv_shared_layers": 4}, "gemma4.kv_shared_layers .4. must be below num_layers"),
        ({"gemma4.kv_shared_layers": 3}, "layer 1 reads the keys and values of an earlier layer"),
        (
            {"gemma4.kv_shared_layers": 0},
            "^Gemma4Options.kv_shared_mlp_dim: only kv_shared_layers use it",
        ),
        ({"gemma4.global_kv_heads": 3}, "^LlamaConfig.gemma4.global_kv_heads: 3 must divide"),
        (
            {"gemma4.global_rope_proportion": 1.5},
            "^Gemma4Options.global_rope_proportion must be a number in",
        ),
        ({"attention.decode_topk": 2}, "attention.decode_topk 2 is not supported with gemma4"),
        (dict(moe=dict(beside_mlp=True)), "MoEConfig.beside_mlp: only MoE models use it"),
    ],
)
def test_the_config_refuses_what_the_layers_cannot_run(change, message):
    """(The ``moe`` section given as a mapping here: its own checks run as it is built.)"""
    with pytest.raises(ValueError, match=message):
        if "moe" in change:
            change = dict(change, moe=tnn.MoEConfig(**change["moe"]))
        plain = {k: v for k, v in change.items() if "." not in k}
        tnn.make_config(tnn.LlamaConfig, GEMMA4 | plain).replace(
            **{k: v for k, v in change.items() if "." in k}
        )


def _rms(x: np.ndarray, w: np.ndarray | float = 1.0) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + 1e-6) * w


def _gelu_tanh(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def test_per_layer_embeddings_match_a_float64_reference():
    """transformers' PLE pipeline (``get_per_layer_inputs``, ``project_per_layer_inputs``, the
    layer's gate/projection/norm) written in NumPy, against tjx's modules in float64."""
    with jax.enable_x64(True):
        config = tnn.make_config(
            tnn.LlamaConfig, {**GEMMA4, "precision": tnn.Precision(jnp.float64, jnp.float64)}
        )
        rngs = nnx.Rngs(0)
        embed, layer = PerLayerEmbed(config, rngs=rngs), PerLayerInput(config, rngs=rngs, out_std=1)
        rs = np.random.RandomState(1)
        for module in (embed, layer):
            flat = tnn.get_flat_params(module)
            tnn.set_flat_params(module, {k: rs.randn(*v.shape) for k, v in flat.items()})
        ids = rs.randint(0, 20, size=(2, 5))
        x = rs.randn(2, 5, 16)
        got = np.asarray(embed(jnp.asarray(ids), jnp.asarray(x)))
        table = np.asarray(embed.table.embedding[...])
        proj = np.asarray(embed.proj.kernel[...])
        token = table[ids].reshape(2, 5, 4, 4) * math.sqrt(4)
        context = _rms((x @ proj / math.sqrt(16)).reshape(2, 5, 4, 4), embed.norm.scale[...])
        # transformers rounds the factor to float32 first (sqrt(4), 1/sqrt(16) are exact).
        want = (context + token) * float(np.float32(2**-0.5))
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        h = rs.randn(2, 5, 16)
        out = np.asarray(layer(jnp.asarray(h), jnp.asarray(want[:, :, 2])))
        gate, up = np.asarray(layer.gate.kernel[...]), np.asarray(layer.proj.kernel[...])
        ref = h + _rms((_gelu_tanh(h @ gate) * want[:, :, 2]) @ up, layer.norm.scale[...])
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


def test_proportional_rope_matches_a_float64_reference():
    """transformers' proportional RoPE: the first int(p·d/2) pairs (i, i + d/2) turn at
    theta^(-2i/d), the rest stay; at p = 1 it is plain RoPE."""
    with jax.enable_x64(True):
        rs = np.random.RandomState(2)
        x, pos = rs.randn(2, 5, 3, 16), rs.randint(0, 50, size=(2, 5))
        got = np.asarray(proportional_rope(jnp.asarray(x), jnp.asarray(pos), theta=1e4,
                                           proportion=0.25))  # fmt: skip
        inv = np.zeros(8)
        inv[:2] = 1.0 / 1e4 ** (np.arange(0, 4, 2) / 16)
        ang = pos[..., None, None] * inv  # [b, s, 1, 8]
        x1, x2 = x[..., :8], x[..., 8:]
        want = np.concatenate([x1 * np.cos(ang) - x2 * np.sin(ang),
                               x2 * np.cos(ang) + x1 * np.sin(ang)], axis=-1)  # fmt: skip
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(got[..., 2:8], x[..., 2:8])
        full = proportional_rope(jnp.asarray(x), jnp.asarray(pos), theta=1e4, proportion=1.0)
        plain = tnn.apply_rope(jnp.asarray(x), jnp.asarray(pos), theta=1e4)
        np.testing.assert_allclose(np.asarray(full), np.asarray(plain), rtol=1e-12, atol=1e-12)


def test_decoding_with_the_cache_reproduces_the_full_forward():
    """Prefill and decode steps (the shared layers reading their sources' caches, the global
    layers' own cache entries) give the logits of one full call, past the window."""
    config = tnn.make_config(tnn.LlamaConfig, GEMMA4)
    model = tnn.Llama(config, rngs=nnx.Rngs(3))
    tokens = jnp.asarray(np.random.RandomState(3).randint(0, 20, size=(2, 9)))  # PLE's rows
    full = np.asarray(model(tokens))
    cache = model.init_cache(2, 9)
    assert cache["global_k"].shape == (1, 2, 9, 1, 16) and cache["k"].shape == (1, 2, 9, 2, 8)
    held = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(cache))
    assert tnn.kv_cache_bytes(config, batch=2, seq_len=9, dtype=jnp.float32) == held
    run = nnx.jit(lambda m, ids, c, pos: m.forward_cached(ids, c, pos))  # one compile per shape
    logits, cache = run(model, tokens[:, :4], cache, jnp.zeros((2,), jnp.int32))
    steps = [np.asarray(logits)]
    for t in range(4, 9):
        step, cache = run(model, tokens[:, t : t + 1], cache, jnp.full((2,), t, jnp.int32))
        steps.append(np.asarray(step))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, rtol=1e-5, atol=1e-5)
