"""``load_hf`` / ``save_hf`` of Qwen3, OLMo 2, Phi-3 and Gemma 2/3 without transformers: layouts,
config round trips, configs shaped like the published ones, and every refusal in one line
(transformers itself: tests-integration's ``test_hf_families.py``)."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open

from tjx import nn as tnn
from tjx.nn.hf.families import family_config_from_hf, family_config_to_hf
from tjx.nn.hf.family_tensors import family_mapping
from tjx_nn_tests._helpers import most_reads_alive

BASE = dict(vocab_size=48, max_seq_len=32, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2)
GEMMA = dict(
    norm=tnn.NormConfig(position="sandwich", plus_one=True),
    scale_embeddings=True,
    mlp=tnn.MLPConfig(activation="geglu"),
    **{"attention.query_pre_attn_scalar": 12},
)
#: Each family with the windows it may have (layer 1 of Qwen3, every Phi-3 layer, Gemma's
#: alternate layers from 0; Gemma 3's local layers at their own RoPE base).
CONFIGS = {
    "qwen3": dict(
        **{"attention.qk_norm": True},
        head_dim=16,
        **{"attention.sliding_window": 8},
        **{"attention.window_pattern": ("global", "local")},
    ),
    "olmo2": dict(
        norm=tnn.NormConfig(position="output"),
        **{"attention.qk_norm": True},
        **{"attention.qk_norm_scope": "projection"},
    ),
    "olmo3": dict(
        norm=tnn.NormConfig(position="output"),
        **{"attention.qk_norm": True},
        **{"attention.qk_norm_scope": "projection"},
        **{"attention.sliding_window": 8},
        **{"attention.window_pattern": ("local", "global")},
    ),
    "phi3": dict(**{"attention.sliding_window": 8}),
    "gemma2": dict(
        **GEMMA,
        **{"attention.logit_softcap": 2.0},
        final_logit_softcap=3.0,
        tie_embeddings=True,
        **{"attention.sliding_window": 8},
        **{"attention.window_pattern": ("local", "global")},
    ),
    "gemma3_text": dict(
        **GEMMA,
        **{"attention.qk_norm": True},
        **{"attention.sliding_window": 8},
        **{"attention.window_pattern": ("local", "global")},
        position=tnn.PositionConfig(rope_local_theta=100.0),
    ),
}
#: Tensors of layer 0 each family's checkpoint holds beyond the shared o_proj and down_proj.
LAYER0 = {
    "qwen3": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "q_norm", "k_norm"},
    "olmo2": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "q_norm", "k_norm"},
    "olmo3": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "q_norm", "k_norm"},
    "phi3": {"qkv_proj", "gate_up_proj"},
    "gemma2": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"},
    "gemma3_text": {"q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "q_norm", "k_norm"},
}
NORMS = {
    "qwen3": {"input_layernorm", "post_attention_layernorm"},
    "olmo2": {"post_attention_layernorm", "post_feedforward_layernorm"},
    "olmo3": {"post_attention_layernorm", "post_feedforward_layernorm"},
    "phi3": {"input_layernorm", "post_attention_layernorm"},
    "gemma2": {
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    },
}
NORMS["gemma3_text"] = NORMS["gemma2"]


def _model(family, **kw):
    config = tnn.make_config(tnn.LlamaConfig, {**BASE, **CONFIGS[family], **kw})
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    rs = np.random.RandomState(1)
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.2 * rs.randn(*v.shape) for k, v in flat.items()})
    return model


def _layer0(folder):
    with safe_open(str(folder / "model.safetensors"), framework="np") as handle:
        names = [n for n in handle.keys() if n.startswith("model.layers.0.")]  # noqa: SIM118
    return {n.split(".")[-2] for n in names}


@pytest.mark.parametrize("family", list(CONFIGS))
def test_family_saves_in_its_layout_and_loads_back_exactly(tmp_path, family):
    model = _model(family, scan_layers=family == "gemma2")
    explicit = "phi3" if family == "phi3" else None  # Phi-3 computes what Llama does
    tnn.save_hf(model, tmp_path / "out", model_type=explicit)
    hf = json.loads((tmp_path / "out" / "config.json").read_text())
    assert hf["model_type"] == family
    assert _layer0(tmp_path / "out") == LAYER0[family] | NORMS[family] | {"o_proj", "down_proj"}
    loaded, config = tnn.load_hf(tmp_path / "out")
    assert config == model.config.replace(scan_layers=False)
    tokens = jnp.asarray(np.random.RandomState(2).randint(0, 48, (2, 9)))
    # (The Gemma 2 case saves a scanned model: its float32 sums come in another order.)
    np.testing.assert_allclose(loaded(tokens), model(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("family", ["phi3", "gemma2", "olmo2"])
def test_import_holds_one_checkpoint_tensor_at_a_time(tmp_path, monkeypatch, family):
    """The import reads each tensor (Phi-3's fused ones once per part) and lets it go before the
    next: what keeps its peak memory near the weights' bytes (measured: the tjx-nn README)."""
    tnn.save_hf(_model(family, scan_layers=family == "olmo2"), tmp_path / "ck", model_type=family)
    assert most_reads_alive(monkeypatch, tmp_path / "ck") == (1, 0)


def test_phi3_fused_tensors_hold_q_k_v_and_gate_up_row_after_row(tmp_path):
    model = _model("phi3")
    tnn.save_hf(model, tmp_path / "out", model_type="phi3")
    flat = tnn.get_flat_params(model)
    with safe_open(str(tmp_path / "out" / "model.safetensors"), framework="np") as handle:
        qkv = handle.get_tensor("model.layers.1.self_attn.qkv_proj.weight")
        gate_up = handle.get_tensor("model.layers.1.mlp.gate_up_proj.weight")
    q = flat["stack.layers.1.attn.query.kernel"].reshape(32, -1).T  # [4 * 8, 32]
    v = flat["stack.layers.1.attn.value.kernel"].reshape(32, -1).T  # [2 * 8, 32]
    m = model.config.mlp.dim
    assert qkv.shape == (32 + 16 + 16, 32) and gate_up.shape == (2 * m, 32)
    np.testing.assert_array_equal(qkv[:32], q)
    np.testing.assert_array_equal(qkv[48:], v)
    np.testing.assert_array_equal(gate_up[:m], flat["stack.layers.1.mlp.fc_gate.kernel"].T)
    np.testing.assert_array_equal(gate_up[m:], flat["stack.layers.1.mlp.fc_in.kernel"].T)


@pytest.mark.parametrize("family", list(CONFIGS))
def test_family_config_json_round_trips(family):
    config = tnn.make_config(tnn.LlamaConfig, {**BASE, **CONFIGS[family]})
    hf = family_config_to_hf(config, family)
    assert family_config_from_hf(json.loads(json.dumps(hf))) == config
    assert set(family_mapping(config, family).to_tjx) == set(tnn.get_flat_params(
        nnx.eval_shape(lambda: tnn.Llama(config, rngs=nnx.Rngs(0)))
    ))  # fmt: skip


# Shaped like the hub's config.json of Qwen3-0.6B, OLMo-2-1124-7B, Phi-3-mini-4k-instruct,
# gemma-2-2b and gemma-3-1b (sizes, keys and the values that decide what tjx computes).
PUBLISHED = {
    "qwen3": dict(
        architectures=["Qwen3ForCausalLM"], attention_bias=False, attention_dropout=0.0,
        bos_token_id=151643, eos_token_id=151645, head_dim=128, hidden_act="silu",
        hidden_size=1024, initializer_range=0.02, intermediate_size=3072,
        max_position_embeddings=40960, max_window_layers=28, model_type="qwen3",
        num_attention_heads=16, num_hidden_layers=28, num_key_value_heads=8, rms_norm_eps=1e-6,
        rope_scaling=None, rope_theta=1000000, sliding_window=None, tie_word_embeddings=True,
        torch_dtype="bfloat16", transformers_version="4.51.0", use_cache=True,
        use_sliding_window=False, vocab_size=151936,
    ),
    "olmo2": dict(
        architectures=["Olmo2ForCausalLM"], attention_bias=False, attention_dropout=0.0,
        eos_token_id=100257, hidden_act="silu", hidden_size=4096, initializer_range=0.02,
        intermediate_size=11008, max_position_embeddings=4096, model_type="olmo2",
        num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=32,
        pad_token_id=100277, rms_norm_eps=1e-6, rope_scaling=None, rope_theta=500000,
        tie_word_embeddings=False, torch_dtype="float32", use_cache=True, vocab_size=100352,
    ),
    "phi3": dict(
        architectures=["Phi3ForCausalLM"], attention_bias=False, attention_dropout=0.0,
        auto_map={"AutoConfig": "configuration_phi3.Phi3Config",
                  "AutoModelForCausalLM": "modeling_phi3.Phi3ForCausalLM"},
        bos_token_id=1, embd_pdrop=0.0, eos_token_id=32000, hidden_act="silu", hidden_size=3072,
        initializer_range=0.02, intermediate_size=8192, max_position_embeddings=4096,
        model_type="phi3", num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=32,
        original_max_position_embeddings=4096, pad_token_id=32000, resid_pdrop=0.0,
        rms_norm_eps=1e-5, rope_scaling=None, rope_theta=10000.0, sliding_window=2047,
        tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True, vocab_size=32064,
    ),
    "gemma2": dict(
        architectures=["Gemma2ForCausalLM"], attention_bias=False, attention_dropout=0.0,
        attn_logit_softcapping=50.0, bos_token_id=2, cache_implementation="hybrid",
        eos_token_id=[1, 107], final_logit_softcapping=30.0, head_dim=256,
        hidden_act="gelu_pytorch_tanh", hidden_activation="gelu_pytorch_tanh", hidden_size=2304,
        initializer_range=0.02, intermediate_size=9216, max_position_embeddings=8192,
        model_type="gemma2", num_attention_heads=8, num_hidden_layers=26, num_key_value_heads=4,
        pad_token_id=0, query_pre_attn_scalar=256, rms_norm_eps=1e-6, rope_theta=10000.0,
        sliding_window=4096, torch_dtype="float32", use_cache=True, vocab_size=256000,
    ),
    "gemma3_text": dict(
        architectures=["Gemma3ForCausalLM"], attention_bias=False, attention_dropout=0.0,
        attn_logit_softcapping=None, bos_token_id=2, cache_implementation="hybrid",
        eos_token_id=[1, 106], final_logit_softcapping=None, head_dim=256,
        hidden_activation="gelu_pytorch_tanh", hidden_size=1152, initializer_range=0.02,
        intermediate_size=6912, max_position_embeddings=32768, model_type="gemma3_text",
        num_attention_heads=4, num_hidden_layers=26, num_key_value_heads=1, pad_token_id=0,
        query_pre_attn_scalar=256, rms_norm_eps=1e-6, rope_local_base_freq=10000,
        rope_scaling=None, rope_theta=1000000, sliding_window=512, sliding_window_pattern=6,
        torch_dtype="bfloat16", use_cache=True, vocab_size=262144,
    ),
}  # fmt: skip


def test_published_shapes_load_or_are_refused_in_one_line_naming_why():
    qwen3 = family_config_from_hf(PUBLISHED["qwen3"])
    assert (qwen3.attention.qk_norm, qwen3.head_dim, qwen3.num_kv_heads, qwen3.tie_embeddings) == (
        True, 128, 8, True,
    )  # fmt: skip
    olmo2 = family_config_from_hf(PUBLISHED["olmo2"])
    assert olmo2.norm.position == "output" and olmo2.position.rope_theta == 500000.0
    # Phi-3-mini-4k: its window (2047 of 4096) slides in every layer.
    phi3 = family_config_from_hf(PUBLISHED["phi3"])
    assert (phi3.attention.sliding_window, phi3.attention.window_pattern, phi3.max_seq_len) == (
        2047,
        None,
        4096,
    )
    assert phi3.vocab_size == 32064 and not phi3.attention.qk_norm
    gemma2 = family_config_from_hf(PUBLISHED["gemma2"])
    assert (gemma2.attention.logit_softcap, gemma2.final_logit_softcap) == (50.0, 30.0)
    assert gemma2.attention.query_pre_attn_scalar == 256.0 and gemma2.tie_embeddings
    assert (gemma2.attention.sliding_window, gemma2.attention.window_pattern) == (
        4096,
        ("local", "global"),
    )
    # Gemma 3 1B: five local layers (window 512, base 1e4) and a global one (base 1e6).
    gemma3 = family_config_from_hf(PUBLISHED["gemma3_text"])
    assert (
        gemma3.attention.qk_norm and gemma3.final_logit_softcap is None and gemma3.num_kv_heads == 1
    )
    assert gemma3.attention.window_pattern == ("local",) * 5 + ("global",)
    assert (
        gemma3.attention.sliding_window,
        gemma3.position.rope_theta,
        gemma3.position.rope_local_theta,
    ) == (
        512,
        1e6,
        1e4,
    )
    assert gemma3.layer_windows()[:7] == (512,) * 5 + (None, 512)


def test_transformers_defaults_fill_what_a_gemma_config_leaves_out():
    small = dict(model_type="gemma2", vocab_size=8, hidden_size=8, intermediate_size=8,
                 num_hidden_layers=3, num_attention_heads=8, head_dim=4)  # fmt: skip
    config = family_config_from_hf(small)
    assert (config.attention.logit_softcap, config.final_logit_softcap) == (50.0, 30.0)
    assert config.attention.query_pre_attn_scalar == 256.0 and config.tie_embeddings
    assert config.layer_windows() == (4096, None, 4096)  # window 4096, layer 0 local
    # Gemma2Config's 4 key/value heads and 8192 positions (not one per head, not 2048).
    assert (config.num_kv_heads, config.max_seq_len) == (4, 8192)
    # Gemma 3's three layers are local (pattern 6): the default bases 1e6 global, 1e4 local.
    g3 = family_config_from_hf({**small, "model_type": "gemma3_text"})
    assert g3.attention.logit_softcap is None and (
        g3.position.rope_theta,
        g3.position.rope_local_theta,
    ) == (1e6, 1e4)
    assert (g3.num_kv_heads, g3.max_seq_len) == (4, 131_072)
    assert (g3.attention.sliding_window, g3.attention.window_pattern) == (4096, None)
    # Only global layers: no window, and the local base has nothing to rotate.
    full = ["full_attention"] * 3
    g3 = family_config_from_hf({**small, "model_type": "gemma3_text", "layer_types": full})
    assert (g3.attention.sliding_window, g3.position.rope_local_theta) == (None, None)


def test_qwen3_slides_from_max_window_layers_on_as_transformers_does():
    base = {**PUBLISHED["qwen3"], "num_hidden_layers": 4, "sliding_window": 8}
    assert family_config_from_hf(base).attention.sliding_window is None  # use_sliding_window false
    on = family_config_from_hf({**base, "use_sliding_window": True, "max_window_layers": 2})
    assert on.layer_windows() == (None, None, 8, 8)
    every = family_config_from_hf({**base, "use_sliding_window": True, "max_window_layers": 0})
    assert (every.attention.sliding_window, every.attention.window_pattern) == (8, None)


def test_v5_rope_parameters_are_read_per_layer_type():
    base = {**PUBLISHED["gemma3_text"], "sliding_window": 4096, "num_hidden_layers": 2}
    del base["rope_theta"], base["rope_local_base_freq"], base["rope_scaling"]
    rope = {"full_attention": {"rope_type": "default", "rope_theta": 1e6},
            "sliding_attention": {"rope_type": "default", "rope_theta": 1e6}}  # fmt: skip
    config = family_config_from_hf({**base, "rope_parameters": rope})
    assert config.position.rope_theta == 1e6 and config.position.rope_local_theta == 1e6
    rope["sliding_attention"]["rope_theta"] = 1e4
    assert family_config_from_hf({**base, "rope_parameters": rope}).position.rope_local_theta == 1e4
    rope["full_attention"] = {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}
    with pytest.raises(ValueError, match="rope_scaling of type 'linear' is not supported"):
        family_config_from_hf({**base, "rope_parameters": rope})


@pytest.mark.parametrize(
    ("family", "changes", "needle"),
    [
        ("phi3", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "type 'linear' is not one"),
        ("phi3", {"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0.75}},
         "partial_rotary_factor 0.75"),
        ("phi3", {"auto_map": {"AutoModelForCausalLM": "modeling_x.Phi3ForCausalLM"}}, "auto_map"),
        ("qwen3", {"rope_scaling": {"rope_type": "yarn", "factor": 4.0}}, "type 'yarn'"),
        ("qwen3", {"use_sliding_window": True, "sliding_window": None, "max_window_layers": 0},
         "sliding layers but no sliding_window"),
        ("qwen3", {"attention_bias": True}, "attention_bias true"),
        ("qwen3", {"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
        ("olmo2", {"clip_qkv": 8.0}, "key(s) clip_qkv are not understood"),
        ("olmo3", {"rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {"rope_type": "default", "rope_theta": 500.0}}},
         "different RoPE bases"),
        ("olmo3", {"rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {"rope_type": "yarn", "factor": 4.0, "rope_theta": 100.0}}},
         "type 'yarn' is not supported for olmo3"),
        ("olmo3", {"layer_types": ["sliding_attention", "chunked"]}, "layer_types must list 2"),
        ("qwen3", {"layer_types": ["sliding_attention", "local"]}, "layer_types must list 2"),
        ("gemma2", {"hidden_activation": "gelu"}, "hidden_activation must be one of"),
        ("gemma3_text", {"use_bidirectional_attention": True}, "use_bidirectional_attention"),
        ("gemma3_text", {"layer_types": ["sliding_attention"]}, "layer_types must list 2"),
        ("gemma3_text", {"model_type": "gemma3"}, "Gemma 3's image-text model"),
    ],
)  # fmt: skip
def test_what_tjx_cannot_honour_is_refused_by_name(tmp_path, family, changes, needle):
    tnn.save_hf(_model(family), tmp_path / "ck", model_type=family)
    path = tmp_path / "ck" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        tnn.load_hf(tmp_path / "ck")
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("family", "model_type", "extra", "needle"),
    [
        ("qwen3", "llama", {}, "model_type 'llama' cannot express attention.qk_norm=True"),
        ("gemma2", "phi3", {}, "save as model_type='gemma2'"),
        ("olmo2", "qwen3", {}, "norm.position='output'"),
        ("qwen3", None, {"position.rope_scaling": (8.0, 1.0, 4.0, 16)}, "rope_scaling="),
        (
            "gemma3_text",
            None,
            {"attention.type": "mla", "mla": tnn.MLAConfig(kv_latent_dim=8)},
            "attention.type",
        ),
        ("olmo2", "olmo2", {"attention.sliding_window": 8}, "save it as model_type='olmo3'"),
        (
            "phi3",
            "phi3",
            {"attention.window_pattern": ("local", "global")},
            "slides the window in every",
        ),
        (
            "gemma2",
            None,
            {"position.rope_local_theta": 10.0},
            "'gemma2' cannot express position.rope_local_theta",
        ),
        (
            "phi3",
            None,
            {"position.rope_local_theta": 10.0},
            "no Hugging Face family tjx writes computes",
        ),
    ],
)
def test_an_export_that_cannot_express_the_config_writes_nothing(
    tmp_path, family, model_type, extra, needle
):
    config = tnn.make_config(tnn.LlamaConfig, {**BASE, **CONFIGS[family], **extra})
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        tnn.save_hf(model, tmp_path / "out", model_type=model_type)
    assert needle in str(info.value)
    assert not (tmp_path / "out").exists()


def test_olmo3_without_layer_types_slides_three_layers_of_four_as_transformers_does():
    hf = family_config_to_hf(
        tnn.make_config(tnn.LlamaConfig, {**{**BASE, "num_layers": 8}, **CONFIGS["olmo3"]}),
        "olmo3",
    )
    del hf["layer_types"]
    config = family_config_from_hf(hf)
    assert config.layer_windows() == (8, 8, 8, None) * 2
