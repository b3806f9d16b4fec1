"""The published quantized releases at their real sizes, from ``config.json`` and the index alone
(#70, point 3): gpt-oss-120b (MXFP4), DeepSeek-V3.1 and MiniMax-M2 (block-scaled FP8), their
configs transcribed in tests-support's ``tjx_published_hf``. ``read_hf_config`` (what ``--plan
--init-from`` reads) gives their architectures, parameter counts as published, without a shard;
loading the folder refuses the missing shards in one line."""

from __future__ import annotations

import pytest
import tjx_published_hf as published
from flax import nnx

from tjx import nn as tnn
from tjx.nn.hf import holds_weights
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


def test_holds_weights_sees_a_single_file_and_any_shard(tmp_path):
    folder = published.config_only("gpt-oss-120b", tmp_path / "oss")
    (folder / "model-00014-of-00014.safetensors").write_bytes(b"")
    assert holds_weights(folder)  # a shard there: the loader checks the rest
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text("{}")
    (single / "model.safetensors").write_bytes(b"")
    assert holds_weights(single) and not holds_weights(tmp_path / "nowhere")
