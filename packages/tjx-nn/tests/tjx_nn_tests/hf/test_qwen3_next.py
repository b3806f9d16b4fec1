"""Qwen3-Next checkpoints without transformers: tjx's export loads back to the same weights, the
grouped ``in_proj_qkvz``/``in_proj_ba`` hold each key head's rows as transformers splits them,
the sparse blocks are Qwen2-MoE's, transformers' defaults are read as it reads them, and what
tjx cannot honour is refused in one line (transformers itself: tests-integration's
test_hf_families.py)."""

import json

import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.hf.qwen3_next import qwen3_next_config_from_hf, qwen3_next_config_to_hf
from tjx_nn_tests._helpers import saved_random

#: 2 key heads of 4 dims, 3 value heads of 6 each (r = 3 per key head): every part of a group
#: has its own width, so a row taken from the wrong part or group shows.
QWEN3_NEXT = dict(
    vocab_size=24,
    max_seq_len=16,
    d_model=16,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp=tnn.MLPConfig(dim=8),
    mixer_pattern=("delta", "delta", "delta", "attention"),
    delta=tnn.DeltaConfig(key_heads=2, value_heads=6, key_dim=4, value_dim=6),
    **{"attention.output_gate": True}, **{"attention.qk_norm": True},
    norm=tnn.NormConfig(plus_one=True), position=tnn.PositionConfig(rope_fraction=0.25),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=4, num_shared_experts=1,
                      shared_expert_mlp_dim=12, shared_expert_gate=True, first_dense=1),
)  # fmt: skip


def _saved(tmp_path, **change):
    model, tensors = saved_random(
        tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, QWEN3_NEXT | change)
    )
    return model, tmp_path / "ck", tensors


def test_an_export_loads_back_as_the_same_model_in_transformers_layout(tmp_path):
    model, folder, hf = _saved(tmp_path)
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("qwen3_next", ["Qwen3NextForCausalLM"])
    assert (saved["num_experts"], saved["mlp_only_layers"], saved["decoder_sparse_step"]) == (
        4,
        [0],
        1,
    )
    assert saved["shared_expert_intermediate_size"] == 12
    loaded, config = tnn.load_hf(folder)
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # Key head g's rows of in_proj_qkvz: its query (4), its key (4), its 3 value heads (18),
    # their 3 output gates (18); tjx's in_proj_qkv: every query head, every key head, every value.
    t, p = "stack.layers.1.delta.", "model.layers.1.linear_attn."
    qkvz = hf[p + "in_proj_qkvz.weight"].reshape(2, 4 + 4 + 18 + 18, 16)
    qkv, z = want[t + "in_proj_qkv.kernel"].T, want[t + "in_proj_z.kernel"].T
    for g in range(2):
        np.testing.assert_array_equal(qkvz[g, :4], qkv[4 * g : 4 * g + 4])
        np.testing.assert_array_equal(qkvz[g, 4:8], qkv[8 + 4 * g : 8 + 4 * g + 4])
        np.testing.assert_array_equal(qkvz[g, 8:26], qkv[16 + 18 * g : 16 + 18 * g + 18])
        np.testing.assert_array_equal(qkvz[g, 26:], z[18 * g : 18 * g + 18])
    ba = hf[p + "in_proj_ba.weight"].reshape(2, 6, 16)
    np.testing.assert_array_equal(ba[:, :3].reshape(6, 16), want[t + "in_proj_b.kernel"].T)
    np.testing.assert_array_equal(ba[:, 3:].reshape(6, 16), want[t + "in_proj_a.kernel"].T)
    assert not any(".in_proj_qkv." in n or ".in_proj_z." in n for n in hf)
    # Layer 0 keeps a dense MLP; the others are Qwen2-MoE's sparse blocks.
    assert "model.layers.0.mlp.gate_proj.weight" in hf
    np.testing.assert_array_equal(
        hf["model.layers.2.mlp.shared_expert_gate.weight"],
        want["stack.layers.2.moe.shared_gate.kernel"].T,
    )
    assert hf["model.layers.2.mlp.experts.3.down_proj.weight"].shape == (16, 4)


def test_a_dense_qwen3_next_is_written_only_when_asked(tmp_path):
    dense = {k: v for k, v in QWEN3_NEXT.items() if k != "moe"}
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, dense), rngs=nnx.Rngs(0))
    tnn.save_hf(model, tmp_path / "asked", model_type="qwen3_next")
    saved = json.loads((tmp_path / "asked" / "config.json").read_text())
    assert (saved["model_type"], saved["num_experts"]) == ("qwen3_next", 0)
    loaded, config = tnn.load_hf(tmp_path / "asked")
    assert config == model.config and not config.moe.num_experts
    tnn.save_hf(model, tmp_path / "default")  # no experts: Qwen3.5's text model by default
    saved = json.loads((tmp_path / "default" / "config.json").read_text())
    assert saved["model_type"] == "qwen3_5_text"


def test_transformers_defaults_are_read_as_transformers_reads_them():
    """Left out: Qwen3-Next-80B-A3B's sizes (512 experts, top 10, renormalised, 512-wide experts
    and shared expert), every layer sparse, every fourth layer attending."""
    hf = qwen3_next_config_to_hf(tnn.make_config(tnn.LlamaConfig, {**QWEN3_NEXT, "num_layers": 8}))
    for key in ("layer_types", "head_dim", "num_experts", "num_experts_per_tok",
                "moe_intermediate_size", "shared_expert_intermediate_size", "norm_topk_prob",
                "decoder_sparse_step", "mlp_only_layers", "linear_num_value_heads",
                "router_aux_loss_coef"):  # fmt: skip
        del hf[key]
    config = qwen3_next_config_from_hf(hf)
    assert config.layer_mixers() == ("delta", "delta", "delta", "attention") * 2
    moe = config.moe
    assert (moe.num_experts, moe.experts_per_token, moe.expert_mlp_dim) == (512, 10, 512)
    assert (moe.shared_expert_mlp_dim, moe.router_norm_topk, moe.first_dense) == (512, True, 0)
    assert (config.head_dim, config.delta.value_heads, moe.router_aux_loss) == (256, 32, 0.001)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(attention_bias=True), "attention_bias true"),
        (dict(mlp_only_layers=[1]), "mlp_only_layers .1. is not supported"),
        (dict(shared_expert_intermediate_size=0), "shared_expert_intermediate_size 0"),
        (dict(layer_types=["mamba"] * 4), "layer_types must list 4"),
        (dict(router_jitter_noise=0.1), "router_jitter_noise"),
    ],
)
def test_what_tjx_cannot_honour_is_refused_by_name(change, message):
    hf = qwen3_next_config_to_hf(tnn.make_config(tnn.LlamaConfig, QWEN3_NEXT)) | change
    with pytest.raises(ValueError, match=message):
        qwen3_next_config_from_hf(hf)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"moe.router": "sigmoid"}, "moe.router='sigmoid' .needs 'softmax'."),
        ({"moe.shared_expert_gate": False}, "moe.shared_expert_gate=False .needs True."),
        ({"attention.output_gate": False}, "attention.output_gate=False .needs True."),
    ],
)
def test_a_config_qwen3_next_does_not_compute_is_not_saved_as_it(change, message):
    with pytest.raises(ValueError, match=f"'qwen3_next' cannot express this model: .*{message}"):
        qwen3_next_config_to_hf(tnn.make_config(tnn.LlamaConfig, QWEN3_NEXT).replace(**change))


def test_its_multi_token_prediction_module_is_refused_when_asked_for():
    """tjx reads Qwen3.5's module, not Qwen3-Next's: asking for it is refused in one line, and a
    config with one is not written as qwen3_next."""
    hf = qwen3_next_config_to_hf(tnn.make_config(tnn.LlamaConfig, QWEN3_NEXT))
    with pytest.raises(ValueError, match=r"^mtp.depths=1: tjx does not read Qwen3-Next's"):
        qwen3_next_config_from_hf(hf, **{"mtp.depths": 1})
    config = tnn.make_config(tnn.LlamaConfig, QWEN3_NEXT | {"mtp.depths": 1})
    with pytest.raises(ValueError, match=r"'qwen3_next' cannot express this model: .*mtp.depths"):
        qwen3_next_config_to_hf(config)
