"""Kimi-K2 and Kimi-K2.5 folders without transformers: the same DeepSeek-V3 weights laid out as
each release lays them out (``kimi_k2``'s config, Kimi-K2.5's image-text config with its
``language_model.*`` names as published, as transformers holds them and as transformers saves
them) load back to the same model; what tjx cannot read is refused in one line (against
transformers itself: tests-integration's test_hf_families.py)."""

import json

import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from tjx import nn as tnn
from tjx.nn.families.kimi_k25.hf import text_name
from tjx_nn_tests._helpers import mtp_refusal, saved_random

#: Kimi's shape, tiny: MLA with a low-rank query, a dense layer then sigmoid-routed experts in one
#: group with a shared expert, its own norm epsilon beside the latent norms' 1e-6.
KIMI = dict(
    vocab_size=24, max_seq_len=16, d_model=16, num_layers=2, num_heads=2, num_kv_heads=2,
    head_dim=12, mlp=tnn.MLPConfig(dim=8), **{"attention.type": "mla"},
    mla=tnn.MLAConfig(kv_latent_dim=8, q_lora_rank=6, qk_rope_head_dim=4, v_head_dim=6,
                      latent_norm_eps=1e-6),
    norm=tnn.NormConfig(eps=1e-5),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=4, num_shared_experts=1,
                      first_dense=1, router="sigmoid", router_norm_topk=True, router_scale=2.827),
)  # fmt: skip


def _as_kimi_k25(folder, tensors, hf, rename, **top):
    """``folder`` (made) as a Kimi-K2.5 image-text folder of the deepseek_v3 ``hf`` and
    ``tensors``, each name through ``rename``, a vision tower beside."""
    folder.mkdir()
    config = {"model_type": "kimi_k25", "tie_word_embeddings": False, **top,
              "text_config": {**hf, "model_type": "kimi_k2"},
              "vision_config": {"patch_size": 14}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    vision = {"vision_tower.encoder.blocks.0.wqkv.weight": np.ones((3, 2), np.float32)}
    stored = {rename(k): v for k, v in tensors.items()} | vision
    save_file(stored, str(folder / "model.safetensors"))
    return folder


@pytest.mark.parametrize(
    "rename",
    [
        lambda n: "language_model." + n,  # as published
        lambda n: n.replace("model.", "model.language_model.", 1),  # transformers' own layout
        lambda n: "language_model." + n.replace(".layers.", ".blocks."),  # as transformers saves
    ],
    ids=["published", "transformers", "saved"],
)
def test_a_kimi_k25_folder_loads_its_text_model(tmp_path, rename, capsys):
    model, tensors = saved_random(tmp_path / "v3", tnn.make_config(tnn.LlamaConfig, KIMI))
    hf = json.loads((tmp_path / "v3" / "config.json").read_text())
    assert (hf["rms_norm_eps"], hf["model_type"]) == (1e-5, "deepseek_v3")
    folder = _as_kimi_k25(tmp_path / "k25", tensors, hf, rename)
    loaded, config = tnn.load_hf(folder)
    assert capsys.readouterr().err.count("vision tower and projector") == 1
    assert config == model.config
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(got) == set(want)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    # Saved back as the text model transformers reads (DeepseekV3ForCausalLM), not the wrapper.
    tnn.save_hf(loaded, tmp_path / "back")
    back = json.loads((tmp_path / "back" / "config.json").read_text())
    assert back["model_type"] == "deepseek_v3" and back["rms_norm_eps"] == 1e-5
    with pytest.raises(ValueError, match="saves Kimi-K2 and Kimi-K2.5's text model as model_type"):
        tnn.save_hf(loaded, tmp_path / "asked", model_type="kimi_k25")


def test_a_kimi_k2_folder_is_deepseek_v3(tmp_path):
    model, _ = saved_random(tmp_path / "k2", tnn.make_config(tnn.LlamaConfig, KIMI))
    path = tmp_path / "k2" / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"model_type": "kimi_k2"}))
    loaded, config = tnn.load_hf(tmp_path / "k2")
    assert config == model.config and tnn.hf_kind(tmp_path / "k2") == "llama"
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    np.testing.assert_array_equal(got["embed.embedding"], want["embed.embedding"])


def test_the_stored_names_map_to_the_text_models():
    assert text_name("language_model.model.blocks.3.mlp.gate.weight") == (
        "model.layers.3.mlp.gate.weight"
    )
    assert text_name("language_model.lm_head.weight") == "lm_head.weight"
    assert text_name("model.language_model.norm.weight") == "model.norm.weight"
    assert text_name("vision_tower.encoder.blocks.0.wo.weight") == (
        "vision_tower.encoder.blocks.0.wo.weight"
    )


@pytest.mark.parametrize(
    "change, needle",
    [
        (dict(text_config={"model_type": "qwen3"}), "text_config.model_type 'qwen3' is not"),
        (dict(text_config=None), "has no text_config"),
        (dict(media_token="x"), "key(s) media_token are not understood by tjx's kimi_k25"),
        (dict(auto_map={"AutoModel": "modeling_x.X"}), "names modelling code other than"),
        (
            dict(text_config={"quantization_config": {"quant_method": "fp8"}}),
            "text_config.quantization_config differs from the folder's",
        ),
        (
            dict(
                quantization_config={
                    "quant_method": "compressed-tensors",
                    "format": "dense",
                    "config_groups": {},
                }
            ),
            "quantization_config.format 'dense' is not read by tjx (it reads 'pack-quantized'",
        ),
        (
            dict(quantization_config={"quant_method": "gptq", "bits": 4}),
            "quant_method 'gptq' is not one tjx reads (it reads fp8, mxfp4, compressed-tensors",
        ),
    ],
)
def test_what_tjx_cannot_read_is_refused_in_one_line(tmp_path, change, needle):
    _, tensors = saved_random(tmp_path / "v3", tnn.make_config(tnn.LlamaConfig, KIMI))
    hf = json.loads((tmp_path / "v3" / "config.json").read_text())
    folder = _as_kimi_k25(tmp_path / "k25", tensors, hf, lambda n: "language_model." + n)
    config = json.loads((folder / "config.json").read_text())
    for key, value in change.items():
        if key == "text_config" and value is not None:
            config[key] = {**config[key], **value}
        else:
            config[key] = value
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        tnn.read_hf_config(folder)
    assert needle in str(info.value) and "\n" not in str(info.value)


def _family_with_mtp(name):
    """(config of one MTP depth, model_type) of a family folder storing DeepSeek-V3's layers."""
    if name == "kimi_k2":
        return tnn.make_config(tnn.LlamaConfig, KIMI), "kimi_k2"
    from tjx_nn_tests.test_sparse_attention import _v32_config

    return _v32_config(), "deepseek_v32"


@pytest.mark.parametrize("name", ["kimi_k2", "deepseek_v32"])
@pytest.mark.parametrize("held", [0, 1])
def test_a_family_folder_counting_more_mtp_layers_than_it_holds_reads_those_it_holds(
    tmp_path, capsys, name, held
):
    """kimi_k2 and deepseek_v32 folders store DeepSeek-V3's multi-token-prediction layers after
    the causal LM's, as V3's do: num_nextn_predict_layers above the depths the index holds (none:
    as transformers saves a folder; or the first) reads as those it holds, said in one line, so
    that mtp.depths above them is refused as the config is read and as it loads, and a default
    load fills every depth it builds from the folder's tensors."""
    config, model_type = _family_with_mtp(name)
    model = tnn.Llama(config.replace(**{"mtp.depths": held}), rngs=nnx.Rngs(0))
    folder = tmp_path / name
    tnn.save_hf(model, folder)
    hf = json.loads((folder / "config.json").read_text())
    hf |= {"model_type": model_type, "num_nextn_predict_layers": held + 1}
    (folder / "config.json").write_text(json.dumps(hf))
    fix = "mtp.depths <= 1" if held else "mtp.depths=0"
    assert mtp_refusal(folder, held + 1) == (
        f"mtp.depths={held + 1}: the checkpoint stores {held} multi-token-prediction layer(s) "
        f"(num_nextn_predict_layers); set {fix}"
    )
    capsys.readouterr()
    loaded, read_config = tnn.load_hf(folder)
    said = capsys.readouterr().err
    assert read_config.mtp.depths == held and said.count("multi-token-prediction") == 1
    want, got = tnn.get_flat_params(model), tnn.get_flat_params(loaded)
    assert set(want) == set(got)
    for key in want:
        np.testing.assert_array_equal(got[key], want[key], err_msg=key)
