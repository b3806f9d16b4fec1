"""Llama 4 text checkpoints and switches without transformers: tjx's export loads back to the same
weights, the fused experts and the interleaved RoPE rows are laid out as transformers reads them,
transformers' defaults are read as it reads them, what tjx cannot honour is refused in one line,
and the switches compute what they say (chunks, NoPE layers, input-scaled experts; against
transformers itself: tests-integration's test_hf_families.py)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from tjx import nn as tnn
from tjx.nn.families.llama4.hf_read import llama4_config_from_hf
from tjx.nn.families.llama4.hf_write import llama4_config_to_hf
from tjx.nn.moe import dispatch
from tjx.nn.moe.config import moe_layers
from tjx_nn_tests._helpers import saved_random

#: Layers 0-2 RoPE and chunked (chunks of 3), layer 3 NoPE and tempered; MoE layers 1 and 3 (4
#: experts of 4, a shared one) beside dense layers of 8; every width its own, so a row taken from
#: the wrong place shows.
LLAMA4 = dict(
    vocab_size=24, max_seq_len=16, d_model=16, num_layers=4, num_heads=4, num_kv_heads=2,
    head_dim=8, mlp=tnn.MLPConfig(dim=8), **{"attention.chunk": 3},
    **{"attention.window_pattern": ("local",) * 3 + ("global",)},
    **{"llama4.global_nope": True}, qk_l2_norm=True,
    **{"llama4.nope_temperature_floor": 2.0}, **{"llama4.nope_temperature_scale": 0.5},
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=1, expert_mlp_dim=4, num_shared_experts=1,
                      shared_expert_mlp_dim=4, layer_step=2, router="sigmoid_plain",
                      router_norm_topk=False, router_scales_input=True),
)  # fmt: skip


def test_an_export_loads_back_as_the_same_model_in_transformers_layout(tmp_path):
    model, hf = saved_random(tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, LLAMA4))
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("llama4_text", ["Llama4ForCausalLM"])
    assert (saved["no_rope_layers"], saved["moe_layers"], saved["attention_chunk_size"]) == (
        [1, 1, 1, 0],
        [1, 3],
        3,
    )
    assert (saved["intermediate_size"], saved["intermediate_size_mlp"], saved["floor_scale"]) == (
        4,
        8,
        2,
    )
    loaded, config = tnn.load_hf(tmp_path / "ck")
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # The fused experts: gate_up_proj [E, d, 2f] is the gate's columns, then the up ones.
    p, t = "model.layers.1.feed_forward.", "stack.layers.1.moe."
    gate_up = hf[p + "experts.gate_up_proj"]
    assert gate_up.shape == (4, 16, 8) and hf[p + "experts.down_proj"].shape == (4, 4, 16)
    np.testing.assert_array_equal(gate_up[..., :4], want[t + "experts.fc_gate.kernel"])
    np.testing.assert_array_equal(gate_up[..., 4:], want[t + "experts.fc_in.kernel"])
    np.testing.assert_array_equal(hf[p + "experts.down_proj"], want[t + "experts.fc_out.kernel"])
    np.testing.assert_array_equal(hf[p + "router.weight"], want[t + "router.kernel"].T)
    assert "model.layers.0.feed_forward.gate_proj.weight" in hf
    assert hf[p + "shared_expert.down_proj.weight"].shape == (16, 4)
    # RoPE's pairs: HF row 2i of a head is tjx's dim i, row 2i + 1 its dim i + head_dim / 2.
    q = hf["model.layers.0.self_attn.q_proj.weight"].reshape(4, 8, 16)
    query = want["stack.layers.0.attn.query.kernel"]  # [d, heads, head_dim]
    np.testing.assert_array_equal(q[:, 0::2], query[..., :4].transpose(1, 2, 0))
    np.testing.assert_array_equal(q[:, 1::2], query[..., 4:].transpose(1, 2, 0))


def test_an_image_text_folder_loads_as_its_text_model(tmp_path, capsys):
    """The published folders' layout (``llama4``, ``Llama4ForConditionalGeneration``): the text
    model under ``language_model.``, a vision tower and projector beside, skipped in one line
    (against transformers' own image-text folder: checked by hand, 2e-7 of its language model's
    logits; transformers 5.24's image-text forward itself fails on text alone)."""
    model, hf = saved_random(tmp_path / "text", tnn.make_config(tnn.LlamaConfig, LLAMA4))
    text = json.loads((tmp_path / "text" / "config.json").read_text())
    folder = tmp_path / "image-text"
    folder.mkdir()
    config = dict(model_type="llama4", text_config=text, vision_config={}, image_token_index=9,
                  tie_word_embeddings=False)  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    tensors = {"language_model." + k: v for k, v in hf.items()}
    tensors |= {"vision_model.class_embedding": np.ones(4, np.float32),
                "multi_modal_projector.linear_1.weight": np.ones((16, 4), np.float32)}  # fmt: skip
    save_file(tensors, str(folder / "model.safetensors"))
    loaded, got = tnn.load_hf(folder)
    assert got == model.config
    want = tnn.get_flat_params(model)
    for name, value in tnn.get_flat_params(loaded).items():
        np.testing.assert_array_equal(value, want[name], err_msg=name)
    assert capsys.readouterr().err.count("skipping the checkpoint's vision tower") == 1
    tied = dict(config, text_config=text | {"tie_word_embeddings": True})
    (folder / "config.json").write_text(json.dumps(tied))
    with pytest.raises(ValueError, match="tie_word_embeddings False of the image-text model"):
        tnn.load_hf(folder)
    bad_configs = [
        (dict(config, text_config=None), "'llama4' has no text_config"),
        (dict(config, vision_rope=1), "vision_rope are not understood"),
    ]
    for bad, message in bad_configs:
        (folder / "config.json").write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=message):
            tnn.read_hf_config(folder)


def test_transformers_defaults_are_read_as_transformers_reads_them():
    """Left out: Scout's sizes and switches: head_dim 128, 8 key/value heads, RoPE base 500000,
    every layer MoE (16 experts, top 1), a NoPE layer every fourth, chunks of 8192, the
    temperature (8192, 0.1). The model's own sizes are required (`tjx.nn.hf.keys`)."""
    hf = dict(model_type="llama4_text", vocab_size=32, hidden_size=32, num_hidden_layers=8,
              num_attention_heads=16, intermediate_size=8192)  # fmt: skip
    c = llama4_config_from_hf(hf)
    assert (c.head_dim, c.num_kv_heads, c.position.rope_theta, c.position.rope_scaling) == (
        128,
        8,
        500000.0,
        None,
    )
    moe = c.moe
    got = (moe.num_experts, moe.experts_per_token, moe.layer_step, moe.first_dense)
    assert got == (16, 1, 1, 0)
    assert (c.mlp.dim, moe.expert_mlp_dim, moe.shared_expert_mlp_dim) == (16384, 8192, 8192)
    assert c.layer_locals() == (True, True, True, False) * 2 and c.llama4.global_nope
    assert (
        c.attention.chunk,
        c.llama4.nope_temperature_floor,
        c.llama4.nope_temperature_scale,
    ) == (
        8192,
        8192.0,
        0.1,
    )
    assert (c.qk_l2_norm, c.norm.eps, c.max_seq_len, c.tie_embeddings) == (
        True,
        1e-5,
        131072,
        False,
    )
    # An explicit moe_layers list wins over the step; null head_dim is hidden_size // heads.
    c = llama4_config_from_hf(hf | dict(moe_layers=[5, 7], head_dim=None, no_rope_layers=[1] * 8))
    assert (tuple(np.flatnonzero(moe_layers(c))), c.moe.layer_step, c.head_dim) == ((5, 7), 2, 2)
    assert (c.attention.window_pattern, c.llama4.global_nope, c.llama4.nope_temperature_floor) == (
        None,
        False,
        None,
    )
    dense = llama4_config_from_hf(hf | dict(moe_layers=[], attention_chunk_size=None,
                                            no_rope_layers=[1] * 8))  # fmt: skip
    assert (dense.moe.num_experts, dense.attention.chunk) == (0, None)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(attention_bias=True), "attention_bias true"),
        (dict(hidden_act="gelu"), "hidden_act must be 'silu'"),
        (dict(rope_parameters=dict(rope_type="yarn", factor=2.0)), "type 'yarn' is not supp"),
        (dict(attention_chunk_size=None), "attention_chunk_size null with NoPE layers"),
        (dict(layer_types=["full_attention"] * 4), "layer_types .* tjx chunks exactly the RoPE"),
        (dict(moe_layers=[0, 3]), r"moe_layers \[0, 3\] is not supported"),
        (dict(no_rope_layers=[1, 2, 1, 1]), "no_rope_layers must list at least 4"),
        (dict(pixel_shuffle_ratio=0.5), "pixel_shuffle_ratio are not understood"),
    ],
)
def test_what_tjx_cannot_honour_is_refused_by_name(change, message):
    hf = llama4_config_to_hf(tnn.make_config(tnn.LlamaConfig, LLAMA4)) | change
    with pytest.raises(ValueError, match=message):
        llama4_config_from_hf(hf)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"moe.router": "sigmoid"}, "moe.router='sigmoid' .needs 'sigmoid_plain'."),
        ({"moe.router_scales_input": False}, "moe.router_scales_input=False .needs True."),
        ({"moe.shared_expert_mlp_dim": 6}, "moe.shared_expert_mlp_dim=6 .needs 4."),
        (dict(**{"attention.qk_norm": True}), "qk_norm=True .needs False."),
        (
            dict(
                **{"llama4.global_nope": False},
                **{"llama4.nope_temperature_floor": None},
                **{"llama4.nope_temperature_scale": 0.1},
            ),
            "global_nope=False .needs True.",
        ),
    ],
)
def test_a_config_llama4_does_not_compute_is_not_saved_as_it(change, message):
    with pytest.raises(ValueError, match=f"'llama4_text' cannot express this model: .*{message}"):
        llama4_config_to_hf(tnn.make_config(tnn.LlamaConfig, LLAMA4).replace(**change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            dict(**{"attention.sliding_window": 4}),
            "AttentionConfig.chunk: a local layer has a chunk or a sliding_window",
        ),
        (
            dict(**{"attention.chunk": None}),
            "window_pattern: it says which layers use sliding_window",
        ),
        (dict(**{"attention.window_pattern": None}), "global_nope: needs position 'rope'"),
        (dict(**{"llama4.global_nope": False}), "nope_temperature_floor/scale: only NoPE layers"),
        (
            dict(**{"llama4.nope_temperature_floor": None}),
            "nope_temperature_floor/scale: only NoPE layers",
        ),
        (dict(**{"llama4.nope_temperature_scale": "x"}), "nope_temperature_scale must be a number"),
    ],
)
def test_llama4_switches_where_they_cannot_act_are_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        tnn.make_config(tnn.LlamaConfig, LLAMA4 | change)
    with pytest.raises(ValueError, match="qk_l2_norm: only rotated"):
        tnn.LlamaConfig(position=tnn.PositionConfig(kind="learned"), qk_l2_norm=True)


def test_input_scaled_experts_weigh_each_experts_input():
    """``Σ_k expert_e(w_k · x)`` (SwiGLU is not homogeneous: the place of the weight matters),
    dropless and through the capacity path alike, against a direct float32 computation."""
    rng = np.random.default_rng()
    d, f, num = 4, 3, 3
    shapes = ((num, d, f), (num, d, f), (num, f, d))
    kernels = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in shapes)
    w = dispatch.ExpertWeights(*kernels, None, None, None)
    ffn = dispatch.FFN(jax.nn.silu, True, jnp.float32)
    x = jnp.asarray(rng.normal(size=(1, 5, d)), jnp.float32)
    experts = jnp.asarray(rng.integers(0, num, (1, 5, 2)), jnp.int32)
    experts = experts.at[..., 1].set((experts[..., 0] + 1) % num)
    weights = jnp.asarray(rng.uniform(0.2, 2.0, (1, 5, 2)), jnp.float32)

    def expert(v, e):
        return (jax.nn.silu(v @ w.fc_gate[e]) * (v @ w.fc_in[e])) @ w.fc_out[e]

    want = jnp.stack([sum(expert(weights[0, t, k] * x[0, t], int(experts[0, t, k]))
                          for k in range(2)) for t in range(5)])  # fmt: skip
    got = dispatch.dropless(x[0], experts[0], weights[0], w, ffn, scale_input=True)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    kept, dropped = dispatch.capacity(x, experts, weights, w, ffn, slots=10, scale_input=True)
    assert int(dropped) == 0
    np.testing.assert_allclose(kept[0], want, rtol=1e-5, atol=1e-5)
    output_scaled = dispatch.dropless(x[0], experts[0], weights[0], w, ffn)
    assert float(jnp.max(jnp.abs(output_scaled - want))) > 1e-2


def test_a_chunked_layers_queries_see_their_own_chunk_only():
    """One local layer, chunks of 4: positions 4-7 ignore tokens 0-3 (a window of 4 would not),
    and positions 0-3 ignore tokens 4-7 (causal)."""
    config = tnn.LlamaConfig(vocab_size=24, max_seq_len=16, d_model=16, num_layers=1,
                             num_heads=2, head_dim=8, mlp=tnn.MLPConfig(dim=8),
                             attention=tnn.AttentionConfig(chunk=4))  # fmt: skip
    model = tnn.Llama(config, rngs=nnx.Rngs(int(np.random.default_rng().integers(99))))
    tokens = jnp.asarray(np.random.default_rng().integers(0, 24, (1, 8)))
    other = tokens.at[0, :4].set((tokens[0, :4] + 1) % 24).at[0, 7].set((tokens[0, 7] + 1) % 24)
    both = np.asarray(nnx.jit(lambda m, t: m(t))(model, jnp.concatenate([tokens, other])))
    np.testing.assert_allclose(both[0, 4:7], both[1, 4:7], rtol=1e-6, atol=1e-6)
    assert np.abs(both[0, :4] - both[1, :4]).max() > 1e-3  # the changed tokens did matter


@pytest.mark.parametrize("scan", [False, True], ids=["unrolled", "scanned"])
def test_a_prefill_then_decode_steps_are_the_whole_sequences_logits(scan):
    """Chunks of 3 over 12 positions (the decode steps cross two chunk starts), the NoPE layer's
    temperature at each step's own position; scanned, the local flags are traced (the pattern
    and the MoE step make a unit of 4 layers) and the logits are the unrolled model's."""
    seed = int(np.random.default_rng().integers(1 << 20))
    config = tnn.make_config(tnn.LlamaConfig, LLAMA4)
    model = tnn.Llama(config.replace(scan_layers=scan), rngs=nnx.Rngs(seed))
    forward = nnx.jit(lambda m, t: m(t))
    cached = nnx.jit(lambda m, t, c, p: m.forward_cached(t, c, p))
    tokens = jnp.asarray(np.random.default_rng(seed).integers(0, 24, (2, 12)))
    whole = np.asarray(forward(model, tokens))
    if scan:
        unrolled = tnn.Llama(config, rngs=nnx.Rngs(0))
        tnn.set_flat_params(unrolled, tnn.get_flat_params(model))
        np.testing.assert_allclose(forward(unrolled, tokens), whole, rtol=1e-5, atol=1e-5)
    cache = model.init_cache(2, 16)
    logits, cache = cached(model, tokens[:, :5], cache, jnp.zeros((2,), jnp.int32))
    np.testing.assert_allclose(logits, whole[:, :5], rtol=1e-5, atol=1e-5)
    for pos in range(5, 12):
        step, cache = cached(model, tokens[:, pos : pos + 1], cache, jnp.full((2,), pos))
        np.testing.assert_allclose(step[:, 0], whole[:, pos], rtol=1e-5, atol=1e-5)
