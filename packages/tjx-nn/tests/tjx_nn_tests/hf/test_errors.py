"""Bad HF checkpoints and exports: one ``ValueError`` naming the problem, nothing written."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file, save_file

from tjx import nn as tnn


def _llama(tmp_path, **hf_changes):
    config = tnn.LlamaConfig(
        vocab_size=24,
        max_seq_len=16,
        d_model=16,
        num_layers=1,
        num_heads=2,
        mlp=tnn.MLPConfig(dim=24),
    )
    folder = tmp_path / "ck"
    tnn.save_hf(tnn.Llama(config, rngs=nnx.Rngs(0)), folder)
    hf = json.loads((folder / "config.json").read_text()) | hf_changes
    (folder / "config.json").write_text(json.dumps({k: v for k, v in hf.items() if v != "DROP"}))
    return folder


def _edit_weights(folder, change):
    weights = load_file(str(folder / "model.safetensors"))
    change(weights)
    save_file(weights, str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    ("changes", "needle"),
    [
        ({"model_type": "falcon"}, "model_type 'falcon' is not supported"),
        (
            {"rope_scaling": {"rope_type": "proportional", "factor": 2.0}},
            "rope_scaling type 'proportional' is not supported; tjx computes linear, dynamic",
        ),
        (
            {"rope_scaling": {"rope_type": "yarn", "factor": 2.0, "beta_faster": 3}},
            "rope_scaling: unknown key(s) beta_faster",
        ),
        (
            {"model_type": "mistral", "sliding_window": 0},
            "config.json: sliding_window is 0, not an integer >= 1 or null",
        ),
        (
            {"model_type": "qwen2", "layer_types": ["sliding_attention"], "sliding_window": None},
            "layer_types has sliding layers but no sliding_window",
        ),
        ({"layer_types": ["full_attention"] * 2}, "layer_types must list 1 of"),
        ({"auto_map": {"AutoModelForCausalLM": "x.Y"}}, "auto_map"),
        ({"fancy_new_thing": 1, "zz_top": 2}, "key(s) fancy_new_thing, zz_top are not understood"),
        ({"hidden_act": "gelu"}, "hidden_act must be 'silu'"),
        ({"attention_bias": True}, "attention_bias True with mlp_bias False"),
        (  # plain RoPE over part of each head: transformers' default RoPE reads it too
            {"rope_parameters": {"rope_type": "default", "partial_rotary_factor": 0}},
            "rope_parameters.partial_rotary_factor is 0, not a number in (0, 1]",
        ),
        (
            {"model_type": "qwen2", "rope_parameters": {"partial_rotary_factor": 0.5}},
            "config.json partial_rotary_factor 0.5 is not supported (only 1)",
        ),
    ],
)
def test_config_json_that_tjx_cannot_honour_is_refused_by_name(tmp_path, changes, needle):
    folder = _llama(tmp_path, **changes)
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        tnn.load_hf(folder)
    assert needle in str(info.value)


def test_a_sliding_window_that_never_slides_is_served(tmp_path):
    _, config = tnn.load_hf(_llama(tmp_path, model_type="mistral", sliding_window=16))
    assert config.max_seq_len == 16


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda w: w.pop("model.norm.weight"), "lacks tensor(s) model.norm.weight"),
        (lambda w: w.update(extra=np.zeros(2, np.float32)), "tensor(s) extra that"),
        (
            lambda w: w.update(
                {"model.layers.0.self_attn.k_proj.weight": np.zeros((4, 16), np.float32)}
            ),
            "tensor model.layers.0.self_attn.k_proj.weight has shape [4, 16], config.json "
            "implies [16, 16]",
        ),
    ],
)
def test_missing_extra_and_misshaped_tensors_are_named(tmp_path, change, needle):
    folder = _llama(tmp_path)
    _edit_weights(folder, change)
    with pytest.raises(ValueError) as info:
        tnn.load_hf(folder)
    assert needle in str(info.value)


def test_folders_without_config_or_safetensors_are_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no config.json"):
        tnn.load_hf(tmp_path / "empty")
    folder = _llama(tmp_path)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="no model.safetensors or model.safetensors.index.json"):
        tnn.load_hf(folder)
    # Not a pickle at all: it is never opened, so its content cannot matter.
    (folder / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="PyTorch pickle, never opened.*save_pretrained"):
        tnn.load_hf(folder)
    with pytest.raises(ValueError, match="could not find"):
        tnn.load_hf("no-such-org/no-such-model")  # HF_HUB_OFFLINE=1 in tests


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"dtype": "int8"}, "dtype must be one of"),
        ({"max_shard_size": "lots"}, "max_shard_size must be a positive size"),
        ({"model_type": "gpt2"}, "model_type must be one of"),
        ({"model_type": "qwen2"}, "needs attention.qkv_bias=True"),
    ],
)
def test_bad_exports_write_nothing(tmp_path, kwargs, needle):
    config = tnn.LlamaConfig(vocab_size=24, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match=needle):
        tnn.save_hf(tnn.Llama(config, rngs=nnx.Rngs(0)), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_exports_refuse_what_hf_cannot_express_and_full_folders(tmp_path):
    alibi = tnn.LlamaConfig(
        vocab_size=24,
        max_seq_len=16,
        d_model=16,
        num_layers=1,
        num_heads=2,
        position=tnn.PositionConfig(kind="alibi"),
    )
    with pytest.raises(ValueError, match="only LLaMA-shaped configs export"):
        tnn.save_hf(tnn.Llama(alibi, rngs=nnx.Rngs(0)), tmp_path / "a")
    bert = tnn.BERT(
        tnn.BertConfig(vocab_size=24, max_seq_len=16, d_model=16, num_layers=1, num_heads=2),
        rngs=nnx.Rngs(0),
    )
    with pytest.raises(ValueError, match="saves GPT2 and Llama models"):
        tnn.save_hf(bert, tmp_path / "b")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep")
    config = tnn.LlamaConfig(vocab_size=24, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
    with pytest.raises(ValueError, match="is not an empty folder"):
        tnn.save_hf(tnn.Llama(config, rngs=nnx.Rngs(0)), tmp_path / "full")
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["x"]


@pytest.mark.parametrize("read", [tnn.read_hf_config, tnn.load_hf])
def test_mtp_depths_for_a_family_tjx_reads_no_mtp_layers_of_is_refused_naming_the_type(
    tmp_path, read
):
    """A Llama checkpoint has no multi-token-prediction layers and its mapping none to fill:
    ``mtp.depths`` is refused in one line as the config is read (a plan) and as it loads, not a
    KeyError when the load reaches the first of them."""
    folder = _llama(tmp_path)
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        read(folder, **{"mtp.depths": 1})
    assert str(info.value) == (
        "mtp.depths=1: tjx reads no multi-token-prediction layers from a 'llama' checkpoint; "
        "set mtp.depths=0"
    )


def test_a_parameter_no_tensor_maps_to_is_refused_naming_it_before_any_is_read(
    tmp_path, monkeypatch
):
    """The loader's own check beneath the plan's (`reads_no_mtp`): a mapping that leaves a model
    parameter without a tensor (here one taken out of Llama's) is refused in one line naming it,
    before a tensor is read: no parameter keeps its random value, and no KeyError stops the load
    halfway."""
    from dataclasses import replace

    from tjx.nn.hf import plan

    folder = _llama(tmp_path)
    real, dropped = plan.llama_mapping, []

    def lacking(config, *args):
        mapping = real(config, *args)
        dropped.append(sorted(mapping.to_tjx)[-1])
        kept = {k: v for k, v in mapping.to_tjx.items() if k != dropped[-1]}
        return replace(mapping, to_tjx=kept)

    monkeypatch.setattr(plan, "llama_mapping", lacking)
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.load_hf(folder)
    assert str(info.value) == (
        f"no tensor of the 'llama' checkpoint maps to parameter(s) {dropped[0]}: they would keep "
        "their random values; set the model as its config.json describes it (mtp.depths...)"
    )
