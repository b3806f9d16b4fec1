"""Smaller deviceless plans than the presets as shipped (those, with their guard table, are
test_plan_deviceless's; a Pants batch apart, so that CI's two cores share them): the presets
shrunk for a TPU v5e and GPT-2's Pallas kernels for an H100, with every rule of
test_plan_deviceless but the peak; a small delta/attention hybrid (#56's Qwen3.5 and Qwen3-Next
layers); a small float8 run (#68: its products stay float8 GEMMs); tokamax's attention (#68);
the families' folders (#56, #70); an RL config's ``--search``, which estimates its rollouts from
their H100 programs and picks a rollout batch (#72), and an overlapped RL plan.

Each is ``python -m trainer ... --plan TARGET`` in the scratch folder of jax's CUDA plugin or
libtpu (`_deviceless.py`), as test_plan_deviceless's are.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from flax import nnx

from tests_integration._deviceless import (
    ALLOWED_F32_DOTS,
    check_preset_plan,
    plan,
    plan_env,
    scratch_envs,
    unexplained_f32,
)
from tjx import nn
from tjx.nn.families.gemma4 import Gemma4Options

#: A TPU compile at this size: 2 layers of 2 × 128 tokens (SHRUNK).
TPU_SMALL = ["model.num_layers=2", "data.seq_len=128", "data.batch_size=2", "eval.batch_size=2"]

#: Cases compiled smaller than the preset, each with its ``--set``s: every rule of
#: test_plan_deviceless but the guard table's peak (the table holds the presets' own figures). A
#: TPU compile is the dearest, and its cost follows the tensors' sizes more than the layer count
#: (CPU seconds on the 2-core machine: llama_small 208; gpt2_small at 2 layers 165, at 2 layers of
#: 2 × 128 tokens 56; an H100's 40-80; gpt2_small's v5e case took 429 s of CI's 1,106,
#: llama_small's 337 s of a 2026-11-27 run's 781). The TPU path (auto's choice, the per-leaf
#: params, XLA's TPU compile and its float32 products, the fit) is compiled at this size for both
#: layer families: Llama's (RMSNorm, SwiGLU, RoPE, grouped KV heads) and GPT-2's (LayerNorm, GELU,
#: learned positions, tied embeddings), the same operations at a fraction of the compile. The
#: presets' own TPU peaks are not guarded here (`--plan v5e` prints them; BENCHMARKS.md's plans).
SHRUNK = {
    ("llama_small", "v5e", "auto"): TPU_SMALL,
    ("gpt2_small", "v5e", "auto"): TPU_SMALL,
    # #68: GPT-2's layers hand q/k/v to the Pallas kernels as one tensor (the stacked kernels,
    # lowered by jaxlib's Triton); Llama's (RoPE between projection and kernel) keep three.
    ("gpt2_small", "h100", "pallas"): TPU_SMALL,
}

#: A delta layer's float32 products: tjx.kernels' gated delta rule (gated_delta.py) computes its
#: chunked form in float32 on purpose (the decays' cumulative exponentials, the chunk's triangle
#: inverse and the carried state lose too much in bf16; flash-linear-attention keeps its state in
#: float32 too): the chunk's K·Kᵀ and Q·Kᵀ, the inverse's block products, the scan's state ones,
#: and with the Pallas kernels (named by the hybrid case) the chunks' products with the states the
#: kernels keep (gated_delta_pallas: the outputs, and their backward's dW, d(γQ), dKe, dU, dQKᵀ).
DELTA_F32_DOTS = [
    r"bhnik,bhnjk->bhnij\)*/dot_general$",
    r"/(bhck,bhkv->bhcv|bhij,bhjv->bhiv|bhck,bhcv->bhkv)/(dot_general|transpose)$",
    r"gated_delta_chunk_inverse\)*/(dot_general|transpose)$",
    r"\((bhnck,bhnkv->bhncv|bhnij,bhnjv->bhniv|bhncv,bhnkv->bhnck|bhnij,bhniv->bhnjv|"
    r"bhniv,bhnjv->bhnij)\)*/dot_general$",
]
#: A Qwen3.5-shaped hybrid (#56) on llama_small's width: a Gated DeltaNet layer (6 key heads of
#: 128, 12 value heads of 64), then an attention layer with Qwen's output gate, q/k norms,
#: zero-centred norms and RoPE on a quarter of each head; 2 × 4 × 256 tokens (a fifth of the
#: preset's compile: 24 s of a 2-core machine's 100 s for 12 layers at 16 × 1,024).
HYBRID = [
    "model.mixer_pattern=[delta,attention]", "model.num_layers=2", "data.seq_len=256",
    "data.batch_size=4", "eval.batch_size=4", "model.delta.key_heads=6",
    "model.delta.value_heads=12", "model.delta.key_dim=128", "model.delta.value_dim=64",
    "model.attention_output_gate=true", "model.qk_norm=true", "model.norm.plus_one=true",
    "model.position.rope_fraction=0.25", "model.head_dim=64",
]  # fmt: skip


@pytest.fixture(scope="module")
def envs() -> dict[str, Path]:
    return scratch_envs()


@pytest.mark.parametrize("preset,target,kernel", list(SHRUNK))
def test_the_shrunk_preset_compiles_for_the_device_without_it(
    preset, target, kernel, envs, tmp_path
):
    env = envs["libtpu" if target == "v5e" else "cuda12"]
    data = plan(preset, target, kernel, env, tmp_path, SHRUNK[(preset, target, kernel)])
    check_preset_plan(data, preset, target, kernel)


def test_tokamax_attention_compiles_for_an_h100_and_is_priced_as_attention(envs, tmp_path):
    """#68: ``attention_impl: tokamax`` (OpenXLA tokamax's Pallas Mosaic GPU flash attention,
    tjx-kernels' ``gpu`` extra, here from tests-support's scratch folder) compiles for an H100
    without one: llama_small shrunk to 2 layers of 2 × 128 tokens (scanned layers, GQA 12/4,
    causal; the preset as shipped took 124 s in a CI run, this size 37 s in a local one), forward
    and backward, each layer's attention three Mosaic GPU calls (``mosaic_gpu_v2``: forward, dQ,
    dK/dV) in the program XLA built, no other attention kernel; the estimate prices them as
    attention (tjx's flash formulas, named as tokamax's), never as calls counted by their
    operands."""
    from tjx_tokamax_env import tokamax_env

    folder, seconds = tokamax_env()
    if seconds is not None:
        print(f"tokamax: installed in {seconds:.1f} s", file=sys.stderr)
    sets = TPU_SMALL  # 2 layers of 2 × 128 tokens: each layer's calls are what is checked
    data = plan("llama_small", "h100", "tokamax", envs["cuda12"], tmp_path, sets, (folder,))
    assert data["attention"]["kernel"] == "tokamax"
    assert data["train"]["compiles"] and data["eval"]["compiles"] and data["memory"]["fits"]
    calls = data["train"]["custom_calls"]  # by the estimate's names: tokamax's, priced
    mosaic = {c: n for c, n in calls.items() if "mosaic_gpu_v2" in c}
    assert {c.split(" (")[0] for c in mosaic} == {
        "tokamax attention fwd",
        "tokamax attention bwd dq",
        "tokamax attention bwd dk dv",
    }, calls
    assert len(set(mosaic.values())) == 1, calls  # one of each per layer
    assert not any("cudnn" in c or "tjx_flash" in c for c in calls), calls
    unexplained = unexplained_f32(data)
    assert not unexplained, f"float32 matrix products in a bf16 run: {unexplained}"
    estimate = data["estimate"]
    assert "attention" in estimate["calibrated_by_class"], estimate["calibrated_by_class"]
    assert "custom" not in estimate["calibrated_by_class"]
    assert "counted by their operands" not in data["stdout"]
    assert "an estimate" in data["stdout"] and estimate["seconds"] > 0


def test_a_delta_and_attention_hybrid_compiles_for_an_h100(envs, tmp_path):
    """#56's ``--plan h100`` of the Qwen hybrids: the chunked gated delta rule (XLA's own
    products, no library triangular solve; across chunks the Pallas kernels, named: `auto` takes
    XLA's scan until a GPU has measured them, #68) and the gated attention compile for an H100
    and fit; its float32 products are the delta rule's own and the attention's allowed ones."""
    sets = [*HYBRID, "model.delta.impl=pallas"]
    data = plan("llama_small", "h100", "auto", envs["cuda12"], tmp_path, sets)
    assert "delta rule: pallas (model.delta.impl)" in data["stdout"]
    assert data["train"]["compiles"] and data["eval"]["compiles"] and data["memory"]["fits"]
    calls = data["train"]["custom_calls"]
    assert not any("triangularSolve" in c for c in calls), calls  # the chunk's inverse is XLA's
    assert any(c.startswith("__cudnn$fmha") for c in calls), calls  # the attention layer's
    assert {"tjx_gdelta_fwd_h", "tjx_gdelta_bwd_dh"} <= set(calls), calls  # Triton's, lowered
    allowed = ALLOWED_F32_DOTS + DELTA_F32_DOTS
    f32 = data["train"]["f32_dots"]
    assert any(re.search(pattern, op) for op in f32 for pattern in DELTA_F32_DOTS), f32
    unexplained = unexplained_f32(data, allowed)
    assert not unexplained, f"float32 matrix products in a bf16 run: {unexplained}"
    assert "an estimate" in data["stdout"] and data["estimate"]["seconds"] > 0


#: llama_small with float8 products (#54's `model.precision.matmul=fp8`, off by default), at the
#: hybrid's size: 2 layers of 4 × 256 tokens (a fifth of the preset's compile).
FP8 = ["model.precision.matmul=fp8", "model.num_layers=2", "data.seq_len=256",
       "data.batch_size=4", "eval.batch_size=4"]  # fmt: skip


def test_fp8_still_compiles_to_float8_gemms_for_an_h100(envs, tmp_path):
    """#68: what FP8 buys rests on the H100 compile keeping its products in float8 (XLA's Triton
    GEMMs over float8 operands, or cuBLASLt's ``$f8`` call): every `Dense` product of the 2
    layers (q, k, v, o and SwiGLU's three: 7 a layer, each with its two gradient products) is a
    float8 GEMM, e4m3 × e4m3 forward and e5m2 gradients against e4m3 in the backward; the LM
    head's three products stay bf16 (``fp8_lm_head`` is off)."""
    data = plan("llama_small", "h100", "auto", envs["cuda12"], tmp_path, FP8)
    assert data["train"]["compiles"] and data["memory"]["fits"]
    gemms = data["train"]["gemm_operands"]
    float8 = {k: n for k, n in gemms.items() if k.split("×")[0].startswith("f8")}
    assert sum(float8.values()) >= 2 * 7, gemms  # the forward products, at least
    assert set(float8) >= {"f8e4m3fn×f8e4m3fn"} and any("f8e5m2" in k for k in float8), gemms
    assert set(gemms) - set(float8) <= {"bf16×bf16"} and gemms.get("bf16×bf16", 0) <= 3, gemms


#: #56's families, as tiny tjx models saved in their Hugging Face layout: gpt-oss (attention
#: sinks, a sliding layer, biased clamped-SwiGLU experts, yarn), GLM-4.5 (partial rotary, q/k
#: norms, grouped sigmoid routing, a shared expert after a dense layer), Llama 4 (chunked
#: attention, a NoPE layer with its temperature, the weightless q/k norm, input-scaled experts on
#: every other layer), Gemma 4 (global layers of their own width with values from keys and
#: proportional RoPE, layers reading an earlier layer's keys and values, per-layer embeddings,
#: layer scalars, the MoE block beside the MLP), OLMo 3 (sliding layers on OLMo 2's post-norm
#: block) and Qwen3-Next (delta layers, gated attention, MoE with a gated shared expert);
#: Qwen3.5's layers are the hybrid's above. #70's: MiniMax-M2 (below).
FAMILY_SIZES = dict(vocab_size=64, max_seq_len=64, d_model=64, num_layers=2, num_heads=4,
                    num_kv_heads=2, head_dim=16, mlp=nn.MLPConfig(dim=64))  # fmt: skip
FAMILIES = {
    "gpt_oss": dict(
        **{"attention.sinks": True},
        use_bias=True,
        **{"mlp.activation": "swiglu_clamped"},
        moe=nn.MoEConfig(num_experts=4, experts_per_token=2, router_logit_bias=True),
        **{"attention.sliding_window": 16},
        **{"attention.window_pattern": ("local", "global")},
        **{
            "position.rope_scaling": dict(
                type="yarn", factor=4.0, original_max_position_embeddings=16, truncate=False
            )
        },
    ),
    "glm4_moe": dict(
        position=nn.PositionConfig(rope_fraction=0.5),
        **{"attention.qk_norm": True},
        **{"attention.qkv_bias": True},
        moe=nn.MoEConfig(
            num_experts=8,
            experts_per_token=2,
            expert_mlp_dim=32,
            num_shared_experts=1,
            first_dense=1,
            router="sigmoid",
            router_scale=2.5,
            router_groups=4,
            router_topk_groups=2,
        ),
    ),
    "llama4": dict(
        num_layers=4,
        **{"attention.chunk": 16},
        **{"attention.window_pattern": ("local",) * 3 + ("global",)},
        **{"llama4.global_nope": True},
        qk_l2_norm=True,
        **{"llama4.nope_temperature_floor": 8.0},
        **{"llama4.nope_temperature_scale": 0.1},
        moe=nn.MoEConfig(
            num_experts=4,
            experts_per_token=1,
            expert_mlp_dim=32,
            num_shared_experts=1,
            shared_expert_mlp_dim=32,
            layer_step=2,
            router="sigmoid_plain",
            router_norm_topk=False,
            router_scales_input=True,
        ),
    ),
    "gemma4": dict(
        num_layers=4,
        **{"attention.sliding_window": 16},
        **{"attention.window_pattern": ("local", "global")},
        norm=nn.NormConfig(position="sandwich"),
        scale_embeddings=True,
        **{"mlp.activation": "geglu"},
        **{"attention.qk_norm": True},
        **{"attention.query_pre_attn_scalar": 1.0},
        tie_embeddings=True,
        **{"position.rope_local_theta": 100.0},
        final_logit_softcap=30.0,
        gemma4=Gemma4Options(
            global_head_dim=32,
            global_kv_heads=1,
            global_values_from_keys=True,
            global_rope_proportion=0.25,
            value_norm=True,
            kv_shared_layers=2,
            kv_shared_mlp_dim=128,
            per_layer_input_dim=8,
            layer_scale=True,
        ),
        moe=nn.MoEConfig(
            num_experts=4,
            experts_per_token=2,
            expert_mlp_dim=32,
            beside_mlp=True,
            router_input_norm=True,
            router_expert_scale=True,
        ),
    ),
    "olmo3": dict(
        num_layers=4,
        norm=nn.NormConfig(position="output"),
        **{"attention.qk_norm": True},
        **{"attention.qk_norm_scope": "projection"},
        **{"attention.sliding_window": 16},
        **{"attention.window_pattern": ("local",) * 3 + ("global",)},
    ),
    "qwen3_next": dict(
        num_layers=4,
        mixer_pattern=("delta",) * 3 + ("attention",),
        delta=nn.DeltaConfig(key_heads=2, value_heads=4, key_dim=16, value_dim=16),
        **{"attention.output_gate": True},
        **{"attention.qk_norm": True},
        norm=nn.NormConfig(plus_one=True),
        position=nn.PositionConfig(rope_fraction=0.25),
        moe=nn.MoEConfig(
            num_experts=4,
            experts_per_token=2,
            expert_mlp_dim=32,
            num_shared_experts=1,
            shared_expert_mlp_dim=64,
            shared_expert_gate=True,
            first_dense=1,
        ),
    ),
    # DeepSeek-V3.2: DeepSeek's MLA (low-rank query, latent, shared rotated key) with DeepSeek
    # Sparse Attention's indexer keeping 16 of the 64 keys (xla: no fused kernel takes a per-query
    # key set), grouped sigmoid routing and a shared expert after a dense layer.
    "deepseek_v32": dict(
        num_kv_heads=4,
        use_bias=False,
        norm=nn.NormConfig(eps=1e-6),
        **{"attention.type": "mla"},
        mla=nn.MLAConfig(
            kv_latent_dim=32,
            q_lora_rank=32,
            qk_rope_head_dim=8,
            v_head_dim=16,
            index_topk=16,
            index_n_heads=4,
            index_head_dim=16,
        ),
        moe=nn.MoEConfig(
            num_experts=8,
            experts_per_token=2,
            expert_mlp_dim=32,
            num_shared_experts=1,
            first_dense=1,
            router="sigmoid",
            router_scale=2.5,
            router_groups=4,
            router_topk_groups=2,
            router_norm_topk=True,
        ),
    ),
    # Qwen3.5-MoE: Qwen3-Next's computation with every layer sparse, saved as qwen3_5_moe_text
    # (asked for by name: FAMILY_TYPES).
    "qwen3_5_moe": dict(
        num_layers=4,
        mixer_pattern=("delta",) * 3 + ("attention",),
        delta=nn.DeltaConfig(key_heads=2, value_heads=4, key_dim=16, value_dim=16),
        **{"attention.output_gate": True},
        **{"attention.qk_norm": True},
        norm=nn.NormConfig(plus_one=True),
        position=nn.PositionConfig(rope_fraction=0.25),
        moe=nn.MoEConfig(
            num_experts=4,
            experts_per_token=2,
            expert_mlp_dim=32,
            num_shared_experts=1,
            shared_expert_mlp_dim=64,
            shared_expert_gate=True,
        ),
    ),
}
# Kimi-K2.5 (its image-text folder, written from the DeepSeek-V3 export below): MLA with a
# low-rank query, its norms at 1e-5 beside the latent norms' 1e-6, yarn positions, a dense layer
# then sigmoid-routed experts in one group with a shared expert.
FAMILIES["kimi_k25"] = dict(
    num_kv_heads=4,
    **{"attention.type": "mla"},
    mla=nn.MLAConfig(
        kv_latent_dim=32, q_lora_rank=32, qk_rope_head_dim=8, v_head_dim=16, latent_norm_eps=1e-6
    ),
    norm=nn.NormConfig(eps=1e-5),
    position=nn.PositionConfig(
        rope_scaling=dict(
            type="yarn",
            factor=4.0,
            original_max_position_embeddings=16,
            mscale=1.0,
            mscale_all_dim=1.0,
        )
    ),
    moe=nn.MoEConfig(
        num_experts=8,
        experts_per_token=2,
        expert_mlp_dim=32,
        num_shared_experts=1,
        first_dense=1,
        router="sigmoid",
        router_norm_topk=True,
        router_scale=2.827,
    ),
)


def _as_kimi_k25(folder: Path) -> None:
    """``folder``'s deepseek_v3 export rewritten as Kimi-K2.5 publishes it: the image-text config
    around it, its tensors under ``language_model.``."""
    from safetensors.numpy import load_file, save_file

    hf = json.loads((folder / "config.json").read_text())
    wrapped = {"model_type": "kimi_k25", "tie_word_embeddings": hf["tie_word_embeddings"],
               "text_config": {**hf, "model_type": "kimi_k2"}}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(wrapped))
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({f"language_model.{k}": v for k, v in tensors.items()},
              str(folder / "model.safetensors"))  # fmt: skip


#: The families whose folder is rewritten after tjx saves it (the published layout tjx reads but
#: does not write).
AS_PUBLISHED = {"kimi_k25": _as_kimi_k25}
#: The families whose folder is saved by name (the others: the family of the config's switches).
FAMILY_TYPES = {"qwen3_5_moe": "qwen3_5_moe_text"}
# MiniMax-M2: every layer MoE with the sigmoid router, q/k norms over the whole projection, RoPE
# on half of each head.
FAMILIES["minimax_m2"] = dict(
    position=nn.PositionConfig(rope_fraction=0.5),
    **{"attention.qk_norm": True},
    **{"attention.qk_norm_scope": "projection"},
    moe=nn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=32, router="sigmoid"),
)
FAMILY_RUN = ["model.kind=llama", "data.seq_len=64", "data.batch_size=8", "eval.batch_size=8"]
#: The families' plans in one process (the trainer's own ``main`` per family, as ``python -m
#: trainer`` runs it): one start of jax and its CUDA plugin instead of one per family.
DRIVER = """
import json, sys
from trainer.cli import main
for family, argv in json.loads(sys.argv[1]).items():
    print(f"=== {family}", flush=True)
    print(f"=== {family} exit {main(argv)}", flush=True)
"""


@pytest.fixture(scope="module")
def family_plans(envs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Each family's ``--plan h100 --init-from FOLDER`` (its JSON, its stdout and exit code)."""
    tmp = tmp_path_factory.mktemp("family-plans")
    argvs = {}
    for family, fields in FAMILIES.items():
        config = nn.make_config(nn.LlamaConfig, FAMILY_SIZES | fields)
        model = nn.build_model(config, rngs=nnx.Rngs(0))
        nn.save_hf(model, tmp / family, model_type=FAMILY_TYPES.get(family))
        AS_PUBLISHED.get(family, lambda folder: None)(tmp / family)
        argvs[family] = ["--config", "tiny", "--plan", "h100", "--init-from", str(tmp / family),
                         "--plan-json", str(tmp / f"{family}.json"),
                         *(a for value in FAMILY_RUN for a in ("--set", value))]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, json.dumps(argvs)], cwd=tmp,
        env=plan_env(envs["cuda12"], tmp), capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    found = {}
    for family in FAMILIES:
        said = proc.stdout.split(f"=== {family}\n", 1)[1].split(f"=== {family} exit ", 1)
        data = json.loads((tmp / f"{family}.json").read_text()) if said[1][0] == "0" else {}
        found[family] = {**data, "stdout": said[0], "exit": int(said[1].split("\n", 1)[0])}
    return found


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_new_family_plans_for_an_h100_from_its_folder(family, family_plans):
    """``--plan h100 --init-from FOLDER`` compiles the checkpoint's own architecture (the
    planned model is the folder's: trainer's test_target_plan) for an H100, and it fits."""
    data = family_plans[family]
    assert data["exit"] == 0, data["stdout"]
    assert data["train"]["compiles"] and data["eval"]["compiles"] and data["memory"]["fits"]
    assert "an estimate" in data["stdout"] and data["estimate"]["seconds"] > 0


#: grpo_tiny shrunk for #72's RL search (one layer; 4 completions per prompt, 4 new tokens):
#: each rollout batch is three H100 compiles (the update, the rollout's prefill and decode step).
RL_SMALL = ["model.num_layers=1", "grpo.group_size=4", "grpo.max_new_tokens=4"]


def test_an_rl_search_estimates_each_rollout_from_its_h100_programs_and_picks_the_most_samples(
    envs, tmp_path
):
    """#72: ``--plan 8xh100 --search`` of an RL config plans each rollout batch once (the
    update, the prefill and the decode step compiled for the H100), estimates its rollout as the
    prefill plus ``max_new_tokens - 1`` decode steps (calibrated, labelled so) beside the update,
    and chooses the batch with the most samples per second; the runner-up is said and the
    winner's YAML written."""
    out, winner = tmp_path / "rl.json", tmp_path / "rl.yaml"
    # Overlap 0 only (the splits' programs: test_an_overlapped_rl_plan_for_h100s_..., below)
    args = ["--config", "grpo_tiny", "--plan", "8xh100", "--search", "--search-rollouts", "16,32",
            "--search-samplers", "0", "--plan-json", str(out), "--search-out", str(winner),
            *(a for value in RL_SMALL for a in ("--set", value))]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], cwd=tmp_path,
        env=plan_env(envs["cuda12"], tmp_path), capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    data = json.loads(out.read_text())
    rollouts = {p["batch"]: p["rollout"] for p in data["planned"]}
    assert sorted(rollouts) == [16, 32] and not any(p["error"] for p in data["planned"])
    for r in rollouts.values():
        assert r["label"].startswith("estimate (calibrated on ") and r["decode_steps"] == 3
        assert r["seconds"] == pytest.approx(r["prefill_s"] + 3 * r["decode_step_s"], rel=1e-12)
        assert r["step_s"] == pytest.approx(r["seconds"] + r["update_s"], rel=1e-12)  # μ = 1
    chosen, runner = data["chosen"], data["runner_up"]
    assert chosen["samples_per_s"] >= runner["samples_per_s"] > 0
    # Programs this small cost about the calibration's per-call overhead whatever their rows (16
    # or 32 rows took the same within 0.1 % here): twice the rows is about twice the samples/s.
    assert (chosen["batch"], runner["batch"]) == (32, 16)
    said = proc.stdout
    assert f"search: chosen: rollout batch {chosen['batch']} " in said
    assert f"search: runner-up: rollout batch {runner['batch']} " in said
    assert f"batch_size: {chosen['batch']}" in winner.read_text()
    print(f"deviceless RL search: {data['elapsed_s']:.1f} s", file=sys.stderr)


def test_an_overlapped_rl_plan_for_h100s_is_the_longer_side_plus_the_weights_copy(envs, tmp_path):
    """#72 point 4: ``--plan 2xh100`` of grpo_tiny overlapped on 1 sampler device compiles the
    update for the trainer's H100 and the rollout's prefill and decode step for the sampler's
    (three compiles: π_old's log-probabilities are the decode's, scored inside those two); its
    step is, by hand from the plan's own per-program costs, max(rollout, update) + the policy's
    bytes over NVLink (the device table's 450 GB/s)."""
    out = tmp_path / "overlap.json"
    sets = [*RL_SMALL, "data.batch_size=16", "grpo.overlap=1", "grpo.sampler_devices=1"]
    args = ["--config", "grpo_tiny", "--plan", "2xh100", "--plan-json", str(out),
            *(a for value in sets for a in ("--set", value))]  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "trainer", *args], cwd=tmp_path,
        env=plan_env(envs["cuda12"], tmp_path), capture_output=True, text=True, timeout=900,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    r = json.loads(out.read_text())["rollout"]
    assert (r["sampler_devices"], r["logps_passes"], r["decode_steps"]) == (1, 0, 3)
    assert r["old_logps_from_decode"] and r["logps_pass_s"] == 0
    rollout = r["prefill_s"] + 3 * r["decode_step_s"]
    assert r["seconds"] == pytest.approx(rollout, rel=1e-12)
    assert r["copy_s"] == pytest.approx(r["policy_bytes"] / 450e9, rel=1e-12)
    assert r["step_s"] == pytest.approx(max(rollout, r["update_s"]) + r["copy_s"], rel=1e-12)
    assert r["sequential_s"] == pytest.approx(rollout + r["update_s"], rel=1e-12)
    assert "rl step (estimate (calibrated on " in proc.stdout and "overlapped: " in proc.stdout
