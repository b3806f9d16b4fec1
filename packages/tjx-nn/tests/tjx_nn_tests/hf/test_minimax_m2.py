"""MiniMax-M2 checkpoints without transformers: tjx's export loads back to the same weights in the
released folders' (Mixtral's) layout, the released config's legacy keys and transformers' defaults
are read as transformers reads them, and the variants transformers' minimax_m2 does not compute
are refused in one line (against transformers itself: tests-integration's
test_hf_families.py)."""

import json

import numpy as np
import pytest

from tjx import nn as tnn
from tjx.nn.families.minimax_m2.hf_read import minimax_m2_config_from_hf
from tjx.nn.families.minimax_m2.hf_write import is_minimax_m2, minimax_m2_config_to_hf
from tjx_nn_tests._helpers import mtp_refusal, saved_random

#: Two MoE layers (4 experts of 4, top 2, the sigmoid router), whole-projection q/k norms, RoPE on
#: half of each head; every width its own, so a row taken from the wrong place shows.
MINIMAX = dict(
    vocab_size=24, max_seq_len=16, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2,
    head_dim=8, mlp=tnn.MLPConfig(dim=4), position=tnn.PositionConfig(rope_fraction=0.5),
    **{"attention.qk_norm": True}, **{"attention.qk_norm_scope": "projection"},
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=4, router="sigmoid"),
)  # fmt: skip
#: The released folders' form of a config (legacy keys; sizes of MiniMax-M2's shape, smaller).
RELEASED = dict(
    model_type="minimax_m2", architectures=["MiniMaxM2ForCausalLM"], vocab_size=32,
    hidden_size=16, intermediate_size=8, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, head_dim=8, rotary_dim=4, rope_theta=5000000, attn_type_list=[1, 1],
    qk_norm_type="per_layer", use_qk_norm=True, scoring_func="sigmoid", use_routing_bias=True,
    shared_intermediate_size=0, use_mtp=True, num_mtp_modules=3, mtp_transformer_layers=1,
    num_local_experts=4, num_experts_per_tok=2,
    auto_map={"AutoConfig": "configuration_minimax_m2.MiniMaxM2Config",
              "AutoModelForCausalLM": "modeling_minimax_m2.MiniMaxM2ForCausalLM"},
)  # fmt: skip


def test_an_export_loads_back_as_the_same_model_in_the_released_layout(tmp_path):
    model, hf = saved_random(tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, MINIMAX))
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("minimax_m2", ["MiniMaxM2ForCausalLM"])
    assert (saved["rotary_dim"], saved["rope_parameters"]["partial_rotary_factor"]) == (4, 0.5)
    loaded, config = tnn.load_hf(tmp_path / "ck")
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    p, t = "model.layers.1.", "stack.layers.1."
    # The q/k norms span the whole projection; the router's bias is the correction bias.
    assert hf[p + "self_attn.q_norm.weight"].shape == (4 * 8,)
    assert hf[p + "self_attn.k_norm.weight"].shape == (2 * 8,)
    np.testing.assert_array_equal(
        hf[p + "block_sparse_moe.e_score_correction_bias"], want[t + "moe.router.bias"]
    )
    # Expert 2's w1 (gate), w3 (up), w2 (down) are [out, in] slices of tjx's stacked kernels.
    x = t + "moe.experts."
    for hf_name, tjx_name in (("w1", "fc_gate"), ("w3", "fc_in"), ("w2", "fc_out")):
        np.testing.assert_array_equal(
            hf[f"{p}block_sparse_moe.experts.2.{hf_name}.weight"],
            want[f"{x}{tjx_name}.kernel"][2].T,
        )


def test_the_released_form_and_transformers_defaults_read_as_transformers_reads_them():
    """The legacy keys of the released folders (``rotary_dim``, a top-level ``rope_theta``, the
    upstreamed ``auto_map``) read; left out: MiniMax-M2's sizes and RoPE base, full RoPE."""
    c = minimax_m2_config_from_hf(RELEASED)
    assert (c.position.rope_fraction, c.position.rope_theta, c.head_dim) == (0.5, 5e6, 8)
    assert c.attention.qk_norm and c.attention.qk_norm_scope == "projection"
    m = c.moe
    assert (m.num_experts, m.experts_per_token, m.expert_mlp_dim, m.router) == (4, 2, 8, "sigmoid")
    assert (m.router_norm_topk, m.router_scale, m.num_shared_experts, m.first_dense) == (
        True,
        1.0,
        0,
        0,
    )
    sizes = {k: RELEASED[k] for k in ("model_type", "vocab_size", "hidden_size",
                                       "intermediate_size", "num_hidden_layers",
                                       "num_attention_heads")}  # fmt: skip
    sizes["num_attention_heads"] = 16  # 8 key/value heads (the default) serve 2 each
    c = minimax_m2_config_from_hf(sizes)
    assert (c.head_dim, c.num_kv_heads, c.position.rope_theta, c.position.rope_fraction) == (
        128,
        8,
        5e6,
        1.0,
    )
    assert (c.moe.num_experts, c.moe.experts_per_token, c.max_seq_len, c.norm.eps) == (
        256,
        8,
        196608,
        1e-6,
    )
    # rope_parameters' factor wins over rotary_dim when both agree; the top-level one likewise.
    both = sizes | dict(head_dim=8, rotary_dim=2, partial_rotary_factor=0.25)
    assert minimax_m2_config_from_hf(both).position.rope_fraction == 0.25
    params = dict(rope_type="default", rope_theta=100.0, partial_rotary_factor=0.5)
    c = minimax_m2_config_from_hf(sizes | dict(head_dim=8, rope_parameters=params))
    assert (c.position.rope_fraction, c.position.rope_theta) == (0.5, 100.0)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(attn_type_list=[1, 0]), r"attn_type_list \[1, 0\] .*lightning-attention layer"),
        (dict(qk_norm_type="per_head"), "qk_norm_type 'per_head' is not supported"),
        (dict(use_qk_norm=False), "use_qk_norm False .*always norms q and k"),
        (dict(scoring_func="softmax"), "scoring_func 'softmax' .*by sigmoid"),
        (dict(use_routing_bias=False), "use_routing_bias False"),
        (dict(shared_intermediate_size=8), "shared_intermediate_size 8 .*no shared expert"),
        (dict(attention_bias=True), "attention_bias True .*no biases"),
        (dict(hidden_act="gelu"), "hidden_act 'gelu'"),
        (dict(router_jitter_noise=0.1), "router_jitter_noise 0.1"),
        (dict(rotary_dim=9), r"partial_rotary_factor must be a number in \(0, 1\]"),
        (dict(partial_rotary_factor=0.25), "rotary_dim 4 .*make the two agree"),
        (dict(postnorm=True), "postnorm are not understood by tjx's minimax_m2 import"),
        (dict(auto_map={"AutoConfig": "x.Y"}), r"config.json has auto_map \(custom modelling code"),
    ],
)
def test_what_tjx_cannot_honour_is_refused_by_name(change, message):
    with pytest.raises(ValueError, match=message):
        minimax_m2_config_from_hf(RELEASED | change)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"moe.router": "softmax"}, "moe.router='softmax' .needs 'sigmoid'."),
        ({"moe.num_shared_experts": 1}, "moe.num_shared_experts=1 .needs 0."),
        ({"moe.router_scale": 2.0}, "moe.router_scale=2.0 .needs 1.0."),
        ({"attention.qk_norm_scope": "head"}, "qk_norm_scope='head' .needs 'projection'."),
        ({"mtp.depths": 1}, "mtp.depths=1 .needs 0."),
        ({"norm.kind": "layernorm"}, "norm.kind='layernorm' .needs 'rmsnorm'."),
        ({"moe": tnn.MoEConfig()}, r"moe.num_experts=0 .needs '> 0'."),
    ],
)
def test_a_config_minimax_m2_does_not_compute_is_not_saved_as_it(change, message):
    with pytest.raises(ValueError, match=f"'minimax_m2' cannot express this model: .*{message}"):
        minimax_m2_config_to_hf(tnn.make_config(tnn.LlamaConfig, MINIMAX).replace(**change))


def test_only_its_own_switches_or_its_name_save_a_config_as_minimax_m2():
    config = tnn.make_config(tnn.LlamaConfig, MINIMAX)
    assert is_minimax_m2(config, None) and is_minimax_m2(config, "minimax_m2")
    assert not is_minimax_m2(config, "glm4_moe")
    per_head = config.replace(**{"attention.qk_norm_scope": "head"})
    assert not is_minimax_m2(per_head, None)  # GLM-4.5's and Qwen3-MoE's q/k norms


def test_a_dynamic_ntk_scaling_is_saved_with_its_original_length():
    """transformers' dynamic NTK scales from ``max_position_embeddings`` (the written config's
    ``original_max_position_embeddings`` is not read): the export writes the original there."""
    scaling = dict(type="dynamic", factor=2.0, original_max_position_embeddings=8)
    config = tnn.make_config(tnn.LlamaConfig, MINIMAX | {"position.rope_scaling": scaling})
    hf = json.loads(json.dumps(minimax_m2_config_to_hf(config)))
    assert hf["max_position_embeddings"] == 8
    assert "original_max_position_embeddings" not in hf["rope_parameters"]
    assert minimax_m2_config_from_hf(hf) == config


def test_a_config_asking_for_mtp_depths_of_a_minimax_m2_checkpoint_is_refused_naming_its_count(
    tmp_path,
):
    """The released config counts 3 multi-token-prediction modules (``num_mtp_modules``) that
    neither its folders (their index lists the causal LM's tensors alone) nor transformers' model
    nor tjx's hold: ``mtp.depths`` above 0 is refused as the config is read (a plan) and as the
    weights load, in one line, instead of a model whose modules no tensor fills; 0 loads."""
    model, _ = saved_random(tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, MINIMAX))
    hf = json.loads((tmp_path / "ck" / "config.json").read_text())
    legacy = dict(use_mtp=True, num_mtp_modules=3, mtp_transformer_layers=1)
    (tmp_path / "ck" / "config.json").write_text(json.dumps(hf | legacy))
    for depths in (1, 2):
        assert mtp_refusal(tmp_path / "ck", depths) == (
            f"mtp.depths={depths}: tjx reads no multi-token-prediction layers from a "
            "'minimax_m2' checkpoint (config.json's num_mtp_modules 3 counts modules tjx does "
            "not read); set mtp.depths=0"
        )
    loaded, config = tnn.load_hf(tmp_path / "ck", **{"mtp.depths": 0})
    assert config == model.config and loaded.mtp is None
