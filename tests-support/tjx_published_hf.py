"""Published models' ``config.json`` at their real sizes, for plans of them without their weights.

``published_hf/<name>/config.json`` are transcribed by hand from the model cards' folders on
the Hugging Face hub (not downloaded: these machines reach no hub), as released:
``openai/gpt-oss-120b`` (MXFP4 experts, ``quantization_config`` ``mxfp4``),
``deepseek-ai/DeepSeek-V3.1`` (block-scaled FP8, ``quant_method: fp8``, ``scale_fmt: ue8m0``,
one multi-token-prediction layer), ``deepseek-ai/DeepSeek-V3.2`` (V3.1's with DeepSeek Sparse
Attention's indexer: ``deepseek_v32``, FP8 as V3.1), ``moonshotai/Kimi-K2-Instruct``
(``model_type`` kimi_k2, block-scaled FP8) and ``moonshotai/Kimi-K2.5`` (the image-text
``kimi_k25``, INT4 ``compressed-tensors`` experts: planned as its text model, the experts
dequantized as they load), and
``Qwen/Qwen3.5-397B-A17B`` (the image-text ``qwen3_5_moe`` folder: its ``text_config``, the token
ids beside it; its ``vision_config``, which tjx skips, is not transcribed; the shard names of its
index are not the release's, which were not found), and ``MiniMaxAI/MiniMax-M2`` (block-scaled
FP8 with ``fmt: float8_e4m3fn``, the legacy ``rotary_dim``/``attn_type_list`` keys and the
upstreamed ``auto_map``; transcribed from the MiniMax-M2 family's published config as quoted in
public sources: its sizes and keys as MiniMax-M2.5's (the same architecture), its
``quantization_config`` and ``max_position_embeddings`` as quoted for M2; the shard names of its
index entries are placeholders), and ``Qwen/Qwen3.5-27B`` (the dense image-text ``qwen3_5``
folder: its ``text_config`` with the release's ``attn_output_gate``, ``mamba_ssm_dtype``,
``mlp_only_layers``, ``mtp_*``, ``layer_types``, ``full_attention_interval``, ``linear_*`` and
``rope_parameters`` with ``mrope_*``, its ``vision_config`` and token ids; transcribed from the
27B's config as quoted in public sources (a public model wrapper building transformers'
``Qwen3_5Config`` with the release's values; slime's Qwen3.5-27B training script agrees on
every size), not from the hub; the shard names of its index are placeholders). Kimi-K2.5's is
transcribed from a printed copy of the release's config (transformers 5.7's: the keys it adds by
default left out, its ``rope_parameters`` written as the ``rope_scaling`` it read; the vision
tower's keys as the release's own code names them). `config_only` lays one out as a folder of
``config.json`` and ``model.safetensors.index.json`` only, the index naming a few of the release's
tensors (its shards absent), DeepSeek's multi-token-prediction layer among them. Standard library
only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

#: Where the transcribed configs are.
HERE = Path(__file__).with_name("published_hf")
#: The published models, by folder name.
PUBLISHED: tuple[str, ...] = ("gpt-oss-120b", "DeepSeek-V3.1", "DeepSeek-V3.2", "Kimi-K2-Instruct")
PUBLISHED += ("Qwen3.5-397B-A17B", "MiniMax-M2", "Qwen3.5-27B")
#: Published models with their own test (Kimi-K2.5: the image-text folder, INT4 experts).
INT4 = ("Kimi-K2.5",)
#: A few tensor names of each release's index and the shard the release puts them in.
_INDEX = {
    "gpt-oss-120b": {
        "model.embed_tokens.weight": "model-00000-of-00014.safetensors",
        "model.layers.0.mlp.experts.gate_up_proj_blocks": "model-00000-of-00014.safetensors",
        "model.layers.0.mlp.experts.gate_up_proj_scales": "model-00000-of-00014.safetensors",
        "model.layers.35.mlp.experts.down_proj_blocks": "model-00014-of-00014.safetensors",
        "lm_head.weight": "model-00014-of-00014.safetensors",
    },
    "DeepSeek-V3.1": {
        "model.embed_tokens.weight": "model-00001-of-000163.safetensors",
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": "model-00001-of-000163.safetensors",
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv": (
            "model-00001-of-000163.safetensors"
        ),
        "model.layers.61.eh_proj.weight": "model-00163-of-000163.safetensors",
        "model.layers.61.shared_head.head.weight": "model-00163-of-000163.safetensors",
        "lm_head.weight": "model-00162-of-000163.safetensors",
    },
    "DeepSeek-V3.2": {
        "model.embed_tokens.weight": "model-00001-of-000163.safetensors",
        "model.layers.0.mlp.down_proj.weight": "model-00001-of-000163.safetensors",
        "model.layers.0.mlp.down_proj.weight_scale_inv": "model-00001-of-000163.safetensors",
        "model.layers.61.eh_proj.weight": "model-00163-of-000163.safetensors",
        "model.layers.61.shared_head.head.weight": "model-00163-of-000163.safetensors",
        "model.norm.weight": "model-00160-of-000163.safetensors",
        "lm_head.weight": "model-00160-of-000163.safetensors",
    },
    "Kimi-K2-Instruct": {
        "model.embed_tokens.weight": "model-1-of-61.safetensors",
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight": "model-1-of-61.safetensors",
        "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv": "model-1-of-61.safetensors",
        "lm_head.weight": "model-61-of-61.safetensors",
    },
    "Kimi-K2.5": {
        "language_model.model.embed_tokens.weight": "model-00062-of-000064.safetensors",
        "language_model.model.layers.0.mlp.down_proj.weight": "model-00001-of-000064.safetensors",
        "language_model.lm_head.weight": "model-00062-of-000064.safetensors",
        "mm_projector.proj.0.weight": "model-00063-of-000064.safetensors",
        "vision_tower.patch_embed.proj.weight": "model-00064-of-000064.safetensors",
    },
    # The release's tensor names (its experts fused per layer), in shards named here.
    "Qwen3.5-397B-A17B": {
        "model.language_model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.language_model.layers.0.linear_attn.in_proj_qkv.weight": (
            "model-00001-of-00002.safetensors"
        ),
        "model.language_model.layers.3.mlp.experts.gate_up_proj": (
            "model-00001-of-00002.safetensors"
        ),
        "model.visual.patch_embed.proj.weight": "model-00002-of-00002.safetensors",
        "mtp.fc.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
    },
    "Qwen3.5-27B": {
        "model.language_model.embed_tokens.weight": "model-00001-of-00002.safetensors",
        "model.language_model.layers.0.linear_attn.in_proj_qkv.weight": (
            "model-00001-of-00002.safetensors"
        ),
        "model.language_model.layers.3.self_attn.q_proj.weight": (
            "model-00001-of-00002.safetensors"
        ),
        "model.visual.patch_embed.proj.weight": "model-00002-of-00002.safetensors",
        "mtp.fc.weight": "model-00002-of-00002.safetensors",
        "lm_head.weight": "model-00002-of-00002.safetensors",
    },
    "MiniMax-M2": {
        "model.embed_tokens.weight": "model-00001.safetensors",
        "model.layers.0.self_attn.q_norm.weight": "model-00001.safetensors",
        "model.layers.0.block_sparse_moe.gate.weight": "model-00001.safetensors",
        "model.layers.0.block_sparse_moe.e_score_correction_bias": "model-00001.safetensors",
        "model.layers.0.block_sparse_moe.experts.0.w1.weight": "model-00001.safetensors",
        "model.layers.0.block_sparse_moe.experts.0.w1.weight_scale_inv": "model-00001.safetensors",
        "lm_head.weight": "model-00002.safetensors",
    },
}


def config(name: str) -> dict:
    """The transcribed ``config.json`` of published model ``name`` (`PUBLISHED`, `INT4`)."""
    return json.loads((HERE / name / "config.json").read_text())


def config_only(name: str, folder: Path) -> Path:
    """``folder`` (made) with ``name``'s ``config.json`` and an index whose shards are absent."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(HERE / name / "config.json", folder / "config.json")
    index = {"metadata": {"total_size": 0}, "weight_map": _INDEX[name]}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    return folder
