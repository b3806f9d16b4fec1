"""Every family's export refuses, in one line naming it, a switch its config.json has no key for:
another family's (Llama 4's weightless q/k norm, NoPE layers and chunks, Qwen3.5's output gate,
Gemma 4's options, gpt-oss's router bias ...), LLaMA's own on the MoE types, an MoE option no
family computes (a capacity limit). Before, each was dropped without a word: the checkpoint
loaded, in transformers and in tjx, as another model. Only the config is checked here (the
model is never built: ``save_hf`` refuses before it reads a weight)."""

import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests.hf import test_family_checkpoints as families
from tjx_nn_tests.hf.test_gemma4 import GEMMA4
from tjx_nn_tests.hf.test_gpt_oss_glm import GLM, GPT_OSS, SIZES
from tjx_nn_tests.hf.test_llama4 import LLAMA4
from tjx_nn_tests.hf.test_minimax_m2 import MINIMAX
from tjx_nn_tests.hf.test_moe import MIXTRAL, QWEN2, QWEN3
from tjx_nn_tests.hf.test_moe import SIZES as MOE_SIZES
from tjx_nn_tests.hf.test_qwen3_5 import QWEN3_5
from tjx_nn_tests.hf.test_qwen3_5_moe import QWEN3_5_MOE
from tjx_nn_tests.hf.test_qwen3_next import QWEN3_NEXT

LLAMA = families.BASE
#: DeepSeek-V3's MLA and sigmoid-routed MoE (a dense layer, then experts with a shared one).
DEEPSEEK = dict(
    vocab_size=24, max_seq_len=16, d_model=16, num_layers=2, num_heads=2, num_kv_heads=2,
    head_dim=12, mlp=tnn.MLPConfig(dim=8), **{"attention.type": "mla"},
    mla=tnn.MLAConfig(kv_latent_dim=8, qk_rope_head_dim=4, v_head_dim=6),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=4, num_shared_experts=1,
                      first_dense=1, router="sigmoid"),
)  # fmt: skip
#: DeepSeek-V3.2's: DEEPSEEK with the lightning indexer.
SPARSE = DEEPSEEK | dict(
    mla=tnn.MLAConfig(
        kv_latent_dim=8, q_lora_rank=6, qk_rope_head_dim=4, v_head_dim=6, index_topk=3,
        index_n_heads=2, index_head_dim=4,
    )
)  # fmt: skip
GPT2 = dict(vocab_size=24, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)


@pytest.mark.parametrize(
    ("base", "change", "model_type", "named"),
    [
        (LLAMA, {"qk_l2_norm": True}, "llama", "qk_l2_norm=True (needs False)"),
        (LLAMA, {"llama4.global_nope": True}, "qwen2", "llama4.global_nope=True (needs False)"),
        (
            LLAMA,
            {"llama4.global_nope": True},
            None,  # Llama 4's switch: saved as llama4_text, which reads NoPE beside chunks only
            "attention.chunk=None (needs 'a chunk size beside NoPE layers')",
        ),
        (LLAMA | families.CONFIGS["olmo2"], {"attention.chunk": 4}, "olmo2", "attention.chunk=4"),
        (LLAMA | families.CONFIGS["qwen3"], {"qk_l2_norm": True}, "qwen3", "qk_l2_norm=True"),
        (MOE_SIZES | MIXTRAL, {"norm.plus_one": True}, None, "norm.plus_one=True (needs False)"),
        (MOE_SIZES | MIXTRAL, {"scale_embeddings": True}, None, "scale_embeddings=True"),
        (MOE_SIZES | QWEN2, {"attention.logit_softcap": 30.0}, None, "logit_softcap=30.0"),
        (MOE_SIZES | QWEN2, {"final_logit_softcap": 30.0}, None, "final_logit_softcap=30.0"),
        (
            MOE_SIZES | QWEN3,
            {"attention.qk_norm_scope": "projection"},
            "qwen3_moe",
            "attention.qk_norm_scope='projection' (needs 'head')",
        ),
        (MOE_SIZES | MIXTRAL, {"moe.router_scale": 2.0}, None, "moe.router_scale=2.0"),
        (MOE_SIZES | MIXTRAL, {"moe.router_groups": 2}, None, "moe.router_groups=2"),
        (MOE_SIZES | MIXTRAL, {"moe.capacity_factor": 1.5}, None, "moe.capacity_factor=1.5"),
        (
            MOE_SIZES | QWEN3,
            {"moe.router_scales_input": True},
            "qwen3_moe",
            "moe.router_scales_input=True (needs False)",
        ),
        (SIZES | GPT_OSS, {"attention.output_gate": True}, None, "output_gate=True"),
        (SIZES | GPT_OSS, {"qk_l2_norm": True}, None, "qk_l2_norm=True"),
        (SIZES | GPT_OSS, {"gemma4.value_norm": True}, None, "gemma4.value_norm=True"),
        (SIZES | GPT_OSS, {"moe.capacity_factor": 1.5}, None, "moe.capacity_factor=1.5"),
        (SIZES | GLM, {"moe.capacity_factor": 1.5}, None, "moe.capacity_factor=1.5"),
        (SIZES | GLM, {"moe.router_scales_input": True}, "glm4_moe", "router_scales_input=True"),
        (SIZES | GLM, {"moe.num_shared_experts": 0}, None, "num_shared_experts=0 (needs '> 0')"),
        (DEEPSEEK, {"attention.chunk": 4}, "deepseek_v3", "attention.chunk=4 (needs None)"),
        (DEEPSEEK, {"moe.router_logit_bias": True}, None, "moe.router_logit_bias=True"),
        (SPARSE, {"attention.output_gate": True}, None, "attention.output_gate=True"),
        (SPARSE, {"mla.latent_norm_eps": 1e-3}, None, "mla.latent_norm_eps=0.001 (needs 1e-06)"),
        (LLAMA4, {"gemma4.layer_scale": True}, None, "gemma4.layer_scale=True (needs False)"),
        (LLAMA4, {"moe.beside_mlp": True}, None, "moe.beside_mlp=True (needs False)"),
        (LLAMA4, {"moe.router_expert_scale": True}, None, "moe.router_expert_scale=True"),
        (GEMMA4, {"attention.output_gate": True}, None, "attention.output_gate=True"),
        (GEMMA4, {"qk_l2_norm": True}, "gemma4_text", "qk_l2_norm=True (needs False)"),
        (QWEN3_5, {"attention.chunk": 4}, "qwen3_5_text", "attention.chunk=4 (needs None)"),
        (QWEN3_5, {"qk_l2_norm": True}, "qwen3_5_text", "qk_l2_norm=True (needs False)"),
        (QWEN3_NEXT, {"llama4.global_nope": True}, "qwen3_next", "llama4.global_nope=True"),
        (QWEN3_NEXT, {"moe.router_scales_input": True}, "qwen3_next", "router_scales_input=True"),
        (QWEN3_5_MOE, {"attention.chunk": 4}, "qwen3_5_moe_text", "attention.chunk=4"),
        (MINIMAX, {"llama4.global_nope": True}, "minimax_m2", "llama4.global_nope=True"),
    ],
)
def test_a_switch_no_written_key_says_is_refused_by_name(tmp_path, base, change, model_type, named):
    config = tnn.make_config(tnn.LlamaConfig, base).replace(**change)
    model = nnx.eval_shape(lambda: tnn.Llama(config, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"^[^\n]*$") as refused:
        tnn.save_hf(model, tmp_path / "out", model_type=model_type)
    assert named in str(refused.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "change",
    [
        {"norm.plus_one": True},
        {"scale_embeddings": True},
        {"final_logit_softcap": 30.0},
        {"attention.qk_norm": True},
        {"attention.qkv_bias": True},
        {"attention.sliding_window": 4},
        {"attention.logit_softcap": 30.0},
        {"attention.output_gate": True},
        {"moe.num_experts": 2},
        {"gemma4.layer_scale": True},
    ],
)
def test_a_gpt2_switch_no_gpt2_key_says_is_refused_by_name(tmp_path, change):
    config = tnn.GPT2Config(**GPT2).replace(**change)
    model = nnx.eval_shape(lambda: tnn.GPT2(config, rngs=nnx.Rngs(0)))
    (name, value), = change.items()  # fmt: skip
    with pytest.raises(ValueError, match=r"^only GPT-2-shaped configs export to HF GPT-2: [^\n]*$"):
        tnn.save_hf(model, tmp_path / "out")
    with pytest.raises(ValueError, match=f"{name}={value!r}"):
        tnn.save_hf(model, tmp_path / "out")
