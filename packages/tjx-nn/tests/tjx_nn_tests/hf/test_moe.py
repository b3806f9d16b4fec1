"""HF MoE checkpoints (mixtral, qwen2_moe, qwen3_moe) without transformers: tjx's own export
loads back to the same weights, configs map both ways, and unsupported MoE options are refused
in one line (transformers itself: tests-integration's test_hf_roundtrip.py)."""

import json

import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn

SIZES = dict(
    vocab_size=24, max_seq_len=16, d_model=16, num_layers=3, num_heads=2, mlp=tnn.MLPConfig(dim=24)
)
MIXTRAL = dict(moe=tnn.MoEConfig(num_experts=4, experts_per_token=2))  # an expert: mlp.dim wide
QWEN2 = dict(
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=12, num_shared_experts=1,
                      shared_expert_mlp_dim=20, shared_expert_gate=True, first_dense=1,
                      router_norm_topk=False),
    **{"attention.qkv_bias": True},
)  # fmt: skip
QWEN3 = dict(
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=12, layer_step=2),
    **{"attention.qk_norm": True},
    head_dim=12,
)
TYPES = {"mixtral": MIXTRAL, "qwen2_moe": QWEN2, "qwen3_moe": QWEN3}


def _save(tmp_path, fields, name="ck", **hf_changes):
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, {**SIZES, **fields}), rngs=nnx.Rngs(0))
    folder = tmp_path / name
    tnn.save_hf(model, folder)
    if hf_changes:
        hf = json.loads((folder / "config.json").read_text()) | hf_changes
        (folder / "config.json").write_text(json.dumps(hf))
    return model, folder


@pytest.mark.parametrize("model_type", list(TYPES))
def test_an_export_loads_back_as_the_same_model(tmp_path, model_type):
    model, folder = _save(tmp_path, TYPES[model_type])
    hf = json.loads((folder / "config.json").read_text())
    assert hf["model_type"] == model_type  # chosen from the config
    loaded, config = tnn.load_hf(folder, scan_layers=True)
    assert config == model.config.replace(scan_layers=True)
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_the_checkpoints_name_tensors_as_transformers_does(tmp_path):
    _, folder = _save(tmp_path, QWEN2)
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), "np") as f:
        names = set(f.keys())  # (a safe_open handle, not a dict)
    assert "model.layers.0.mlp.gate_proj.weight" in names  # the dense first layer
    assert "model.layers.1.mlp.experts.3.down_proj.weight" in names
    assert "model.layers.1.mlp.shared_expert_gate.weight" in names
    assert (
        "model.layers.1.mlp.gate.weight" in names
        and "model.layers.1.mlp.gate_proj.weight" not in names
    )
    _, folder = _save(tmp_path, MIXTRAL, name="mx")
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        shapes = {k: f.get_slice(k).get_shape() for k in f.keys()}  # noqa: SIM118
    assert shapes["model.layers.2.block_sparse_moe.experts.0.w2.weight"] == [16, 24]
    assert shapes["model.layers.2.block_sparse_moe.gate.weight"] == [4, 16]


@pytest.mark.parametrize(
    ("fields", "changes", "needle"),
    [
        (QWEN2, {"mlp_only_layers": [1]}, "mlp_only_layers [1] is not supported"),
        (MIXTRAL, {"router_jitter_noise": 0.1}, "router_jitter_noise 0.1 is not supported"),
        (QWEN2, {"shared_expert_intermediate_size": 0}, "shared_expert_intermediate_size 0"),
        (QWEN3, {"attention_bias": True}, "attention_bias True"),
        (MIXTRAL, {"num_local_experts": 0}, "num_experts 0 is not supported"),
        (QWEN3, {"first_k_dense_replace": 1}, "key(s) first_k_dense_replace are not understood"),
        (MIXTRAL, {"num_experts_per_tok": 5}, "num_experts_per_tok 5 exceeds num_local_experts 4"),
    ],
)
def test_moe_options_tjx_does_not_compute_are_refused_in_one_line(
    tmp_path, fields, changes, needle
):
    _, folder = _save(tmp_path, fields, **changes)
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        tnn.load_hf(folder)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("fields", "model_type", "needle"),
    [
        ({**MIXTRAL, "moe.router": "sigmoid"}, None, "router 'softmax'"),
        ({**MIXTRAL, "moe.first_dense": 1}, None, "every layer MoE"),
        ({**QWEN2, "moe.shared_expert_gate": False}, None, "shared_expert_gate=True"),
        (MIXTRAL, "qwen2", "for an MoE model; got 'qwen2'"),
        (MIXTRAL, "qwen3_moe", "qk_norm=True"),
        (MIXTRAL, "deepseek_v3", "model_type must be one of"),
    ],
)
def test_an_moe_model_hf_cannot_express_is_not_written(tmp_path, fields, model_type, needle):
    """(A dotted key: a change to the type's ``moe`` section.)"""
    dotted = {k: v for k, v in fields.items() if "." in k}
    plain = {k: v for k, v in fields.items() if "." not in k}
    config = tnn.make_config(tnn.LlamaConfig, {**SIZES, **plain}).replace(**dotted)
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        tnn.save_hf(model, tmp_path / "out", model_type=model_type)
    assert needle in str(info.value)
    assert not (tmp_path / "out").exists()
