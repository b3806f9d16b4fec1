"""Qwen3.5 (text) checkpoints without transformers: tjx's export loads back to the same weights,
each delta layer's tensors and the gated ``q_proj`` are laid out as transformers names and
shapes them, transformers' defaults are read as it reads them, and what tjx cannot honour is
refused in one line (transformers itself: tests-integration's test_hf_families.py)."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from tjx import nn as tnn
from tjx.nn.hf.qwen3_5 import qwen3_5_config_from_hf, qwen3_5_config_to_hf
from tjx_nn_tests._helpers import mtp_refusal, saved_random

QWEN3_5 = dict(
    vocab_size=24,
    max_seq_len=16,
    d_model=16,
    num_layers=4,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    mlp=tnn.MLPConfig(dim=8),
    mixer_pattern=("delta", "delta", "delta", "attention"),
    delta=tnn.DeltaConfig(key_heads=2, value_heads=4, key_dim=4, value_dim=6),
    **{"attention.output_gate": True}, **{"attention.qk_norm": True},
    norm=tnn.NormConfig(plus_one=True), position=tnn.PositionConfig(rope_fraction=0.25),
)  # fmt: skip


def _saved(tmp_path):
    model, tensors = saved_random(tmp_path / "ck", tnn.make_config(tnn.LlamaConfig, QWEN3_5))
    return model, tmp_path / "ck", tensors


def test_an_export_loads_back_as_the_same_model_in_transformers_layout(tmp_path):
    model, folder, hf = _saved(tmp_path)
    saved = json.loads((folder / "config.json").read_text())
    assert (saved["model_type"], saved["architectures"]) == ("qwen3_5_text", ["Qwen3_5ForCausalLM"])
    assert saved["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    assert saved["rope_parameters"]["partial_rotary_factor"] == 0.25
    loaded, config = tnn.load_hf(folder)
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # q_proj: per head, its 8 query rows then its 8 gate rows.
    t, p = "stack.layers.3.attn.", "model.layers.3.self_attn."
    q_proj = hf[p + "q_proj.weight"].reshape(4, 2, 8, 16)
    np.testing.assert_array_equal(q_proj[:, 0].transpose(2, 0, 1), want[t + "query.kernel"])
    np.testing.assert_array_equal(q_proj[:, 1].transpose(2, 0, 1), want[t + "gate.kernel"])
    t, p = "stack.layers.0.delta.", "model.layers.0.linear_attn."
    assert hf[p + "conv1d.weight"].shape == (2 * 2 * 4 + 4 * 6, 1, 4)
    np.testing.assert_array_equal(hf[p + "A_log"], want[t + "a_log"])
    np.testing.assert_array_equal(hf[p + "in_proj_qkv.weight"], want[t + "in_proj_qkv.kernel"].T)
    assert not any(n.startswith("model.layers.0.self_attn.") for n in hf)


def test_transformers_defaults_are_read_as_transformers_reads_them():
    """Left out: every fourth layer attends, RoPE turns a quarter of a 256-wide head, and the
    delta sizes are Qwen3.5-9B's; the image model's mrope keys change nothing for text."""
    hf = qwen3_5_config_to_hf(tnn.make_config(tnn.LlamaConfig, {**QWEN3_5, "num_layers": 8}))
    for key in ("layer_types", "head_dim", "linear_num_key_heads", "linear_num_value_heads",
                "linear_key_head_dim"):  # fmt: skip
        del hf[key]
    hf["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e7,
                             "mrope_section": [11, 11, 10], "mrope_interleaved": True}  # fmt: skip
    config = qwen3_5_config_from_hf(hf)
    assert config.layer_mixers() == ("delta", "delta", "delta", "attention") * 2
    assert (config.head_dim, config.position.rope_fraction, config.position.rope_theta) == (
        256,
        0.25,
        1e7,
    )
    delta = config.delta
    assert (delta.key_heads, delta.key_dim, delta.value_heads) == (16, 128, 32)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(attention_bias=True), "attention_bias true"),
        (dict(hidden_act="gelu"), "hidden_act must be 'silu'"),
        (dict(layer_types=["linear_attention"] * 3), "layer_types must list 4"),
        (dict(layer_types=["mamba"] * 4), "layer_types must list 4"),
        (dict(mtp_layer_kind="dense"), "mtp_layer_kind"),
        (dict(rope_parameters={"rope_type": "yarn", "factor": 4.0}), "rope_scaling of type"),
    ],
)
def test_what_tjx_cannot_honour_is_refused_by_name(change, message):
    hf = qwen3_5_config_to_hf(tnn.make_config(tnn.LlamaConfig, QWEN3_5)) | change
    with pytest.raises(ValueError, match=message):
        qwen3_5_config_from_hf(hf)


def test_a_config_qwen3_5_does_not_compute_is_not_saved_as_it(tmp_path):
    ungated = tnn.make_config(tnn.LlamaConfig, {**QWEN3_5, "attention.output_gate": False})
    with pytest.raises(ValueError, match="attention.output_gate=False .needs True."):
        qwen3_5_config_to_hf(ungated)
    model = tnn.Llama(tnn.make_config(tnn.LlamaConfig, QWEN3_5), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="'qwen3_5_text' .or 'qwen3_next'.; got 'qwen3'"):
        tnn.save_hf(model, tmp_path / "x", model_type="qwen3")
    assert not (tmp_path / "x").exists()


def test_an_image_text_folder_loads_its_text_model_and_skips_the_rest_in_one_line_each(
    tmp_path, capsys
):
    """The published Qwen3.5 folders: ``model_type`` qwen3_5 with a ``text_config``, the language
    model's tensors under ``model.language_model.``, a vision tower and an MTP module beside."""
    model, folder, hf = _saved(tmp_path)
    text = json.loads((folder / "config.json").read_text())
    text["mtp_num_hidden_layers"] = 1
    image_text = dict(
        model_type="qwen3_5",
        architectures=["Qwen3_5ForConditionalGeneration"],
        text_config=text,
        vision_config=dict(model_type="qwen3_5_vision", depth=1),
        image_token_id=20,
        tie_word_embeddings=False,
    )
    out = tmp_path / "image-text"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(image_text))
    stored = {n.replace("model.", "model.language_model.", 1): v for n, v in hf.items()}
    stored |= {"model.visual.blocks.0.mlp.weight": np.ones((3, 2), np.float32)}
    stored |= {"mtp.fc.weight": np.ones((16, 32), np.float32)}
    save_file(stored, str(out / "model.safetensors"))
    capsys.readouterr()
    loaded, config = tnn.load_hf(out)
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    said = capsys.readouterr().err.splitlines()
    assert sorted(line for line in said if "skipping" in line) == [
        "tjx: skipping the checkpoint's multi-token-prediction module (mtp.*)",
        "tjx: skipping the checkpoint's vision tower (model.visual.*): tjx loads the text model",
    ]
    del stored["model.language_model.norm.weight"]  # a missing text tensor is still refused
    save_file(stored, str(out / "model.safetensors"))
    with pytest.raises(ValueError, match="model.norm.weight"):
        tnn.load_hf(out)
    (out / "config.json").write_text(json.dumps(image_text | {"audio_config": {}}))
    with pytest.raises(ValueError, match="audio_config are not understood"):
        tnn.load_hf(out)


def test_the_dense_models_multi_token_prediction_module_round_trips_when_asked(tmp_path):
    """Qwen3.5's ``mtp.*`` of a dense model (its layer's MLP dense): saved and read back with
    ``mtp.depths=1`` (Qwen3.5-MoE's, and the refusals: test_qwen3_5_moe.py)."""
    config = tnn.make_config(tnn.LlamaConfig, QWEN3_5 | {"mtp.depths": 1})
    model, tensors = saved_random(tmp_path / "ck", config)
    assert {"mtp.fc.weight", "mtp.layers.0.mlp.gate_proj.weight",
            "mtp.layers.0.self_attn.q_proj.weight", "mtp.norm.weight"} <= set(tensors)  # fmt: skip
    loaded, read = tnn.load_hf(tmp_path / "ck", **{"mtp.depths": 1})
    assert read == config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


@pytest.mark.parametrize("image_text", [False, True], ids=["text", "image-text"])
def test_mtp_depths_of_a_folder_counting_the_module_but_holding_none_is_refused_as_it_reads(
    tmp_path, capsys, image_text
):
    """transformers keeps ``mtp_num_hidden_layers`` in a folder it saves and drops the module:
    ``mtp.depths=1`` is refused in one line naming the count as the config is read (a plan) and
    as it loads, not at the first ``mtp.*`` tensor the load lacks; the causal LM loads without a
    word about it (the module is read only when asked)."""
    model, folder, hf = _saved(tmp_path)
    text = json.loads((folder / "config.json").read_text()) | {"mtp_num_hidden_layers": 1}
    if image_text:
        folder = tmp_path / "image-text"
        folder.mkdir()
        config = dict(model_type="qwen3_5", text_config=text, tie_word_embeddings=False)
        (folder / "config.json").write_text(json.dumps(config))
        stored = {n.replace("model.", "model.language_model.", 1): v for n, v in hf.items()}
        save_file(stored, str(folder / "model.safetensors"))
    else:
        (folder / "config.json").write_text(json.dumps(text))
    assert mtp_refusal(folder, 1) == (
        "mtp.depths=1: config.json counts 1 multi-token-prediction layer(s) "
        "(mtp_num_hidden_layers) but the checkpoint holds none of their tensors (mtp.*; "
        "transformers saves none); set mtp.depths=0"
    )
    capsys.readouterr()
    loaded, config = tnn.load_hf(folder)
    assert config == model.config and loaded.mtp is None
    assert "multi-token" not in capsys.readouterr().err
