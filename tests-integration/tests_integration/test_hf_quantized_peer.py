"""Quantized checkpoints as they are published (#70): DeepSeek-V3's, DeepSeek-V3.2's and
MiniMax-M2's block-scaled FP8, gpt-oss's MXFP4 experts and Kimi-K2.5's INT4 (compressed-tensors)
experts load into tjx with transformers' own dequantized model's logits.

transformers (PyTorch in the scratch venv of ``_hf_peer``, one peer process for all) builds a tiny
random DeepSeek-V3 (3 layers: a dense one, then MoE with a shared expert and the grouped sigmoid
router; MLA with a query rank) and gpt-oss (2 layers, sinks, biases, 4 experts), float32, and
quantizes each folder as the releases are (``_hf_peer_quant``): every linear weight of
DeepSeek's decoder layers in FP8 e4m3 with a ``weight_scale_inv`` per 4 × 4 block, by
transformers' own ``Fp8Quantize`` (4 × 4 instead of 128 × 128: every width here is a multiple
of 4); MiniMax-M2 (2 layers, 4 experts, the sigmoid router) as its release: ``fmt:
float8_e4m3fn``, its router ``gate`` left out by ``modules_to_not_convert``; DeepSeek-V3.2 (V3's
case with the lightning indexer) as its release: ``scale_fmt: ue8m0`` (each scale a power of two,
stored float32), the indexer's ``wq_b`` and ``wk`` FP8, its ``weights_proj`` not (transformers'
``_keep_in_fp32_modules``, DeepSeek's own code keeps it bf16); gpt-oss's experts as
``*_blocks``/``*_scales`` (32 e2m1 values per E8M0 scale); a
Kimi-K2-shaped DeepSeek-V3 (Kimi-K2.5's text model) with its routed experts in
compressed-tensors' ``pack-quantized`` INT4, one BF16 scale per 32 inputs as the release, by
compressed-tensors' own compressor (0.20.0, installed in the peer venv at its pin:
`tjx_peers.QUANT_PEERS`). transformers loads each quantized folder with ``dequantize=True`` in
float32 and scores it; tjx loads the same folder with ``tjx.nn.load_hf`` (dequantized as the
tensors stream in, `tjx.nn.hf.quantized`): logits within 1e-4 of transformers' (relative to
their largest) and 20 greedy tokens identical.
Quantizing moved transformers' logits by more than 1e-3 from the unquantized model's, so the
comparison sees the dequantized values.
"""

from __future__ import annotations

import json
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest
import tjx_peers
from safetensors.numpy import load_file

from tests_integration._hf_peer import run_peer
from tjx import nn
from tjx.nn.hf.reading import read_header

VOCAB, NEW = 96, 20
TOKENS = np.random.default_rng(7).integers(0, VOCAB, size=(2, 12)).tolist()
COMMON = dict(
    vocab_size=VOCAB,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
    pad_token_id=None,
    num_attention_heads=4,
)
CASES: dict[str, dict[str, Any]] = {
    "deepseek_v3": dict(
        config=dict(
            COMMON,
            model_type="deepseek_v3",
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=3,
            num_key_value_heads=4,
            initializer_range=0.2,
            q_lora_rank=12,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=4,
            v_head_dim=8,
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
            first_k_dense_replace=1,
            n_shared_experts=1,
            n_group=4,
            topk_group=2,
            norm_topk_prob=True,
            routed_scaling_factor=2.5,
            num_nextn_predict_layers=0,
        ),
        make=dict(random_buffers=["e_score_correction_bias"]),
        quantize=dict(method="fp8", block=[4, 4]),
    ),
    # MiniMax-M2's release (MiniMaxAI/MiniMax-M2, tjx_published_hf): FP8 in 128 x 128 blocks,
    # ``fmt: float8_e4m3fn``, its router ``gate`` (and bias, and head) in modules_to_not_convert;
    # every other linear of the layers (q/k/v/o, each expert's w1/w2/w3) quantized.
    "minimax_m2": dict(
        config=dict(
            COMMON,
            model_type="minimax_m2",
            hidden_size=32,
            num_hidden_layers=2,
            num_key_value_heads=2,
            head_dim=16,
            initializer_range=0.2,
            intermediate_size=16,
            num_local_experts=4,
            num_experts_per_tok=2,
            rotary_dim=4,
            rope_theta=100.0,
        ),
        make=dict(random_buffers=["e_score_correction_bias"]),
        quantize=dict(
            method="fp8",
            block=[4, 4],
            keep=["gate"],
            config=dict(
                fmt="float8_e4m3fn",
                modules_to_not_convert=["gate", "e_score_correction_bias", "lm_head"],
            ),
        ),
    ),
    "gpt_oss": dict(
        config=dict(
            COMMON,
            model_type="gpt_oss",
            hidden_size=64,
            intermediate_size=32,
            num_hidden_layers=2,
            num_key_value_heads=2,
            head_dim=16,
            sliding_window=5,
            num_local_experts=4,
            num_experts_per_tok=2,
            initializer_range=0.5,
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
        quantize=dict(method="mxfp4"),
    ),
    "kimi_k2_int4": dict(
        config=dict(
            COMMON,
            model_type="deepseek_v3",
            hidden_size=64,
            intermediate_size=48,
            num_hidden_layers=2,
            num_key_value_heads=4,
            initializer_range=0.2,
            rms_norm_eps=1e-5,
            q_lora_rank=12,
            kv_lora_rank=16,
            qk_nope_head_dim=8,
            qk_rope_head_dim=4,
            v_head_dim=8,
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            first_k_dense_replace=1,
            n_shared_experts=1,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            routed_scaling_factor=2.827,
            num_nextn_predict_layers=0,
        ),
        make=dict(random_buffers=["e_score_correction_bias"]),
        quantize={"method": "compressed-tensors", "group": 32, "scale_dtype": "float32"},
    ),
}
#: Kimi-K2.5's release stores its scales in BF16: transformers then keeps the dequantized experts
#: in bfloat16 and computes them in it (its grouped matmul casts the float32 activations to the
#: weight's dtype), which a float32 tjx model does not; so the logits are compared on float32
#: scales (above) and the BF16-scaled folder value by value: tjx's dequantized experts, exported,
#: equal transformers' parameters exactly.
CASES["kimi_k2_int4_bf16"] = dict(
    CASES["kimi_k2_int4"],
    quantize={"method": "compressed-tensors", "group": 32, "scale_dtype": "bfloat16"},
)

# DeepSeek-V3.2's release (deepseek-ai/DeepSeek-V3.2, tjx_published_hf): V3.1's FP8 (ue8m0
# scales), and each layer's lightning indexer's wq_b and wk in FP8 too; its weights_proj stays
# unquantized (DeepSeek's inference code keeps it in bf16, transformers' _keep_in_fp32_modules).
CASES["deepseek_v32"] = dict(
    config=dict(
        CASES["deepseek_v3"]["config"],
        model_type="deepseek_v32",
        index_topk=4,
        index_n_heads=8,
        index_head_dim=8,
    ),
    make=CASES["deepseek_v3"]["make"],
    quantize=dict(
        method="fp8", block=[4, 4], scale_fmt="ue8m0", keep=["mlp.gate", "indexer.weights_proj"]
    ),
)
#: The cases whose logits are compared (the BF16-scaled one: its weights).
LOGITS = [name for name in CASES if name != "kimi_k2_int4_bf16"]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("hf-quantized")
    jobs: list[dict[str, Any]] = []
    for name, case in CASES.items():
        plain = root / f"{name}-plain"
        make = {"config": case["config"], "tokens": TOKENS, "new": NEW, **case.get("make", {})}
        jobs.append({"make": make, "out": str(plain)})
        quantize = {"plain": str(plain), "tokens": TOKENS, "new": NEW, **case["quantize"]}
        jobs.append({"quantize": quantize, "out": str(root / name)})
    # One process: make, then quantize and load back, per case.
    run_peer(jobs, root, tjx_peers.QUANT_PEERS)
    tokens = jnp.asarray(np.asarray(TOKENS, np.int32))
    out: dict[str, dict[str, Any]] = {}
    for name in CASES:
        folder = root / name
        hf = json.loads((folder / "config.json").read_text())
        model, config = nn.load_hf(folder)
        if name not in LOGITS:
            nn.save_hf(model, root / f"{name}-tjx")
            out[name] = {
                "export": load_file(str(root / f"{name}-tjx" / "model.safetensors")),
                "experts": dict(np.load(folder / "experts.npz")),
                "expert_dtypes": json.loads((folder / "experts.json").read_text()),
                "quantization": hf["quantization_config"],
                "dtypes": {
                    k: e.dtype for k, e in read_header(folder / "model.safetensors").items()
                },
                "config": config,
            }
            continue
        greedy = nn.generate(model, tokens[:1, :4], max_new_tokens=NEW, temperature=0)
        out[name] = {
            "tjx": np.asarray(model(tokens)),
            "greedy": np.asarray(greedy),
            "peer": dict(np.load(folder / "peer.npz")),
            "plain": dict(np.load(root / f"{name}-plain" / "peer.npz")),
            "dtypes": {k: e.dtype for k, e in read_header(folder / "model.safetensors").items()},
            "quantization": hf["quantization_config"],
            "config": config,
        }
    return out


@pytest.mark.parametrize("family", LOGITS)
def test_quantized_folder_loads_with_transformers_dequantized_logits(results, family):
    r = results[family]
    assert _rel(r["tjx"], r["peer"]["logits"]) < 1e-4
    np.testing.assert_array_equal(r["greedy"], r["peer"]["greedy"])
    # The folder is quantized as published, and that moved the logits: the comparison sees it.
    assert _rel(r["peer"]["logits"], r["plain"]["logits"]) > 1e-3


def test_the_folders_are_quantized_as_the_releases_are(results):
    ds = results["deepseek_v3"]
    assert ds["quantization"]["quant_method"] == "fp8"
    fp8 = {k for k, d in ds["dtypes"].items() if d == "F8_E4M3"}
    assert "model.layers.0.self_attn.kv_a_proj_with_mqa.weight" in fp8
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in fp8
    assert "model.layers.1.mlp.shared_experts.up_proj.weight" in fp8
    assert all(ds["dtypes"][k + "_scale_inv"] == "F32" for k in fp8)
    assert ds["dtypes"]["model.layers.1.mlp.gate.weight"] == "F32"  # the router stays
    assert ds["config"].moe.router == "sigmoid" and ds["config"].mla.q_lora_rank == 12
    mm = results["minimax_m2"]
    q = mm["quantization"]
    assert q["fmt"] == "float8_e4m3fn" and "gate" in q["modules_to_not_convert"]
    mm_fp8 = {k for k, d in mm["dtypes"].items() if d == "F8_E4M3"}
    assert "model.layers.1.block_sparse_moe.experts.3.w2.weight" in mm_fp8
    assert "model.layers.0.self_attn.k_proj.weight" in mm_fp8
    assert mm["dtypes"]["model.layers.0.block_sparse_moe.gate.weight"] == "F32"
    assert mm["config"].moe.router == "sigmoid" and mm["config"].moe.num_experts == 4
    v32 = results["deepseek_v32"]
    assert v32["quantization"]["scale_fmt"] == "ue8m0"
    v32_fp8 = {k for k, d in v32["dtypes"].items() if d == "F8_E4M3"}
    indexer = "model.layers.2.self_attn.indexer."
    assert {indexer + "wq_b.weight", indexer + "wk.weight"} <= v32_fp8
    assert v32["dtypes"][indexer + "weights_proj.weight"] == "F32"
    assert v32["dtypes"][indexer + "k_norm.bias"] == "F32"
    oss = results["gpt_oss"]
    assert oss["quantization"]["quant_method"] == "mxfp4"
    for layer in range(2):
        for proj in ("gate_up_proj", "down_proj"):
            name = f"model.layers.{layer}.mlp.experts.{proj}"
            assert name not in oss["dtypes"]
            assert oss["dtypes"][name + "_blocks"] == oss["dtypes"][name + "_scales"] == "U8"
    assert oss["config"].attention.sinks and oss["config"].moe.num_experts == 4


def test_the_int4_folder_is_packed_as_kimi_k25s_release(results):
    for name, scale in (("kimi_k2_int4", "F32"), ("kimi_k2_int4_bf16", "BF16")):
        r = results[name]
        assert r["quantization"]["format"] == "pack-quantized"
        expert = "model.layers.1.mlp.experts.7.down_proj.weight"
        assert expert not in r["dtypes"] and r["dtypes"][expert + "_packed"] == "I32"
        assert r["dtypes"][expert + "_scale"] == scale and r["dtypes"][expert + "_shape"] == "I64"
        assert r["dtypes"]["model.layers.1.mlp.shared_experts.down_proj.weight"] == "F32"
        assert r["dtypes"]["model.layers.0.self_attn.q_a_proj.weight"] == "F32"
        assert r["config"].moe.num_experts == 8 and r["config"].norm.eps == 1e-5


def test_bf16_scaled_int4_experts_equal_transformers_dequantized_ones_exactly(results):
    """compressed-tensors rounds each product to the scales' dtype: tjx's experts (float32
    params, exported) hold the same bfloat16 values as transformers' parameters."""
    r = results["kimi_k2_int4_bf16"]
    experts = r["experts"]
    assert set(r["expert_dtypes"].values()) == {"bfloat16"}
    gate_up, down = (
        experts[f"model.layers.1.mlp.experts.{p}"] for p in ("gate_up_proj", "down_proj")
    )
    dim = gate_up.shape[1] // 2
    for e in range(8):
        ours = {p: r["export"][f"model.layers.1.mlp.experts.{e}.{p}_proj.weight"]
                for p in ("gate", "up", "down")}  # fmt: skip
        np.testing.assert_array_equal(ours["gate"], gate_up[e, :dim])
        np.testing.assert_array_equal(ours["up"], gate_up[e, dim:])
        np.testing.assert_array_equal(ours["down"], down[e])
    assert len(np.unique(down[0])) > 16  # scaled per group: more values than INT4's 16 codes
