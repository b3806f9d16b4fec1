"""Qwen3.5-MoE checkpoints without transformers: tjx's export (asked for by name) loads back to
the same weights in transformers' layout (Qwen3.5's four delta projections, Qwen2-MoE's sparse
block in every layer), the image-text folder reads as its text model, transformers' defaults are
read as it reads them, and the variants it cannot express are refused in one line
(transformers itself: tests-integration's test_hf_families.py)."""

import json

import jax
import jax.numpy as jnp
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


def test_its_multi_token_prediction_module_loads_and_saves_when_asked(tmp_path, capsys):
    """Qwen3.5's ``mtp.*`` (transformers has none: the names are the published folders'): the
    module's fc, its three norms and its attending layer with its sparse block go out and come
    back with ``mtp.depths=1``; by default they are skipped in one line, as transformers does."""
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE | {"mtp.depths": 1}), rngs=nnx.Rngs(0)
    )
    rs = np.random.RandomState(1)
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.1 * rs.randn(*v.shape) for k, v in flat.items()})
    tnn.save_hf(model, tmp_path / "ck", model_type="qwen3_5_moe_text")
    saved = json.loads((tmp_path / "ck" / "config.json").read_text())
    assert (saved["mtp_num_hidden_layers"], saved["mtp_use_dedicated_embeddings"]) == (1, False)
    from safetensors.numpy import load_file

    hf = load_file(tmp_path / "ck" / "model.safetensors")
    want = tnn.get_flat_params(model)
    fc = want["mtp.layers.0.eh_proj.kernel"].T  # [d, 2·d]: the embedding's half first
    np.testing.assert_array_equal(hf["mtp.fc.weight"], fc)
    np.testing.assert_array_equal(
        hf["mtp.pre_fc_norm_embedding.weight"], want["mtp.layers.0.enorm.scale"]
    )
    np.testing.assert_array_equal(hf["mtp.norm.weight"], want["mtp.layers.0.norm.scale"])
    assert {"mtp.pre_fc_norm_hidden.weight", "mtp.layers.0.self_attn.q_proj.weight",
            "mtp.layers.0.self_attn.q_norm.weight", "mtp.layers.0.mlp.gate.weight",
            "mtp.layers.0.mlp.shared_expert_gate.weight",
            "mtp.layers.0.mlp.experts.3.down_proj.weight"} <= set(hf)  # fmt: skip
    assert not any(n.startswith("mtp.layers.0.linear_attn.") for n in hf)  # it attends
    loaded, config = tnn.load_hf(tmp_path / "ck", **{"mtp.depths": 1})
    assert config == model.config
    got = tnn.get_flat_params(loaded)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    capsys.readouterr()
    plain, config = tnn.load_hf(tmp_path / "ck")
    assert config.mtp.depths == 0 and plain.mtp is None
    assert "skipping the checkpoint's multi-token-prediction module" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(mtp_num_hidden_layers=0), "mtp_num_hidden_layers 0"),
        (dict(mtp_num_hidden_layers=2), "mtp_num_hidden_layers 2"),
        (dict(mtp_use_dedicated_embeddings=True), "mtp_use_dedicated_embeddings True"),
    ],
)
def test_a_module_tjx_cannot_read_is_refused_when_asked_for(change, message):
    hf = qwen3_5_moe_config_to_hf(tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE)) | change
    with pytest.raises(ValueError, match=rf"^mtp.depths=1: .*{message}") as info:
        qwen3_5_moe_config_from_hf(hf, **{"mtp.depths": 1})
    assert "\n" not in str(info.value)


def test_a_hybrid_with_its_module_trains_it_and_refuses_speculative_decoding():
    """Delta layers and an MTP module (refused before: the module attends, whatever the stack
    mixes): the objective's gradients reach the module's fc and its layer's sparse block; a
    speculative decode is refused in one line (a delta state cannot roll a rejected draft
    back)."""
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE | {"mtp.depths": 1}), rngs=nnx.Rngs(0)
    )
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 24, (2, 9)))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        return tnn.objective_loss(nnx.merge(graphdef, p, rest), batch).loss

    grads = nnx.to_pure_dict(jax.jit(jax.grad(loss))(params))
    layer = grads["mtp"]["layers"][0]
    for leaf in (layer["eh_proj"]["kernel"], layer["block"]["moe"]["router"]["kernel"]):
        assert float(jnp.abs(leaf).sum()) > 0
    with pytest.raises(ValueError, match=r"^generate_speculative: delta layers .*with generate$"):
        tnn.generate_speculative(model, [[1, 2]], max_new_tokens=2)


def test_the_published_layout_of_fused_experts_reads_as_the_same_model(tmp_path):
    """The published folders store each layer's experts fused (``mlp.experts.gate_up_proj``
    ``[E, 2f, d]``: expert e's gate rows then its up rows; ``down_proj`` ``[E, d, f]``), the MTP
    layer's too; transformers saves them one per expert. Both read as the same model."""
    model = tnn.Llama(
        tnn.make_config(tnn.LlamaConfig, QWEN3_5_MOE | {"mtp.depths": 1}), rngs=nnx.Rngs(0)
    )
    rs = np.random.RandomState(2)
    flat = tnn.get_flat_params(model)
    tnn.set_flat_params(model, {k: v + 0.1 * rs.randn(*v.shape) for k, v in flat.items()})
    tnn.save_hf(model, tmp_path / "ck", model_type="qwen3_5_moe_text")
    from safetensors.numpy import load_file

    tensors = load_file(tmp_path / "ck" / "model.safetensors")
    fused = {}
    for name, value in tensors.items():
        if ".mlp.experts." not in name:
            fused[name] = value
        elif name.endswith("experts.0.gate_proj.weight"):
            p = name.removesuffix("0.gate_proj.weight")
            fused[p + "gate_up_proj"] = np.stack(
                [np.concatenate([tensors[f"{p}{e}.gate_proj.weight"],
                                 tensors[f"{p}{e}.up_proj.weight"]]) for e in range(4)]
            )  # fmt: skip
            fused[p + "down_proj"] = np.stack(
                [tensors[f"{p}{e}.down_proj.weight"] for e in range(4)]
            )
    assert "mtp.layers.0.mlp.experts.gate_up_proj" in fused
    assert fused["model.layers.0.mlp.experts.gate_up_proj"].shape == (4, 8, 16)
    folder = tmp_path / "published"
    folder.mkdir()
    (folder / "config.json").write_text((tmp_path / "ck" / "config.json").read_text())
    save_file(fused, folder / "model.safetensors")
    loaded, config = tnn.load_hf(folder, **{"mtp.depths": 1})
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_model_read_from_a_qwen3_5_moe_folder_exports_back_as_it_by_default(tmp_path):
    """Its switches are Qwen3-Next's (save_hf's default for them); the folder's model type,
    recorded, asks for its own family back; any other family keeps save_hf's default."""
    for read_from in ("qwen3_5_moe_text", "qwen3_5_moe"):
        assert tnn.hf_export_type(read_from) == "qwen3_5_moe_text"
    for read_from in ("qwen3_next", "qwen3_5_text", "deepseek_v32", "llama", None):
        assert tnn.hf_export_type(read_from) is None
    folder = tmp_path / "f"
    assert tnn.hf_model_type(folder) is None  # no folder: nothing to record
    folder.mkdir()
    (folder / "config.json").write_text("{not json")
    assert tnn.hf_model_type(folder) is None  # the load names a damaged config, not this
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen3_5_moe"}))
    assert tnn.hf_model_type(folder) == "qwen3_5_moe"
    assert tnn.hf_model_type("Qwen/Qwen3.5-35B-A3B") is None  # a hub name: nothing fetched
