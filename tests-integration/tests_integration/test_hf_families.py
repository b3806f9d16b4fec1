"""Qwen3, OLMo 2 and 3, Phi-3, Gemma 2, Gemma 3 (text), DeepSeek-V2/V3/V3.2, gpt-oss, GLM-4.5 MoE,
Qwen3.5 (text, and the image-text model's folder), Qwen3.5-MoE, Qwen3-Next, Llama 4 (text), Gemma 4
(text, and the image-text model's folder), Kimi-K2.5 (the image-text model's folder) and
MiniMax-M2 round-trip through transformers (PyTorch in the scratch venv of ``_hf_peer``, one peer
process each way for all families).

transformers builds a tiny random model of each family (2 layers, GQA 4/2, random norms, Gemma's
soft caps bending the logits) and scores it in float32 and bfloat16; tjx loads each with
``tjx.nn.load_hf``:

* float32: logits within 1e-4 of transformers' (relative to their largest), 20 greedy tokens
  identical;
* bfloat16 (weights and compute, both sides): transformers' own bfloat16 logits are off its
  float32 ones by ``e`` (0.6-5 % of the largest logit here: every matmul output and activation is
  rounded to 8 bits, 2^-8 = 0.4 % each, over two layers, Gemma's soft caps and sqrt(d) scale
  amplifying it). tjx rounds in other places (it keeps norms, softmax, RoPE and the caps in
  float32; transformers rounds q·k, the softmax and each norm's output before its weight), so the
  two bfloat16 results cannot agree to 1e-4: tjx's must lie within ``BF16_FACTOR`` x ``e`` of
  transformers' bfloat16 logits, and no further than that from the float32 ones (measured
  2026-11-24: 0.64-1.0 x ``e`` and 0.85-1.07 x ``e``);
* tjx saves each with ``tjx.nn.save_hf`` (the family from the config's switches; Phi-3 by name)
  and transformers loads it as the same class with the same logits (1e-6) and greedy tokens.

The windows slide: the sequences are 12 tokens (24 while generating) and every family but OLMo 2
(which has none) has a window of 5 in some layers: Qwen3 layer 1 (``max_window_layers``), OLMo 3
layers 0-2 (its default pattern), every Phi-3 layer, Gemma 2 layer 0 (its alternating pattern),
Gemma 3 layer 0 (``layer_types``), whose local layers also rotate at their own RoPE base (100, the
global one 10,000).

Phi-3's LongRoPE (``phi3-longrope``: pretrained for 8 positions, ``max_position_embeddings`` 64,
so factor 8 and attention factor sqrt(2)) is scored twice: at 12 tokens (its long factors) and,
in a separate call, at ``SHORT`` = 6 tokens (its short ones); its greedy continuation crosses 8
tokens, where transformers' Phi-3 recomputes its cache with the long factors and tjx re-reads
the sequence. Read without the scaling, the same weights are far off transformers in both calls
(asserted), so the factors matter to the comparison.

The DeepSeek cases (3 layers: layer 0 dense, 1-2 MoE) carry every piece of tjx's DeepSeek MLA and
routing: V2-Lite's full ``q_proj``, V3's low-rank query with its norm, the normed latent and the
shared interleaved RoPE key, values narrower than q/k (6 vs 12), shared experts, V2's softmax
top-k (greedy, and full V2's ``group_limited_greedy``) and V3's sigmoid router with a random
correction bias and grouped top-k (2 of 4 groups), routed scaling (1.5, 2.5), V3's yarn RoPE
(factor 4) with its softmax ``mscale²``. bfloat16
rounding flips a token's top-k choice where two experts nearly tie, a jump no tolerance covers
(transformers' own bfloat16 run of the V3 case is off its float32 one by 65 % at one token; tjx's
V2 by 8.9 % at one of 24, measured 2026-11-24): the routed cases run in float32 only, and their
bfloat16 comparison runs a sibling that routes every token to every expert (``*_all``), so that
no choice can flip and the rest of the computation (MLA, experts, shared experts) is compared.

DeepSeek-V3.2 (``deepseek_v32``) is V3's case with DeepSeek Sparse Attention: each layer's
lightning indexer (8 heads of 8 dims, its own rotate-half RoPE on the first 4, a LayerNorm'd
key, float32 head weights) keeps 4 of the keys a query sees, in the 12-token call and in the
cached decode (its keys cached), so the top-k drops keys (asserted: every key kept is far off).

gpt-oss (2 layers, layer 0 sliding: transformers' default pattern) carries attention sinks, q/k/v/o
biases, yarn RoPE (factor 4 over 16 positions, ``truncate`` false), a softmax top-2 of 4 router
with a bias, and biased experts whose clamped SwiGLU bites: at ``initializer_range`` 1 the gate
and up pre-activations (std ~5.7) pass the clamp at 7 often. GLM-4.5 (3 layers: layer 0 dense)
carries RoPE on a quarter of each head (``partial_rotary_factor`` 0.25 of head_dim 16), per-head
q/k norms, q/k/v biases, the sigmoid router with a random correction bias, grouped top-2 (2 of
4 groups), routed scaling 2.5 and a shared expert. Both route, so (as DeepSeek's) they run
bfloat16 as ``*_all`` siblings that choose every expert.
MiniMax-M2 (2 layers, both MoE) carries q/k norms over the whole projection, RoPE on a quarter of
each head (given as the released folders' legacy ``rotary_dim``) and the sigmoid router with a
random correction bias (top-2 of 4, renormalised, no groups or scaling); its bfloat16 comparison
runs as ``minimax_m2_all``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers

from eval.cli import main as eval_main
from tests_integration._hf_peer import run_peer
from tjx import nn
from trainer.cli import main as trainer_main

VOCAB, NEW = 96, 20
BF16_FACTOR = 1.5
SHORT = 6
TOKENS = np.random.default_rng(1).integers(0, VOCAB, size=(2, 12)).tolist()
COMMON = dict(
    vocab_size=VOCAB,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
    hidden_size=32,
    intermediate_size=48,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
WINDOW = 5
GEMMA = dict(sliding_window=WINDOW, initializer_range=0.2, head_dim=16)
DEEPSEEK = dict(
    COMMON,
    num_hidden_layers=3,
    num_key_value_heads=4,
    initializer_range=0.2,
    kv_lora_rank=16,
    qk_nope_head_dim=8,
    qk_rope_head_dim=4,
    v_head_dim=6,
    n_routed_experts=8,
    num_experts_per_tok=2,
    moe_intermediate_size=16,  # bfloat16 grouped_mm: rows of 16-byte multiples
    first_k_dense_replace=1,
)
CASES: dict[str, dict[str, Any]] = {
    # Per-head q/k norms, head_dim 16 != 32 / 4; layer 1 slides.
    "qwen3": dict(
        config=dict(
            model_type="qwen3",
            **COMMON,
            head_dim=16,
            use_sliding_window=True,
            sliding_window=WINDOW,
            max_window_layers=1,
        )
    ),
    # Norms on the sublayers' outputs, q/k norms over the whole projection; tied head.
    "olmo2": dict(config=dict(model_type="olmo2", **COMMON, tie_word_embeddings=True)),
    # OLMo 2's block with sliding layers: transformers' default pattern (three sliding, one
    # full) over 4 layers, one RoPE entry per layer type (transformers 5's form).
    "olmo3": dict(
        config=dict(
            model_type="olmo3",
            **{**COMMON, "num_hidden_layers": 4},
            sliding_window=WINDOW,
            initializer_range=0.2,
            rope_parameters={
                "sliding_attention": {"rope_type": "default", "rope_theta": 500.0},
                "full_attention": {"rope_type": "default", "rope_theta": 500.0},
            },
        )
    ),
    # Fused qkv_proj / gate_up_proj; a window in every layer (Phi-3-mini-4k's 2047 of 4096).
    "phi3": dict(
        config=dict(model_type="phi3", **COMMON, sliding_window=WINDOW),
        model_type="phi3",
    ),
    # LongRoPE (Phi-3-mini-128k's form: the pretraining length beside rope_scaling, no factor):
    # long factors for the 12-token call, short ones for the SHORT-token call.
    "phi3-longrope": dict(
        config=dict(
            model_type="phi3",
            **COMMON,
            original_max_position_embeddings=8,
            initializer_range=0.2,  # sharp attention, so that the rotations matter
            rope_scaling={
                "type": "longrope",
                "short_factor": [1.0, 1.3, 1.7, 2.5],
                "long_factor": [1.0, 2.0, 5.0, 9.0],
            },
        ),
        model_type="phi3",
        short=SHORT,
    ),
    # Sandwich norms (1 + w), sqrt(d) embeddings, GeGLU, query scale 12 (not head_dim 16),
    # soft caps low enough to bend the logits of this small model.
    "gemma2": dict(
        config=dict(
            model_type="gemma2",
            **COMMON,
            **GEMMA,
            query_pre_attn_scalar=12,
            attn_logit_softcapping=2.0,
            final_logit_softcapping=3.0,
        )
    ),
    # Gemma 3: per-head q/k norms (1 + w); local layer 0 at RoPE base 100, global layer 1 at
    # 10,000 (low bases, so that 12 positions turn the rotations far apart).
    "gemma3_text": dict(
        config=dict(
            model_type="gemma3_text",
            **COMMON,
            **GEMMA,
            layer_types=["sliding_attention", "full_attention"],
            rope_theta=10000.0,
            rope_local_base_freq=100.0,
            tie_word_embeddings=False,
        )
    ),
    # V2-Lite's shape: a full q_proj, softmax top-2 of 8 unnormalised, 2 shared experts.
    "deepseek_v2": dict(
        config=dict(
            model_type="deepseek_v2",
            **DEEPSEEK,
            q_lora_rank=None,
            n_shared_experts=2,
            topk_method="greedy",
            routed_scaling_factor=1.5,
        )
    ),
    # V3's: low-rank query, sigmoid router with a correction bias, groups, yarn RoPE.
    "deepseek_v3": dict(
        config=dict(
            model_type="deepseek_v3",
            **DEEPSEEK,
            q_lora_rank=12,
            n_shared_experts=1,
            n_group=4,
            topk_group=2,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            rope_parameters=dict(
                rope_type="yarn",
                factor=4.0,
                original_max_position_embeddings=16,
                mscale=1.0,
                mscale_all_dim=1.0,
                rope_theta=10000.0,
            ),
        ),
        make=dict(random_buffers=["e_score_correction_bias"]),
        bf16=False,
    ),
}
# gpt-oss: sinks, q/k/v/o biases, yarn, the biased router and clamped-SwiGLU experts.
CASES["gpt_oss"] = dict(
    config=dict(
        COMMON,
        model_type="gpt_oss",
        head_dim=8,
        intermediate_size=16,
        sliding_window=WINDOW,
        num_local_experts=4,
        num_experts_per_tok=2,
        initializer_range=1.0,
        rope_parameters=dict(
            rope_type="yarn",
            factor=4.0,
            beta_fast=32.0,
            beta_slow=1.0,
            truncate=False,
            original_max_position_embeddings=16,
            rope_theta=10000.0,
        ),
    ),
    bf16=False,
)
# GLM-4.5: partial RoPE, q/k norms, q/k/v biases, DeepSeek-V3's grouped sigmoid routing.
CASES["glm4_moe"] = dict(
    config=dict(
        COMMON,
        model_type="glm4_moe",
        num_hidden_layers=3,
        head_dim=16,
        initializer_range=0.2,
        attention_bias=True,
        use_qk_norm=True,
        n_routed_experts=8,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        n_shared_experts=1,
        first_k_dense_replace=1,
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
        rope_parameters=dict(rope_type="default", rope_theta=100.0, partial_rotary_factor=0.25),
    ),
    make=dict(random_buffers=["e_score_correction_bias"]),
    bf16=False,
)
# Qwen3.5: three Gated DeltaNet layers, then gated attention (transformers' default pattern);
# zero-centred norms, RoPE on a quarter of each head (4 of 16 dims), 4 value heads on 2 key heads.
CASES["qwen3_5"] = dict(
    config=dict(
        COMMON,
        model_type="qwen3_5_text",
        num_hidden_layers=4,
        head_dim=16,
        initializer_range=0.2,
        linear_num_key_heads=2,
        linear_num_value_heads=4,
        linear_key_head_dim=8,
        linear_value_head_dim=8,
        rope_parameters=dict(rope_type="default", rope_theta=100.0, partial_rotary_factor=0.25),
    ),
)
# Qwen3-Next: Qwen3.5's layers with their input projections grouped by key head, and Qwen2-MoE's
# sparse block (softmax top-2 of 4, renormalised, a gated shared expert) after a dense layer 0.
# It routes, so it runs in float32 only (the module doc); its bfloat16 delta layers and experts
# are qwen3_5's and the *_all cases' computations.
CASES["qwen3_next"] = dict(
    config=dict(
        CASES["qwen3_5"]["config"],
        model_type="qwen3_next",
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=16,
        shared_expert_intermediate_size=24,
        norm_topk_prob=True,
        mlp_only_layers=[0],
    ),
    bf16=False,
)
# Qwen3.5-MoE: Qwen3.5's layers (four delta input projections) with a sparse block in every layer
# (softmax top-2 of 4, always renormalised, a gated shared expert of its own width); no dense
# width (transformers' config has no intermediate_size). It routes, so it runs in float32 only;
# its bfloat16 comparison is the sibling that chooses every expert (qwen3_5_moe_all). The
# published folders are the image-text model's (qwen3_5_moe_image_text: the same text model under
# model.language_model., a tiny vision tower beside), exported as the text model.
CASES["qwen3_5_moe"] = dict(
    config={k: v for k, v in CASES["qwen3_5"]["config"].items() if k != "intermediate_size"}
    | dict(model_type="qwen3_5_moe_text", num_experts=4, num_experts_per_tok=2,
           moe_intermediate_size=16, shared_expert_intermediate_size=24),
    model_type="qwen3_5_moe_text",
    bf16=False,
)  # fmt: skip
CASES["qwen3_5_moe_all"] = dict(
    CASES["qwen3_5_moe"], config=dict(CASES["qwen3_5_moe"]["config"], num_experts_per_tok=4),
    bf16=True,
)  # fmt: skip
CASES["qwen3_5_moe_image_text"] = dict(
    config=dict(
        model_type="qwen3_5_moe",
        text_config={k: v for k, v in CASES["qwen3_5_moe"]["config"].items() if k != "model_type"},
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2,
                           out_hidden_size=32, num_position_embeddings=16),  # fmt: skip
    ),
    make=dict(auto="AutoModelForImageTextToText"),
    model_type="qwen3_5_moe_text",
    export_arch="Qwen3_5MoeForCausalLM",
    bf16=False,
)
# Gemma 4 text: layers sliding, full, sliding, full (window 5), the last two reading layers 0 and
# 1's keys and values (num_kv_shared_layers) with a double-wide MLP; global layers of head_dim 32
# (16 elsewhere) and one key/value head whose values are its keys (attention_k_eq_v), rotating a
# quarter of their pairs (proportional RoPE); per-layer embeddings of width 8; random layer
# scalars; the final soft cap bends the logits.
CASES["gemma4"] = dict(
    config=dict(
        COMMON,
        model_type="gemma4_text",
        num_hidden_layers=4,
        head_dim=16,
        global_head_dim=32,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        initializer_range=0.2,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"] * 2,
        num_kv_shared_layers=2,
        use_double_wide_mlp=True,
        hidden_size_per_layer_input=8,
        vocab_size_per_layer_input=VOCAB,
        final_logit_softcapping=5.0,
        rope_parameters={
            "sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
            "full_attention": {
                "rope_type": "proportional",
                "partial_rotary_factor": 0.25,
                "rope_theta": 10_000.0,
            },
        },
    ),
    make=dict(random_buffers=["layer_scalar"]),
)
# Gemma 4's MoE block (26B-A4B's form): every layer keeps its MLP and adds softmax top-2 of 4
# experts beside it, renormalised, times random per-expert scales, the router reading the
# residual with its own random scale; global heads of their own width, values = keys, no PLE. It
# routes, so it runs in float32 only (the module doc).
CASES["gemma4_moe"] = dict(
    config=dict(
        COMMON,
        model_type="gemma4_text",
        num_hidden_layers=2,
        head_dim=16,
        global_head_dim=32,
        num_global_key_value_heads=1,
        attention_k_eq_v=True,
        initializer_range=0.2,
        sliding_window=WINDOW,
        layer_types=["sliding_attention", "full_attention"],
        hidden_size_per_layer_input=0,
        enable_moe_block=True,
        num_experts=4,
        top_k_experts=2,
        moe_intermediate_size=16,
        final_logit_softcapping=30.0,
    ),
    make=dict(random_buffers=["layer_scalar"], random_scales=["router.scale", "per_expert_scale"]),
    bf16=False,
)
# The published Gemma 4 folders are the image-text model's (Gemma4ForConditionalGeneration, tiny
# vision and audio towers here): tjx loads its text model and exports it as gemma4_text.
CASES["gemma4_image_text"] = dict(
    config=dict(
        model_type="gemma4",
        # pad_token_id: the image-text model writes it over multimodal tokens (text has none).
        text_config={k: v for k, v in CASES["gemma4"]["config"].items() if k != "model_type"}
        | {"pad_token_id": 0},
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=8,
        ),
        audio_config=dict(
            hidden_size=16, num_hidden_layers=1, num_attention_heads=2, output_proj_dims=16
        ),
    ),
    make=dict(auto="AutoModelForImageTextToText", random_buffers=["layer_scalar"]),
    export_arch="Gemma4ForCausalLM",
)
# The published Qwen3.5 folders are the image-text model's (Qwen3_5ForConditionalGeneration): its
# language model under model.language_model., a (tiny here) vision tower beside; tjx loads the
# text model (the logits of text tokens are the same) and exports it as qwen3_5_text.
CASES["qwen3_5_image_text"] = dict(
    config=dict(
        model_type="qwen3_5",
        text_config={k: v for k, v in CASES["qwen3_5"]["config"].items() if k != "model_type"},
        vision_config=dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2,
                           out_hidden_size=32, num_position_embeddings=16),  # fmt: skip
    ),
    make=dict(auto="AutoModelForImageTextToText"),
    export_arch="Qwen3_5ForCausalLM",
    bf16=False,
)
# Llama 4 (text): layers 0-2 RoPE and chunked (chunks of 5: the 12 tokens cross two boundaries),
# layer 3 NoPE with full attention and the temperature (floor 3: it grows from position 2); the
# weightless q/k norm on the RoPE layers; llama3 RoPE scaling; MoE layers 1 and 3 (sigmoid top-1 of
# 4 scaling the experts' inputs, a shared expert), dense layers 0 and 2 of their own width. It
# routes, so it runs in float32 only (the module doc).
CASES["llama4"] = dict(
    config=dict(
        COMMON,
        model_type="llama4_text",
        num_hidden_layers=4,
        head_dim=16,
        initializer_range=0.2,
        intermediate_size=16,
        intermediate_size_mlp=48,
        num_local_experts=4,
        interleave_moe_layer_step=2,
        attention_chunk_size=WINDOW,
        floor_scale=3,
        attn_scale=0.5,
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=16,
        ),
    ),
    bf16=False,
)
# MiniMax-M2: every layer MoE (sigmoid top-2 of 4 with a random correction bias, renormalised),
# q/k norms over the whole projection, RoPE on a quarter of each head given as the released
# folders' legacy rotary_dim (4 of 16) with a top-level rope_theta. It routes, so it runs in float32
# only (the module doc); its bfloat16 comparison is minimax_m2_all's.
CASES["minimax_m2"] = dict(
    config=dict(
        COMMON,
        model_type="minimax_m2",
        head_dim=16,
        initializer_range=0.2,
        intermediate_size=16,
        num_local_experts=4,
        num_experts_per_tok=2,
        rotary_dim=4,
        rope_theta=100.0,
    ),
    make=dict(random_buffers=["e_score_correction_bias"]),
    bf16=False,
)
CASES["minimax_m2_all"] = dict(
    CASES["minimax_m2"],
    config=dict(CASES["minimax_m2"]["config"], num_experts_per_tok=4),
    bf16=True,
)
CASES["gpt_oss_all"] = dict(
    CASES["gpt_oss"], config=dict(CASES["gpt_oss"]["config"], num_experts_per_tok=4), bf16=True
)
CASES["glm4_moe_all"] = dict(
    CASES["glm4_moe"],
    config=dict(CASES["glm4_moe"]["config"], num_experts_per_tok=8, topk_group=4),
    bf16=True,
)
CASES["deepseek_v2"]["bf16"] = False
# Full V2's routing: 4 groups of 2 experts, each token keeps its 2 best (by best probability).
CASES["deepseek_v2_grouped"] = dict(
    config=dict(CASES["deepseek_v2"]["config"], topk_method="group_limited_greedy", n_group=4,
                topk_group=2),
    bf16=False,
)  # fmt: skip
for _name in ("deepseek_v2", "deepseek_v3"):  # every expert chosen: bfloat16 flips no choice
    _all = dict(CASES[_name]["config"], num_experts_per_tok=8)
    if _name == "deepseek_v3":
        _all["topk_group"] = 4
    CASES[f"{_name}_all"] = dict(CASES[_name], config=_all, bf16=True)
# DeepSeek-V3.2: V3's case with DeepSeek Sparse Attention, whose indexer (8 heads of 8 dims, the
# first 4 rotated) keeps 4 keys per query of the 12 (24 while generating): the top-k drops keys.
# Its bfloat16 sibling keeps 16 (every key of the 12 scored) besides routing to every expert: a
# bfloat16 rounding flips a near-tied key's choice as it does an expert's.
CASES["deepseek_v32"] = dict(
    config=dict(CASES["deepseek_v3"]["config"], model_type="deepseek_v32", index_topk=4,
                index_n_heads=8, index_head_dim=8),
    make=CASES["deepseek_v3"]["make"],
    bf16=False,
)  # fmt: skip
CASES["deepseek_v32_all"] = dict(
    CASES["deepseek_v32"],
    config=dict(CASES["deepseek_v32"]["config"], num_experts_per_tok=8, topk_group=4,
                index_topk=16),
    bf16=True,
)  # fmt: skip

# Kimi-K2.5's published folders are the image-text model's (Kimi_K25ForConditionalGeneration):
# its text_config a DeepSeek-V3 (deepseek_v3's case, as "kimi_k2", which transformers normalises),
# tied by the image-text config's tie_word_embeddings (its default, true: the text_config's false
# loses), its own rms_norm_eps beside the latent norms' 1e-6, the language model saved as
# language_model.model.blocks.N.* (transformers 5.24 renames every "layers" on save), a tiny
# vision tower and projector beside, one multi-token-prediction layer counted and none stored.
# tjx loads the text model and exports it as deepseek_v3. It routes: float32 here, bfloat16 in
# its *_all sibling (every expert chosen).
_KIMI_TEXT = {k: v for k, v in CASES["deepseek_v3"]["config"].items() if k != "model_type"}
CASES["kimi_k25"] = dict(
    config=dict(
        model_type="kimi_k25",
        # Its norms at 0.05 and the latent norms at transformers' fixed 1e-6 (Kimi-K2.5: 1e-5):
        # large, so that one epsilon for both would show in the logits.
        text_config=dict(
            _KIMI_TEXT, model_type="kimi_k2", tie_word_embeddings=False, rms_norm_eps=0.05
        ),
        vision_config=dict(
            hidden_size=16,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            pos_emb_height=4,
            pos_emb_width=4,
        ),
        projection_hidden_size=16,
    ),
    make=dict(auto="AutoModelForImageTextToText", random_buffers=["e_score_correction_bias"]),
    export_arch="DeepseekV3ForCausalLM",
    bf16=False,
)
CASES["kimi_k25_all"] = dict(
    CASES["kimi_k25"],
    config=dict(
        CASES["kimi_k25"]["config"],
        text_config=dict(
            CASES["kimi_k25"]["config"]["text_config"], num_experts_per_tok=8, topk_group=4
        ),
    ),
    bf16=True,
)
#: The cases compared in bfloat16 (routing that cannot flip).
BF16_CASES = [name for name, case in CASES.items() if case.get("bf16", True)]


def _tensor_names(folder: Path) -> set[str]:
    from safetensors import safe_open

    with safe_open(str(folder / "model.safetensors"), framework="np") as handle:
        return set(handle.keys())


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("hf-families")
    tokens = np.asarray(TOKENS, np.int32)
    np.save(root / "tokens.npy", tokens.astype(np.int64))
    makes = [
        {
            "make": {
                "config": case["config"],
                "tokens": TOKENS,
                "new": NEW,
                "bf16": name in BF16_CASES,  # the others' bfloat16 scores would go unread
                "short": case.get("short"),
                **case.get("make", {}),
            },
            "out": str(root / name),
        }
        for name, case in CASES.items()
    ]
    run_peer(makes, root)
    out: dict[str, dict[str, Any]] = {}
    scores = []
    bf16 = nn.Precision(jnp.bfloat16, jnp.bfloat16)
    for name, case in CASES.items():
        model, config = nn.load_hf(root / name)
        greedy = nn.generate(model, jnp.asarray(tokens[:1, :4]), max_new_tokens=NEW, temperature=0)
        files = nn.save_hf(model, root / f"{name}-tjx", model_type=case.get("model_type"))
        out[name] = {
            "peer": dict(np.load(root / name / "peer.npz")),
            "tjx": np.asarray(model(jnp.asarray(tokens))),
            "greedy": np.asarray(greedy),
            "config": config,
            "files": files,
            "tensors": _tensor_names(root / f"{name}-tjx"),
            "saved": json.loads((root / f"{name}-tjx" / "config.json").read_text()),
            "folder": root / name,
        }
        if name in BF16_CASES:
            model16, _ = nn.load_hf(root / name, precision=bf16)
            out[name] |= {
                "peer16": dict(np.load(root / name / "peer_bf16.npz")),
                "tjx16": np.asarray(model16(jnp.asarray(tokens))),
            }
        if case.get("short"):
            short = jnp.asarray(tokens[:, : case["short"]])
            plain, _ = nn.load_hf(root / name, **{"position.rope_scaling": None})
            out[name] |= {
                "tjx_short": np.asarray(model(short)),
                "plain": np.asarray(plain(jnp.asarray(tokens))),
                "plain_short": np.asarray(plain(short)),
            }
        scores.append(
            {
                "score": str(root / f"{name}-tjx"),
                "tokens": str(root / "tokens.npy"),
                "out": str(root / f"{name}-back.npz"),
                "new": NEW,
                "short": case.get("short"),
            }
        )
    run_peer(scores, root)
    for name in CASES:
        out[name]["back"] = dict(np.load(root / f"{name}-back.npz"))
    return out


@pytest.mark.parametrize("family", list(CASES))
def test_family_loads_with_the_same_logits_and_greedy_tokens(results, family):
    r = results[family]
    assert _rel(r["tjx"], r["peer"]["logits"]) < 1e-4
    np.testing.assert_array_equal(r["greedy"], r["peer"]["greedy"])
    if "tjx_short" in r:
        assert _rel(r["tjx_short"], r["peer"]["logits_short"]) < 1e-4


@pytest.mark.parametrize("family", BF16_CASES)
def test_family_in_bfloat16_stays_within_bfloat16_rounding(results, family):
    r = results[family]
    fp32, peer16, tjx16 = r["peer"]["logits"], r["peer16"]["logits"], r["tjx16"]
    e = _rel(peer16, fp32)
    assert e > 1e-3  # transformers really ran in bfloat16
    assert _rel(tjx16, peer16) < BF16_FACTOR * e
    assert _rel(tjx16, fp32) < BF16_FACTOR * e


@pytest.mark.parametrize("family", list(CASES))
def test_saved_family_loads_in_transformers_as_the_same_model(results, family):
    r = results[family]
    assert str(r["back"]["arch"]) == CASES[family].get("export_arch", str(r["peer"]["arch"]))
    assert _rel(r["back"]["logits"], r["peer"]["logits"]) < 1e-6
    np.testing.assert_array_equal(r["back"]["greedy"], r["peer"]["greedy"])
    if "tjx_short" in r:
        assert _rel(r["back"]["logits_short"], r["peer"]["logits_short"]) < 1e-6


def test_phi3_longrope_factors_change_both_calls(results):
    """Phi-3's LongRoPE read as such: the short and long calls each need their own factors (the
    unscaled model is far off in both), and the export keeps Phi-3's published form."""
    r = results["phi3-longrope"]
    scaling = r["config"].position.rope_scaling
    assert (scaling.type, scaling.factor, scaling.original_max_position_embeddings) == (
        "longrope",
        8.0,
        8,
    )
    assert _rel(r["plain"], r["peer"]["logits"]) > 1e-2
    assert _rel(r["plain_short"], r["peer"]["logits_short"]) > 1e-2
    assert r["greedy"].shape[1] == 4 + NEW > scaling.original_max_position_embeddings
    saved = r["saved"]
    assert saved["original_max_position_embeddings"] == 8
    assert saved["rope_scaling"]["type"] == "longrope" and "factor" not in saved["rope_scaling"]


def test_the_cases_exercise_each_switch(results):
    """The configs carry what each case is for, and Gemma's caps bent the logits."""
    cfg = {name: r["config"] for name, r in results.items()}
    assert cfg["qwen3"].attention.qk_norm and cfg["qwen3"].head_dim == 16 != 32 // 4
    assert (
        cfg["olmo2"].norm.position == "output"
        and cfg["olmo2"].attention.qk_norm_scope == "projection"
    )
    assert cfg["phi3"].num_kv_heads == 2 and not cfg["phi3"].attention.qk_norm
    g2, g3 = cfg["gemma2"], cfg["gemma3_text"]
    assert (
        g2.attention.logit_softcap,
        g2.final_logit_softcap,
        g2.attention.query_pre_attn_scalar,
    ) == (
        2.0,
        3.0,
        12.0,
    )
    assert g2.norm.plus_one and g2.scale_embeddings and g2.mlp.activation == "geglu"
    assert g3.attention.qk_norm and g3.final_logit_softcap is None and not g3.tie_embeddings
    # Each family's windows as transformers places them (the logits above prove they slide).
    local, full = WINDOW, None
    assert cfg["qwen3"].layer_windows() == (full, local)
    assert cfg["phi3"].layer_windows() == (local, local)
    assert g2.layer_windows() == g3.layer_windows() == (local, full)
    assert (g3.position.rope_theta, g3.position.rope_local_theta) == (10000.0, 100.0)
    assert cfg["olmo2"].attention.sliding_window is None
    assert cfg["olmo3"].layer_windows() == (local, local, local, full)
    assert cfg["olmo3"].position.rope_theta == 500.0 and cfg["olmo3"].norm.position == "output"
    assert results["olmo3"]["saved"]["layer_types"][3] == "full_attention"
    logits = results["gemma2"]["peer"]["logits"]
    assert 0.5 * 3.0 < np.abs(logits).max() < 3.0  # within the cap, and near it
    # tjx wrote Phi-3's fused tensors (and transformers read them back, above).
    phi3 = results["phi3"]["tensors"]
    assert "model.layers.0.self_attn.qkv_proj.weight" in phi3 and not any(
        "q_proj" in n for n in phi3
    )
    assert "model.layers.1.mlp.gate_up_proj.weight" in phi3
    gemma = results["gemma2"]["tensors"]
    assert {f"model.layers.0.{n}_feedforward_layernorm.weight" for n in ("pre", "post")} <= gemma


def test_the_deepseek_cases_exercise_each_piece(results):
    """DeepSeek's MLA and routing as the configs read them, and the tensors tjx wrote."""
    v2, v3 = results["deepseek_v2"]["config"], results["deepseek_v3"]["config"]
    for c in (v2, v3):
        assert (c.attention.type, c.mla.kv_latent_dim, c.head_dim) == ("mla", 16, 12)
        assert (c.mla.qk_rope_head_dim, c.mla.v_head_dim, c.moe.first_dense) == (4, 6, 1)
    assert v2.mla.q_lora_rank is None and v3.mla.q_lora_rank == 12
    assert (
        v2.moe.router,
        v2.moe.router_norm_topk,
        v2.moe.router_scale,
        v2.moe.num_shared_experts,
    ) == (
        "softmax",
        False,
        1.5,
        2,
    )
    assert (
        v3.moe.router,
        v3.moe.router_groups,
        v3.moe.router_topk_groups,
        v3.moe.router_scale,
    ) == (
        "sigmoid",
        4,
        2,
        2.5,
    )
    assert v3.position.rope_scaling is not None and v3.position.rope_scaling.mscale_all_dim == 1.0
    names = results["deepseek_v3"]["tensors"]
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in names
    assert "model.layers.0.self_attn.q_a_layernorm.weight" in names
    assert "model.layers.0.self_attn.q_proj.weight" in results["deepseek_v2"]["tensors"]
    grouped = results["deepseek_v2_grouped"]["config"]
    assert (grouped.moe.router, grouped.moe.router_groups, grouped.moe.router_topk_groups) == (
        "softmax",
        4,
        2,
    )


def test_the_gpt_oss_and_glm_cases_exercise_each_piece(results):
    """gpt-oss's and GLM-4.5's switches as the configs read them, and the tensors tjx wrote."""
    oss, glm = results["gpt_oss"]["config"], results["glm4_moe"]["config"]
    assert oss.attention.sinks and oss.use_bias and oss.moe.router_logit_bias
    assert (oss.mlp.activation, oss.moe.router, oss.moe.num_experts) == (
        "swiglu_clamped",
        "softmax",
        4,
    )
    assert oss.layer_windows() == (WINDOW, None)
    assert oss.position.rope_scaling is not None and oss.position.rope_scaling.type == "yarn"
    assert oss.position.rope_scaling.truncate is False
    names = results["gpt_oss"]["tensors"]
    assert {"model.layers.0.self_attn.sinks", "model.layers.1.mlp.router.bias"} <= names
    assert "model.layers.0.mlp.experts.gate_up_proj_bias" in names
    assert (
        glm.position.rope_fraction,
        glm.attention.qk_norm,
        glm.attention.qkv_bias,
        glm.use_bias,
    ) == (0.25, True, True, False)
    assert (
        glm.moe.router,
        glm.moe.router_groups,
        glm.moe.router_topk_groups,
        glm.moe.router_scale,
    ) == (
        "sigmoid",
        4,
        2,
        2.5,
    )
    assert (glm.moe.first_dense, glm.moe.num_shared_experts, glm.moe.expert_mlp_dim) == (1, 1, 16)
    assert "model.layers.2.mlp.gate.e_score_correction_bias" in results["glm4_moe"]["tensors"]
    assert results["glm4_moe"]["saved"]["rope_parameters"]["partial_rotary_factor"] == 0.25


def test_the_qwen3_5_case_exercises_each_piece(results):
    """Delta layers and the gated attention both ran (their tensors went out and came back)."""
    r = results["qwen3_5"]
    c = r["config"]
    assert c.layer_mixers() == ("delta", "delta", "delta", "attention")
    assert (
        c.attention.output_gate
        and c.norm.plus_one
        and c.attention.qk_norm
        and c.position.rope_fraction == 0.25
    )
    assert (c.delta.key_heads, c.delta.value_heads, c.delta.key_dim) == (2, 4, 8)
    names = r["tensors"]
    assert "model.layers.0.linear_attn.conv1d.weight" in names
    assert "model.layers.3.self_attn.q_proj.weight" in names
    assert not any(n.startswith("model.layers.0.self_attn.") for n in names)
    assert r["saved"]["layer_types"] == ["linear_attention"] * 3 + ["full_attention"]
    # The image-text folder of the same text model reads as the same tjx model, written as text.
    image_text = results["qwen3_5_image_text"]
    assert image_text["config"] == c and image_text["saved"]["model_type"] == "qwen3_5_text"


def test_the_qwen3_next_case_exercises_each_piece(results):
    """The grouped delta projections, the sparse blocks after a dense layer and the shared
    expert's gate all went out and came back."""
    r = results["qwen3_next"]
    c = r["config"]
    assert c.layer_mixers() == ("delta", "delta", "delta", "attention")
    moe = c.moe
    assert (moe.num_experts, moe.experts_per_token, moe.first_dense, moe.router_norm_topk) == (
        4,
        2,
        1,
        True,
    )
    assert c.moe.shared_expert_gate and c.moe.shared_expert_mlp_dim == 24
    names = r["tensors"]
    assert {"model.layers.0.linear_attn.in_proj_qkvz.weight",
            "model.layers.0.linear_attn.in_proj_ba.weight", "model.layers.0.mlp.gate_proj.weight",
            "model.layers.1.mlp.shared_expert_gate.weight",
            "model.layers.3.mlp.experts.3.down_proj.weight"} <= names  # fmt: skip
    assert r["saved"]["model_type"] == "qwen3_next"


def test_the_qwen3_5_moe_case_exercises_each_piece(results):
    """Qwen3.5's four delta projections and gated attention, the sparse block in every layer
    (renormalised top-2, the gated shared expert of its own width): each went out and came back;
    the image-text folder reads as the same text model."""
    r = results["qwen3_5_moe"]
    c = r["config"]
    assert c.layer_mixers() == ("delta", "delta", "delta", "attention")
    assert c.attention.output_gate and c.norm.plus_one and c.position.rope_fraction == 0.25
    moe = c.moe
    assert (moe.num_experts, moe.experts_per_token, moe.first_dense, moe.layer_step) == (4, 2, 0, 1)
    assert moe.router == "softmax" and moe.router_norm_topk and moe.shared_expert_gate
    assert (moe.expert_mlp_dim, moe.shared_expert_mlp_dim) == (16, 24)
    names = r["tensors"]
    assert {"model.layers.0.linear_attn.in_proj_qkv.weight",
            "model.layers.0.linear_attn.in_proj_z.weight",
            "model.layers.0.mlp.shared_expert_gate.weight", "model.layers.0.mlp.gate.weight",
            "model.layers.3.self_attn.q_proj.weight",
            "model.layers.3.mlp.experts.3.down_proj.weight"} <= names  # fmt: skip
    assert not any(".mlp.gate_proj." in n for n in names)  # no dense layer
    saved = r["saved"]
    assert saved["model_type"] == "qwen3_5_moe_text" and "intermediate_size" not in saved
    image_text = results["qwen3_5_moe_image_text"]
    assert image_text["config"] == c and image_text["saved"]["model_type"] == "qwen3_5_moe_text"
    assert results["qwen3_5_moe_all"]["config"].moe.experts_per_token == 4


def test_the_llama4_case_exercises_each_piece(results):
    """Chunked RoPE layers beside a tempered NoPE one, the weightless q/k norm, llama3 RoPE, the
    fused experts scaled on their input after a dense layer: each went in and came back out.
    Each changes the logits (one-off runs without it, 2026-11-27: no chunks 145 %, RoPE on the
    NoPE layer 28 %, no q/k norm 45 %, no temperature 15 %, output-scaled experts 20 %, no llama3
    scaling 35 % of the largest logit), so the 1e-4 agreement holds each to transformers'."""
    r = results["llama4"]
    c = r["config"]
    assert c.layer_locals() == (True, True, True, False) and c.llama4.global_nope and c.qk_l2_norm
    assert (
        c.attention.chunk,
        c.llama4.nope_temperature_floor,
        c.llama4.nope_temperature_scale,
    ) == (5, 3.0, 0.5)
    assert c.position.rope_scaling is not None and c.position.rope_scaling.type == "llama3"
    assert (c.moe.num_experts, c.moe.experts_per_token, c.moe.layer_step, c.moe.router) == (
        4,
        1,
        2,
        "sigmoid_plain",
    )
    assert c.moe.router_scales_input and not c.moe.router_norm_topk
    assert (c.mlp.dim, c.moe.expert_mlp_dim, c.moe.shared_expert_mlp_dim) == (48, 16, 16)
    names = r["tensors"]
    assert {"model.layers.0.feed_forward.gate_proj.weight",
            "model.layers.1.feed_forward.experts.gate_up_proj",
            "model.layers.1.feed_forward.experts.down_proj",
            "model.layers.3.feed_forward.router.weight",
            "model.layers.3.feed_forward.shared_expert.up_proj.weight"} <= names  # fmt: skip
    saved = r["saved"]
    assert (saved["model_type"], saved["no_rope_layers"], saved["moe_layers"]) == (
        "llama4_text",
        [1, 1, 1, 0],
        [1, 3],
    )


def test_the_gemma4_case_exercises_each_piece(results):
    """Every Gemma 4 piece tjx computes was on: the shared layers, the global layers' own width,
    key/value head and values from keys, proportional RoPE, the per-layer embeddings and layer
    scalars (their tensors went out and came back in transformers' layout)."""
    r = results["gemma4"]
    c = r["config"]
    assert c.layer_windows() == (WINDOW, None, WINDOW, None)
    g = c.gemma4
    assert (g.global_head_dim, g.global_kv_heads, g.global_values_from_keys) == (32, 1, True)
    assert (g.kv_shared_layers, g.kv_shared_mlp_dim, g.per_layer_input_dim) == (2, 96, 8)
    assert (g.global_rope_proportion, c.position.rope_local_theta, c.final_logit_softcap) == (
        0.25,
        100,
        5,
    )
    assert g.value_norm and g.layer_scale and g.per_layer_vocab_size is None
    names = r["tensors"]
    assert {"model.embed_tokens_per_layer.weight", "model.per_layer_model_projection.weight",
            "model.layers.3.per_layer_input_gate.weight", "model.layers.0.layer_scalar",
            "model.layers.1.self_attn.k_proj.weight"} <= names  # fmt: skip
    assert "model.layers.1.self_attn.v_proj.weight" not in names  # values are the keys
    assert not any(n.startswith("model.layers.2.self_attn.k_") for n in names)  # reads layer 0
    assert r["saved"]["model_type"] == "gemma4_text" and r["saved"]["use_double_wide_mlp"]
    # The image-text folder of the same text model reads as the same tjx model, written as text.
    image_text = results["gemma4_image_text"]
    assert image_text["config"] == c and image_text["saved"]["model_type"] == "gemma4_text"
    # The MoE block beside each MLP: its router, fused experts and extra norms went out and back.
    moe = results["gemma4_moe"]
    m = moe["config"]
    assert (
        m.moe.num_experts,
        m.moe.experts_per_token,
        m.moe.expert_mlp_dim,
        m.moe.router_aux_loss,
    ) == (
        4,
        2,
        16,
        0,
    )
    assert m.moe.beside_mlp and m.moe.router_input_norm and m.moe.router_expert_scale
    assert {"model.layers.1.experts.gate_up_proj", "model.layers.1.router.per_expert_scale",
            "model.layers.1.pre_feedforward_layernorm_2.weight",
            "model.layers.1.mlp.gate_proj.weight"} <= moe["tensors"]  # fmt: skip
    assert moe["saved"]["enable_moe_block"] and moe["saved"]["top_k_experts"] == 2


def test_the_deepseek_v32_case_exercises_each_piece(results):
    """DeepSeek Sparse Attention's indexer as the config reads it, its tensors written back, and
    its top-k dropping keys: the same weights with every key kept are far off transformers'."""
    r = results["deepseek_v32"]
    c = r["config"]
    assert (c.mla.index_topk, c.mla.index_n_heads, c.mla.index_head_dim) == (4, 8, 8)
    assert (c.mla.q_lora_rank, c.mla.qk_rope_head_dim, c.moe.router) == (12, 4, "sigmoid")
    p = "model.layers.2.self_attn.indexer."
    names = {p + n for n in ("wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias",
                              "weights_proj.weight")}  # fmt: skip
    assert names <= r["tensors"]
    assert r["saved"]["model_type"] == "deepseek_v32" and "rope_interleave" not in r["saved"]
    assert results["deepseek_v32_all"]["config"].mla.index_topk == 16
    dense, _ = nn.load_hf(r["folder"], **{"mla.index_topk": 64})
    assert _rel(np.asarray(dense(jnp.asarray(TOKENS))), r["peer"]["logits"]) > 1e-2


def test_the_kimi_k25_case_exercises_each_piece(results):
    """Kimi-K2.5's folder is DeepSeek-V3's text model under the image-text model's names: the
    same tjx config as the deepseek_v3 case but tied (the image-text config's default) and with
    two norm epsilons (rms_norm_eps, the latent norms' 1e-6), read
    from language_model.model.blocks.N.* beside a vision tower, written back as deepseek_v3."""
    r = results["kimi_k25"]
    c = r["config"]
    v3 = results["deepseek_v3"]["config"]
    assert c == v3.replace(tie_embeddings=True, **{"norm.eps": 0.05, "mla.latent_norm_eps": 1e-6})
    assert c.mtp.depths == 0 and c.moe.router == "sigmoid" and c.mla.q_lora_rank == 12
    stored = _tensor_names(r["folder"])
    assert {"language_model.model.blocks.2.mlp.gate.e_score_correction_bias",
            "vision_tower.encoder.blocks.0.wqkv.weight",
            "mm_projector.proj.0.weight"} <= stored  # fmt: skip
    assert not any("lm_head" in n for n in stored | r["tensors"])  # tied both ways
    saved = r["saved"]
    written = ("model_type", "tie_word_embeddings", "num_nextn_predict_layers", "rms_norm_eps")
    assert [saved[k] for k in written] == ["deepseek_v3", True, 0, 0.05]
    assert "model.layers.2.mlp.gate.e_score_correction_bias" in r["tensors"]


def test_the_minimax_m2_case_exercises_each_piece(results):
    """MiniMax-M2's pieces as the config reads them (the legacy rotary_dim and rope_theta among
    them), and the tensors tjx wrote in the released folders' (Mixtral's) layout."""
    r = results["minimax_m2"]
    c = r["config"]
    assert c.attention.qk_norm and c.attention.qk_norm_scope == "projection"
    assert (c.position.rope_fraction, c.position.rope_theta, c.head_dim) == (0.25, 100.0, 16)
    m = c.moe
    assert (m.num_experts, m.experts_per_token, m.expert_mlp_dim, m.first_dense) == (4, 2, 16, 0)
    assert (m.router, m.router_norm_topk, m.router_scale, m.num_shared_experts) == (
        "sigmoid",
        True,
        1.0,
        0,
    )
    assert {"model.layers.1.block_sparse_moe.e_score_correction_bias",
            "model.layers.1.block_sparse_moe.gate.weight",
            "model.layers.0.block_sparse_moe.experts.3.w3.weight",
            "model.layers.0.self_attn.q_norm.weight"} <= r["tensors"]  # fmt: skip
    saved = r["saved"]
    assert (saved["model_type"], saved["rotary_dim"]) == ("minimax_m2", 4)
    assert saved["rope_parameters"]["partial_rotary_factor"] == 0.25


#: #56's families, each fine-tuned in the trainer from the folder transformers made (Qwen3.5's
#: fine-tune, export and reload: test_hf_finetune.py).
FINE_TUNED = ["gemma4", "gpt_oss", "glm4_moe", "llama4", "olmo3", "qwen3_next", "deepseek_v32"]
FINE_TUNED += ["kimi_k25"]
FINE_TUNED += ["qwen3_5_moe"]
FINE_TUNED += ["minimax_m2"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small text and a BPE of at most ``VOCAB`` ids trained on it (the cases' vocabulary)."""
    root = tmp_path_factory.mktemp("corpus")
    text = root / "corpus.txt"
    text.write_text("".join(f"to be, or not to be: line {i}.\n" for i in range(300)))
    bpe = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=VOCAB, special_tokens=["<|endoftext|>", "<unk>"]
    )
    bpe.train([str(text)], trainer)
    assert bpe.get_vocab_size() <= VOCAB
    bpe.save(str(root / "tokenizer.json"))
    return text, root / "tokenizer.json"


#: A family's own settings in its fine-tune: DeepSeek-V3.2 trains its indexer by its KL loss
#: (``mla.index_loss_weight``, over the selected keys), logged every step for four steps.
FINE_TUNE_SETS = {
    "deepseek_v32": ["model.mla.index_loss_weight=1.0", "train.log_every=1", "train.steps=4",
                     "train.checkpoint_every=4"],
}  # fmt: skip


@pytest.mark.parametrize("family", FINE_TUNED)
def test_each_new_family_fine_tunes_in_the_trainer(results, corpus, family, tmp_path, capsys):
    """``--init-from`` transformers' folder: two steps (DeepSeek-V3.2: four, its indexer's loss
    falling), a finite loss, the checkpoint's own architecture trained, and the last step's
    samples (the family's generation cache)."""
    text, tokenizer = corpus
    sets = [
        "model.kind=llama", "data.seq_len=16", "data.batch_size=8", "eval.batch_size=8",
        "train.steps=2", "train.eval_every=0", "train.sample_every=0",
        "train.checkpoint_every=2", "optimizer.schedule.warmup_steps=0",
        "sampling.max_new_tokens=4", "logging.sinks=[jsonl]", "logging.progress=false",
        f"data.tokenizer={tokenizer}", f"data.cache_dir={tmp_path / 'cache'}",
        *FINE_TUNE_SETS.get(family, []),
    ]  # fmt: skip
    steps = 4 if family in FINE_TUNE_SETS else 2
    run = tmp_path / "run"
    argv = ["--config", "tiny", "--run-dir", str(run), "--data", str(text)]
    argv += ["--init-from", str(results[family]["folder"])]
    assert trainer_main([*argv, *(x for s in sets for x in ("--set", s))]) == 0, capsys.readouterr()
    final = json.loads((run / "final.json").read_text())
    assert final["step"] == steps and np.isfinite(final["val_loss"])
    trained = nn.config_from_dict(json.loads((run / "model.json").read_text()))
    assert nn.config_clashes(trained, results[family]["config"], vocab=True) == {}
    assert (run / "samples" / f"step_{steps:07d}.txt").read_text().strip()
    if family == "deepseek_v32":  # the indexer learns the main attention: its KL falls
        assert trained.mla.index_loss_weight == 1.0
        lines = (run / "metrics.jsonl").read_text().splitlines()
        index = {r["step"]: r["index_loss"] for r in map(json.loads, lines) if "index_loss" in r}
        assert sorted(index) == [1, 2, 3, 4] and all(np.isfinite(list(index.values())))
        assert index[4] < index[1] and index[1] > 0, index
    if family in EXPORTED_AS:
        _check_export_types(run, family, tmp_path, capsys)


#: The fine-tunes ``eval --export-hf`` writes back without ``--export-model-type``, and as what:
#: Qwen3.5-MoE's switches are Qwen3-Next's, so the family it was read from (the run's init.json)
#: decides; Qwen3-Next's stays Qwen3-Next's.
EXPORTED_AS = {"qwen3_5_moe": "qwen3_5_moe_text", "qwen3_next": "qwen3_next"}


def _check_export_types(run: Path, family: str, tmp_path: Path, capsys: Any) -> None:
    """The run exports as the family it was read from; as Qwen3-Next when asked, or when its
    init.json is an older trainer's (no ``model_type``: save_hf's default, as before)."""

    def exported(name: str, *asked: str) -> str:
        out = tmp_path / name
        argv = ["--checkpoint", str(run), "--export-hf", str(out), *asked]
        assert eval_main(argv) == 0, capsys.readouterr()
        return str(json.loads((out / "config.json").read_text())["model_type"])

    init = json.loads((run / "init.json").read_text())
    assert init["model_type"] == CASES[family]["config"]["model_type"]
    assert exported("default") == EXPORTED_AS[family]
    if family != "qwen3_5_moe":
        return
    assert exported("asked", "--export-model-type", "qwen3_next") == "qwen3_next"
    del init["model_type"]  # as an older trainer wrote it
    (run / "init.json").write_text(json.dumps(init))
    assert exported("older") == "qwen3_next"
