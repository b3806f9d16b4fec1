"""Qwen3.5-MoE checkpoints without transformers: tjx's export (asked for by name) loads back to
the same weights in transformers' layout (Qwen3.5's four delta projections, Qwen2-MoE's sparse
block in every layer), the image-text folder reads as its text model, transformers' defaults are
read as it reads them, and the variants it cannot express are refused in one line
(transformers itself: tests-integration's test_hf_families.py)."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from tjx import nn as tnn
from tjx.nn.families.qwen3_5_moe.hf import qwen3_5_moe_config_from_hf, qwen3_5_moe_config_to_hf

#: Every layer sparse (2 of 4 experts of width 4, a gated shared expert of 12); the dense width
#: is the experts' (no layer has a dense MLP).
QWEN3_5_MOE = dict(
    vocab_size=24,
    max_seq_len=16,
    d_model=16,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp=tnn.MLPConfig(dim=4),
    mixer_pattern=("delta", "delta", "delta", "attention"),
    delta=tnn.DeltaConfig(key_heads=2, value_heads=6, key_dim=4, value_dim=6),
    **{"attention.output_gate": True}, **{"attention.qk_norm": True},
    norm=tnn.NormConfig(plus_one=True), position=tnn.PositionConfig(rope_fraction=0.25),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=4, num_shared_experts=1,
                      shared_expert_mlp_dim=12, shared_expert_gate=True),
)  # fmt: skip


def _model() -> tnn.Llama:
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE), rngs=nnx.Rngs(0))
    rs = np.random.RandomState(0)
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.1 * rs.randn(*v.shape) for k, v in flat.items()})
    return model


def test_an_export_asked_for_loads_back_as_the_same_model_in_transformers_layout(tmp_path):
    model = _model()
    tnn.save_hf(model, tmp_path / "ck", model_type="qwen3_5_moe_text")
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == (
        "qwen3_5_moe_text",
        ["Qwen3_5MoeForCausalLM"],
    )
    assert "intermediate_size" not in saved and "mlp_only_layers" not in saved
    loaded, config = tnn.load_hf(tmp_path / "ck")
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # The same model as Qwen3-Next's by default (the same computation; its grouped layout).
    tnn.save_hf(model, tmp_path / "default")
    default = json.loads((tmp_path / "default" / "config.json").read_text())
    assert default["model_type"] == "qwen3_next"


def test_the_image_text_folder_reads_as_its_text_model(tmp_path, capsys):
    """The published layout: ``text_config``, ``model.language_model.*``, a vision tower and
    the multi-token-prediction module beside, each skipped in one line."""
    model = _model()
    tnn.save_hf(model, tmp_path / "text", model_type="qwen3_5_moe_text")
    text = json.loads((tmp_path / "text" / "config.json").read_text())
    folder = tmp_path / "image-text"
    folder.mkdir()
    config = {"model_type": "qwen3_5_moe", "text_config": text, "vision_config": {"depth": 1},
              "image_token_id": 20, "tie_word_embeddings": False}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    from safetensors.numpy import load_file

    tensors = {
        ("model.language_model." + k[len("model.") :] if k.startswith("model.") else k): v
        for k, v in load_file(tmp_path / "text" / "model.safetensors").items()
    }
    tensors["model.visual.patch_embed.proj.weight"] = np.zeros((2, 2), np.float32)
    tensors["mtp.fc.weight"] = np.zeros((16, 32), np.float32)
    save_file(tensors, folder / "model.safetensors")
    loaded, read = tnn.load_hf(folder)
    assert read == model.config
    err = capsys.readouterr().err
    assert "vision tower (model.visual.*)" in err and "multi-token-prediction module" in err
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_transformers_defaults_are_read_as_transformers_reads_them():
    """Left out: Qwen3.5-35B-A3B's sizes (256 experts, top 8, 512-wide experts and shared
    expert), every layer sparse and renormalised, every fourth layer attending."""
    hf = qwen3_5_moe_config_to_hf(
        tnn.make_config(tnn.LlamaConfig, {**QWEN3_5_MOE, "num_layers": 8})
    )
    for key in ("layer_types", "head_dim", "num_experts", "num_experts_per_tok",
                "moe_intermediate_size", "shared_expert_intermediate_size",
                "linear_num_value_heads", "router_aux_loss_coef"):  # fmt: skip
        del hf[key]
    config = qwen3_5_moe_config_from_hf(hf)
    assert config.layer_mixers() == ("delta", "delta", "delta", "attention") * 2
    moe = config.moe
    assert (moe.num_experts, moe.experts_per_token, moe.expert_mlp_dim) == (256, 8, 512)
    assert (moe.shared_expert_mlp_dim, moe.router_norm_topk, moe.first_dense) == (512, True, 0)
    assert (config.head_dim, config.delta.value_heads, moe.router_aux_loss) == (256, 32, 0.001)
    # The published configs' extra keys at what transformers computes change nothing.
    same = hf | dict(attn_output_gate=True, mamba_ssm_dtype="float32", norm_topk_prob=True,
                     decoder_sparse_step=1, mlp_only_layers=[])  # fmt: skip
    assert qwen3_5_moe_config_from_hf(same) == config


@pytest.mark.parametrize(
    ("change", "message"),
    [
        # The unsupported variant: dense layers, which transformers' Qwen3.5-MoE cannot build.
        (dict(mlp_only_layers=[0]), r"mlp_only_layers \[0\] is not supported for qwen3_5_moe_text"),
        (dict(decoder_sparse_step=2), "decoder_sparse_step 2 is not supported"),
        (dict(norm_topk_prob=False), "norm_topk_prob False is not supported"),
        (dict(attn_output_gate=False), "attn_output_gate False is not supported"),
        (dict(attention_bias=True), "attention_bias true"),
        (dict(router_jitter_noise=0.1), "router_jitter_noise"),
    ],
)
def test_what_tjx_cannot_honour_is_refused_in_one_line(change, message):
    hf = qwen3_5_moe_config_to_hf(tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE)) | change
    with pytest.raises(ValueError, match=message) as info:
        qwen3_5_moe_config_from_hf(hf)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"moe.first_dense": 1}, r"moe.first_dense=1 \(needs 0\)"),
        ({"moe.router_norm_topk": False}, r"moe.router_norm_topk=False \(needs True\)"),
        ({"moe": tnn.MoEConfig()}, r"moe.num_experts=0 \(needs '> 0: every layer is sparse'\)"),
    ],
)
def test_a_config_qwen3_5_moe_does_not_compute_is_not_saved_as_it(change, message):
    config = tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE | change)
    with pytest.raises(
        ValueError, match=f"'qwen3_5_moe_text' cannot express this model: .*{message}"
    ):
        qwen3_5_moe_config_to_hf(config)
