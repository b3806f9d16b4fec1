"""The published quantized releases at their real sizes, from ``config.json`` and the index alone
(#70, point 3): gpt-oss-120b (MXFP4), DeepSeek-V3.1, -V3.2, Kimi-K2-Instruct and MiniMax-M2
(block-scaled FP8), Kimi-K2.5 (INT4 compressed-tensors experts, its text model) and
Qwen3.5-397B-A17B and the dense Qwen3.5-27B (the image-text folders, read as their text models,
with the keys their releases carry), their configs transcribed in
tests-support's ``tjx_published_hf``. ``read_hf_config`` (what ``--plan --init-from`` reads) gives
their architectures, parameter counts as published, without a shard; loading the folder refuses
the missing shards in one line."""

from __future__ import annotations

import json

import pytest
import tjx_published_hf as published
from flax import nnx

from tjx import nn as tnn
from tjx.nn.hf import holds_weights
from tjx.nn.hf.quantized import Quantization, quantization_from_hf
from tjx.nn.utils import count_params

#: What each release is, from its model card: the fields tjx reads, and its parameters.
EXPECTED = {
    "gpt-oss-120b": dict(
        fields={
            "d_model": 2880,
            "num_layers": 36,
            "num_heads": 64,
            "num_kv_heads": 8,
            "head_dim": 64,
            "moe.num_experts": 128,
            "moe.experts_per_token": 4,
            "vocab_size": 201088,
            "attention.sliding_window": 128,
            "attention.window_pattern": ("local", "global") * 18,
            "attention.sinks": True,
            "mtp.depths": 0,
        },
        params=116_829_156_672,  # "116.83B"
    ),
    "DeepSeek-V3.1": dict(
        fields={
            "d_model": 7168,
            "num_layers": 61,
            "num_heads": 128,
            "mla.kv_latent_dim": 512,
            "mla.q_lora_rank": 1536,
            "moe.num_experts": 256,
            "moe.experts_per_token": 8,
            "moe.expert_mlp_dim": 2048,
            "moe.first_dense": 3,
            "moe.router": "sigmoid",
            "moe.router_groups": 8,
            "vocab_size": 129280,
            "mtp.depths": 1,
        },  # the index names layer 61's tensors
        params=671_026_419_200,  # "671B" without the multi-token-prediction layer
    ),
    "DeepSeek-V3.2": dict(
        fields={
            "d_model": 7168,
            "num_layers": 61,
            "num_heads": 128,
            "mla.kv_latent_dim": 512,
            "mla.q_lora_rank": 1536,
            "mla.index_topk": 2048,
            "mla.index_n_heads": 64,
            "mla.index_head_dim": 128,
            "moe.num_experts": 256,
            "moe.first_dense": 3,
            "vocab_size": 129280,
            "mtp.depths": 1,
        },
        # V3.1's 671,026,419,200 and 61 indexers of 13,959,424 ("685B" on the card counts the
        # stored tensors: these, the multi-token-prediction layer with its embedding and head
        # copies, and the FP8 scales: 685,396,921,376 as the release's weight listing sums them)
        params=671_877_944_064,
    ),
    "Qwen3.5-397B-A17B": dict(
        fields={
            "d_model": 4096,
            "num_layers": 60,
            "num_heads": 32,
            "num_kv_heads": 2,
            "head_dim": 256,
            "mixer_pattern": ("delta", "delta", "delta", "attention"),
            "delta.key_heads": 16,
            "delta.value_heads": 64,
            "delta.key_dim": 128,
            "attention.output_gate": True,
            "position.rope_fraction": 0.25,
            "position.rope_theta": 10_000_000.0,
            "moe.num_experts": 512,
            "moe.experts_per_token": 10,
            "moe.expert_mlp_dim": 1024,
            "moe.shared_expert_mlp_dim": 1024,
            "moe.first_dense": 0,
            "vocab_size": 248320,
            "max_seq_len": 262144,
        },
        # "397B" on the card counts the vision tower and the multi-token-prediction layer too;
        # the text model's 396.3 B: 60 sparse layers of 512 experts, 45 delta and 15 attention.
        params=396_346_350_336,
    ),
    "Qwen3.5-27B": dict(
        fields={
            "d_model": 5120,
            "num_layers": 64,
            "num_heads": 24,
            "num_kv_heads": 4,
            "head_dim": 256,
            "mlp.dim": 17408,
            "mixer_pattern": ("delta", "delta", "delta", "attention"),
            "delta.key_heads": 16,
            "delta.value_heads": 48,
            "delta.key_dim": 128,
            "delta.value_dim": 128,
            "attention.output_gate": True,
            "position.rope_fraction": 0.25,
            "position.rope_theta": 10_000_000.0,
            "moe.num_experts": 0,
            "tie_embeddings": False,
            "vocab_size": 248320,
            "max_seq_len": 262144,
            "mtp.depths": 0,
        },
        # "27B" on the card (its vision tower and multi-token-prediction layer besides): 2
        # untied 248,320 x 5,120 embeddings, 64 SwiGLU MLPs of 17,408, 16 gated attention
        # layers, 48 delta layers of 16 key and 48 value heads (summed by hand the same).
        params=26_895_998_464,
    ),
    "MiniMax-M2": dict(
        fields={
            "d_model": 3072,
            "num_layers": 62,
            "num_heads": 48,
            "num_kv_heads": 8,
            "head_dim": 128,
            "position.rope_fraction": 0.5,
            "position.rope_theta": 5_000_000.0,
            "attention.qk_norm_scope": "projection",
            "moe.num_experts": 256,
            "moe.experts_per_token": 8,
            "moe.expert_mlp_dim": 1536,
            "moe.router": "sigmoid",
            "vocab_size": 200064,
            "max_seq_len": 196608,
        },
        # The card's "230B total"; its 3 multi-token-prediction modules are in neither
        # transformers' model nor tjx's.
        params=228_689_764_864,
    ),
}  # fmt: skip
#: Kimi-K2 (model_type kimi_k2, read as deepseek_v3): "1T" total on its card; the release's 61
#: shards hold 1,026,470,731,056 values, less 62,498,608 FP8 scales and rotary buffers.
KIMI_K2 = dict(
    fields={
        "d_model": 7168,
        "num_layers": 61,
        "num_heads": 64,
        "mla.kv_latent_dim": 512,
        "mla.q_lora_rank": 1536,
        "moe.num_experts": 384,
        "moe.experts_per_token": 8,
        "moe.expert_mlp_dim": 2048,
        "moe.first_dense": 1,
        "moe.router": "sigmoid",
        "moe.router_groups": 1,
        "moe.router_scale": 2.827,
        "vocab_size": 163840,
        "norm.eps": 1e-6,
        "mla.latent_norm_eps": None,
        "mtp.depths": 0,
    },
    params=1_026_408_232_448,
)
EXPECTED["Kimi-K2-Instruct"] = KIMI_K2


@pytest.mark.parametrize("name", published.PUBLISHED)
def test_a_published_release_reads_from_its_config_and_index_alone(tmp_path, name):
    folder = published.config_only(name, tmp_path / name)
    assert not holds_weights(folder)
    config = tnn.read_hf_config(folder, scan_layers=True)
    want = EXPECTED[name]
    assert {k: tnn.setting_value(config, k) for k in want["fields"]} == want["fields"]
    main = config.replace(**{"mtp.depths": 0})
    abstract = nnx.eval_shape(lambda: tnn.Llama(main, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == want["params"]
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.check_hf_weights(folder)
    assert "is missing: model.safetensors.index.json names it as a shard" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value"),
    [("attn_output_gate", False), ("mamba_ssm_dtype", 16), ("mlp_only_layers", "all")],
)
def test_a_dense_qwen3_5_release_key_at_a_value_tjx_does_not_compute_is_refused(
    tmp_path, key, value
):
    """The keys Qwen3.5-27B's release carries (read above at their published values) keep a
    one-line refusal for a value transformers would not compute with or that is not one."""
    folder = published.config_only("Qwen3.5-27B", tmp_path / "q")
    hf = published.config("Qwen3.5-27B")
    hf["text_config"][key] = value
    (folder / "config.json").write_text(json.dumps(hf))
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.read_hf_config(folder)
    assert key in str(info.value)


def test_holds_weights_sees_a_single_file_and_any_shard(tmp_path):
    folder = published.config_only("gpt-oss-120b", tmp_path / "oss")
    (folder / "model-00014-of-00014.safetensors").write_bytes(b"")
    assert holds_weights(folder)  # a shard there: the loader checks the rest
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text("{}")
    (single / "model.safetensors").write_bytes(b"")
    assert holds_weights(single) and not holds_weights(tmp_path / "nowhere")


def test_kimi_k25_plans_as_its_text_model_with_its_int4_experts(tmp_path):
    """The published Kimi-K2.5 (INT4 ``compressed-tensors`` experts, its ``quantization_config``
    repeated in its ``text_config``) plans as it is: Kimi-K2's text model with its own norms
    (rms_norm_eps 1e-5, the latent norms at 1e-6) and 256K yarn positions, the image-text
    folder's ``language_model.*`` names in its index; its scheme reads as symmetric INT4 in
    groups of 32; loading it refuses the absent shards in one line."""
    folder = published.config_only("Kimi-K2.5", tmp_path / "k25")
    hf = published.config("Kimi-K2.5")
    assert quantization_from_hf(hf) == Quantization("compressed-tensors", group=32)
    config = tnn.read_hf_config(folder, scan_layers=True)
    want = dict(KIMI_K2["fields"], **{"norm.eps": 1e-5, "mla.latent_norm_eps": 1e-6})
    assert {k: tnn.setting_value(config, k) for k in want} == want
    assert config.position.rope_scaling.factor == 64.0 and config.max_seq_len == 262144
    abstract = nnx.eval_shape(lambda: tnn.Llama(config, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == KIMI_K2["params"]  # the same text model as Kimi-K2's
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.check_hf_weights(folder)
    assert "is missing: model.safetensors.index.json names it as a shard" in str(info.value)
