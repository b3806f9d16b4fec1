"""gpt-oss and GLM-4.5 MoE checkpoints without transformers: tjx's export loads back to the same
weights, the tensors are laid out as transformers names and shapes them (gpt-oss's interleaved
``gate_up_proj``), transformers' defaults are read as it reads them, and what tjx cannot honour
is refused in one line (transformers itself: tests-integration's test_hf_families.py)."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors import safe_open
from safetensors.numpy import save_file

from tjx import nn as tnn
from tjx.nn.hf.glm4_moe import glm4_moe_config_from_hf, glm4_moe_config_to_hf
from tjx.nn.hf.gpt_oss import gpt_oss_config_from_hf, gpt_oss_config_to_hf

SIZES = dict(
    vocab_size=24, max_seq_len=16, d_model=16, num_layers=2, num_heads=4, mlp=tnn.MLPConfig(dim=8)
)
GPT_OSS = dict(
    num_kv_heads=2, **{"attention.sinks": True}, use_bias=True,
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, router_logit_bias=True,
                      router_aux_loss=0.001),
    **{"mlp.activation": "swiglu_clamped"},  # over SIZES' mlp.dim
    **{"attention.sliding_window": 4}, **{"attention.window_pattern": ("local", "global")},
    position=tnn.PositionConfig(rope_scaling=dict(
        type="yarn", factor=4.0, original_max_position_embeddings=4, truncate=False)),
)  # fmt: skip
GLM = dict(
    num_layers=3,
    num_kv_heads=2,
    head_dim=8,
    **{"position.rope_fraction": 0.5},
    **{"attention.qk_norm": True},
    **{"attention.qkv_bias": True},
    moe=tnn.MoEConfig(
        num_experts=8,
        experts_per_token=2,
        expert_mlp_dim=6,
        num_shared_experts=1,
        first_dense=1,
        router="sigmoid",
        router_scale=2.5,
        router_groups=4,
        router_topk_groups=2,
    ),
)
FAMILIES = {"gpt_oss": GPT_OSS, "glm4_moe": GLM}


def _model(fields):
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, {**SIZES, **fields}), rngs=nnx.Rngs(0))
    rs = np.random.RandomState(0)  # biases and sinks start at 0: random, so a swap shows
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.1 * rs.randn(*v.shape) for k, v in flat.items()})
    return model


def _save(tmp_path, family, name="ck", **hf_changes):
    model = _model(FAMILIES[family])
    folder = tmp_path / name
    tnn.save_hf(model, folder)
    if hf_changes:
        hf = json.loads((folder / "config.json").read_text()) | hf_changes
        (folder / "config.json").write_text(json.dumps(hf))
    return model, folder


def _tensors(folder):
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_export_loads_back_as_the_same_model(tmp_path, family):
    model, folder = _save(tmp_path, family)
    assert json.loads((folder / "config.json").read_text())["model_type"] == family
    loaded, config = tnn.load_hf(folder, scan_layers=True)
    assert config == model.config.replace(scan_layers=True)
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_gpt_oss_tensors_are_laid_out_as_transformers_does(tmp_path):
    model, folder = _save(tmp_path, "gpt_oss")
    hf, flat = _tensors(folder), tnn.get_flat_params(model)
    t, p = "stack.layers.1.", "model.layers.1."
    gate_up = hf[p + "mlp.experts.gate_up_proj"]
    assert gate_up.shape == (4, 16, 16)  # [E, d, 2f], already [in, out]
    np.testing.assert_array_equal(gate_up[..., 0::2], flat[t + "moe.experts.fc_gate.kernel"])
    np.testing.assert_array_equal(gate_up[..., 1::2], flat[t + "moe.experts.fc_in.kernel"])
    bias = hf[p + "mlp.experts.gate_up_proj_bias"]
    np.testing.assert_array_equal(bias[:, 1::2], flat[t + "moe.experts.fc_in.bias"])
    assert hf[p + "mlp.experts.down_proj"].shape == (4, 8, 16)
    np.testing.assert_array_equal(hf[p + "mlp.router.weight"], flat[t + "moe.router.kernel"].T)
    np.testing.assert_array_equal(hf[p + "mlp.router.bias"], flat[t + "moe.router.logit_bias"])
    np.testing.assert_array_equal(hf[p + "self_attn.sinks"], flat[t + "attn.sinks"])
    assert hf[p + "self_attn.o_proj.bias"].shape == (16,)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["layer_types"] == ["sliding_attention", "full_attention"]
    assert saved["rope_parameters"]["rope_type"] == "yarn"


def test_glm_tensors_and_config_are_transformers_names(tmp_path):
    _, folder = _save(tmp_path, "glm4_moe")
    hf = _tensors(folder)
    assert "model.layers.0.mlp.gate_proj.weight" in hf  # the dense first layer
    assert hf["model.layers.1.mlp.experts.7.down_proj.weight"].shape == (16, 6)
    assert hf["model.layers.2.mlp.gate.e_score_correction_bias"].shape == (8,)
    assert hf["model.layers.1.mlp.shared_experts.up_proj.weight"].shape == (6, 16)
    assert "model.layers.0.self_attn.q_proj.bias" in hf
    assert "model.layers.0.self_attn.o_proj.bias" not in hf
    assert hf["model.layers.0.self_attn.q_norm.weight"].shape == (8,)
    saved = json.loads((folder / "config.json").read_text())
    assert saved["rope_parameters"]["partial_rotary_factor"] == 0.5
    assert (saved["n_group"], saved["topk_group"], saved["routed_scaling_factor"]) == (4, 2, 2.5)


def test_transformers_defaults_are_read_as_transformers_reads_them():
    """gpt-oss without rope_parameters is yarn (factor 32 over 4,096, base 150,000) with even
    layers sliding; GLM-4.5 without a partial_rotary_factor rotates half of each head."""
    oss = gpt_oss_config_to_hf(
        tnn.make_config(tnn.LlamaConfig, {**SIZES, **GPT_OSS, "num_layers": 4})
    )
    for key in ("rope_parameters", "layer_types"):
        del oss[key]
    config = gpt_oss_config_from_hf(oss)
    scaling = config.position.rope_scaling
    assert (scaling.type, scaling.factor, scaling.original_max_position_embeddings) == (
        "yarn",
        32.0,
        4096,
    )
    assert scaling.truncate is False and config.position.rope_theta == 150000.0
    assert config.layer_windows() == (4, None, 4, None)
    glm = glm4_moe_config_to_hf(
        tnn.make_config(tnn.LlamaConfig, {**SIZES, **GLM, "position.rope_fraction": 0.25})
    )
    assert glm4_moe_config_from_hf(glm).position.rope_fraction == 0.25
    del glm["rope_parameters"]["partial_rotary_factor"]
    assert glm4_moe_config_from_hf(glm).position.rope_fraction == 0.5
    top = glm | {"partial_rotary_factor": 0.25}
    assert glm4_moe_config_from_hf(top).position.rope_fraction == 0.25  # the legacy top-level key
    for partial in (0, 1.5, "half"):  # 0 would rotate nothing: no positions at all
        with pytest.raises(ValueError) as err:
            glm4_moe_config_from_hf(glm | {"partial_rotary_factor": partial})
        # tjx.nn.hf.keys reads the top-level key first, and says what it got.
        assert str(err.value).startswith(f"config.json: partial_rotary_factor is {partial!r}")
        assert str(err.value).endswith("not a number in (0, 1]: give the checkpoint's value")


def test_glm_multi_token_prediction_layers_are_skipped_with_one_line(tmp_path, capsys):
    model, folder = _save(tmp_path, "glm4_moe", num_nextn_predict_layers=1)
    hf = _tensors(folder)
    hf["model.layers.3.eh_proj.weight"] = np.zeros((16, 32), np.float32)
    save_file(hf, str(folder / "model.safetensors"))
    loaded, _ = tnn.load_hf(folder, **{"mtp.depths": 0})
    assert "skipping the checkpoint's 1 multi-token-prediction layer" in capsys.readouterr().err
    np.testing.assert_array_equal(
        tnn.get_flat_params(loaded)["embed.embedding"],
        tnn.get_flat_params(model)["embed.embedding"],
    )


def test_glm_multi_token_prediction_round_trips_in_deepseeks_layout(tmp_path):
    model = _model({**GLM, "mtp": tnn.MTPConfig(depths=1)})
    tnn.save_hf(model, tmp_path / "a")
    first = _tensors(tmp_path / "a")
    assert first["model.layers.3.eh_proj.weight"].shape == (16, 32)
    assert "model.layers.3.self_attn.q_norm.weight" in first  # the block as GLM's own layers
    loaded, config = tnn.load_hf(tmp_path / "a")
    assert config.mtp.depths == 1
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    tnn.save_hf(loaded, tmp_path / "b")
    again = _tensors(tmp_path / "b")
    assert set(again) == set(first)
    for name in first:
        np.testing.assert_array_equal(again[name], first[name], err_msg=name)


@pytest.mark.parametrize(
    ("family", "changes", "needle"),
    [
        ("gpt_oss", {"quantization_config": {"quant_method": "gptq"}},
         "quantization_config.quant_method 'gptq' is not one tjx reads"),
        ("gpt_oss", {"swiglu_limit": 10.0}, "swiglu_limit 10.0 is not supported"),
        ("gpt_oss", {"swiglu_alpha": 1.0}, "swiglu_alpha 1.0 is not supported"),
        ("gpt_oss", {"attention_bias": False}, "attention_bias False is not supported"),
        ("gpt_oss", {"router_jitter": 0.1}, "key(s) router_jitter are not understood"),
        ("glm4_moe", {"scoring_func": "softmax"}, "scoring_func 'softmax' is not supported"),
        ("glm4_moe", {"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
        ("glm4_moe", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4,
                                          "partial_rotary_factor": 0.2}}, "rope_fraction 0.2"),
    ],
)  # fmt: skip
def test_what_tjx_cannot_honour_is_refused_in_one_line(tmp_path, family, changes, needle):
    _, folder = _save(tmp_path, family, **changes)
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.load_hf(folder)
    assert needle in str(info.value)


@pytest.mark.parametrize(
    ("fields", "model_type", "needle"),
    [
        ({**GPT_OSS, "moe.router_logit_bias": False}, None, "moe.router_logit_bias=False"),
        ({**GPT_OSS, "mlp.activation": "swiglu"}, None, "mlp.activation='swiglu'"),
        (GPT_OSS, "mixtral", "saves as model_type 'gpt_oss'"),
        ({**GLM, "moe.router": "softmax"}, None, "moe.router='softmax' (needs 'sigmoid')"),
        ({**GLM, "moe": tnn.MoEConfig(), "attention.qk_norm": False}, None,
         "rope_fraction=0.5 (needs 1.0)"),
        ({**GLM, "moe.router_logit_bias": True}, None,
         "moe.router_logit_bias=True (needs False)"),
        ({**GLM, "attention.sliding_window": 4}, None, "attention.sliding_window=4 (needs None)"),
    ],
)  # fmt: skip
def test_a_model_the_family_cannot_express_is_not_written(tmp_path, fields, model_type, needle):
    """(A dotted key: a change to the family's ``moe`` section.)"""
    dotted = {k: v for k, v in fields.items() if "." in k}
    plain = {k: v for k, v in fields.items() if "." not in k}
    config = tnn.make_config(tnn.LlamaConfig, {**SIZES, **plain}).replace(**dotted)
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.save_hf(model, tmp_path / "out", model_type=model_type)
    assert needle in str(info.value)
    assert not (tmp_path / "out").exists()
