"""Peak memory of ``tjx.nn.load_hf`` on a synthetic LLaMA-shaped safetensors checkpoint.

    python packages/tjx-nn/benchmarks/bench_hf_import.py [--shape 1b] [--param-dtype bfloat16]
        [--family llama|qwen3|olmo2|phi3|gemma2|gemma3_text|deepseek_v2|deepseek_v3]
        [--layers N]

A child process writes a checkpoint of the chosen shape (bf16 tensors, sharded at 2 GB, as the
hub's Llama checkpoints are) in the chosen family's layout (its tensor names, Phi-3's fused
``qkv_proj``/``gate_up_proj``, Gemma's four norms per layer, DeepSeek's MLA projections and
per-expert tensors; the family's published small model with ``--shape family``) into a
temporary folder; a second child imports it with ``load_hf`` and reports its peak resident
memory (``ru_maxrss``) and its resident memory after ``import jax, tjx.nn`` (the baseline), and
after JAX's CPU backend has started as well (its first array: ~31 MiB of libraries and pools
that any JAX program pays). The ratio ``(peak - baseline) / model bytes`` says how many copies
of the weights the import held at once (1.0 = none besides the model itself); ``... above the
backend`` leaves the backend's start out.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # Llama 2 7B: 6.74 B parameters.
    "7b": dict(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
    ),
    # Llama 3.2 1B's shape (GQA 32/8, vocab 128256, tied): 1.24 B parameters.
    "1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    # Per family (--shape family): the published small model's widths, heads and vocabulary;
    # Phi-3-mini with half its layers (16 of 32) to fit beside other jobs.
    "qwen3": dict(
        hidden_size=1024,
        intermediate_size=3072,
        num_hidden_layers=28,
        num_attention_heads=16,
        num_key_value_heads=8,
        head_dim=128,
        vocab_size=151936,
        tie_word_embeddings=True,
    ),
    "olmo2": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=100352,
    ),
    "phi3": dict(
        hidden_size=3072,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32064,
    ),
    "gemma2": dict(
        hidden_size=2304,
        intermediate_size=9216,
        num_hidden_layers=26,
        num_attention_heads=8,
        num_key_value_heads=4,
        head_dim=256,
        vocab_size=256000,
    ),
    "gemma3_text": dict(
        hidden_size=1152,
        intermediate_size=6912,
        num_hidden_layers=26,
        num_attention_heads=4,
        num_key_value_heads=1,
        head_dim=256,
        vocab_size=262144,
        rope_local_base_freq=10000.0,
    ),
    # DeepSeek-V2-Lite's widths (MLA without a query rank, 64 routed experts of 1408, 2 shared,
    # 6 per token, a dense first layer) with 3 of its 27 layers: 1.67 B parameters, 3.1 GiB.
    "deepseek_v2": dict(
        hidden_size=2048,
        intermediate_size=10944,
        num_hidden_layers=3,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=102400,
        q_lora_rank=None,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=64,
        moe_intermediate_size=1408,
        n_shared_experts=2,
        num_experts_per_tok=6,
        first_k_dense_replace=1,
        topk_method="greedy",
        scoring_func="softmax",
        norm_topk_prob=False,
        routed_scaling_factor=1.0,
    ),
    # DeepSeek-V3's layout at V2-Lite's width (V3 itself: d 7168, 128 heads, 256 experts):
    # low-rank query (768), sigmoid router with its bias, 8 groups of which 4 are kept,
    # 64 experts of 1024, 1 shared, 8 per token, a dense first layer, V3's vocabulary;
    # 4 layers: 1.85 B parameters, 3.5 GiB.
    "deepseek_v3": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=4,
        num_attention_heads=16,
        num_key_value_heads=16,
        vocab_size=129280,
        q_lora_rank=768,
        kv_lora_rank=512,
        qk_nope_head_dim=128,
        qk_rope_head_dim=64,
        v_head_dim=128,
        n_routed_experts=64,
        moe_intermediate_size=1024,
        n_shared_experts=1,
        num_experts_per_tok=8,
        n_group=8,
        topk_group=4,
        first_k_dense_replace=1,
        topk_method="noaux_tc",
        scoring_func="sigmoid",
        norm_topk_prob=True,
        routed_scaling_factor=2.5,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=256,
    ),
}


DEEPSEEK = ("deepseek_v2", "deepseek_v3")
#: DeepSeek-V2-Lite's and V3's published ``rope_scaling`` (mscale: V2-Lite's; V3's is 1.0).
_DEEPSEEK_YARN = dict(
    type="yarn", factor=40, original_max_position_embeddings=4096, beta_fast=32, beta_slow=1
)


def _rss_mib(key: str = "VmRSS") -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def write(folder: Path, shape: str, family: str = "llama", layers: int | None = None) -> None:
    """A checkpoint of ``shape`` in ``family``'s layout (constant bf16 tensors, one at a time)
    with tjx's writer; ``layers``: that many of the shape's layers instead."""
    import jax.numpy as jnp
    import numpy as np

    from tjx.nn.hf.config import llama_config_from_hf
    from tjx.nn.hf.deepseek import deepseek_config_from_hf
    from tjx.nn.hf.deepseek_tensors import deepseek_mapping
    from tjx.nn.hf.families import family_config_from_hf
    from tjx.nn.hf.family_tensors import family_mapping
    from tjx.nn.hf.llama import llama_mapping
    from tjx.nn.hf.writing import write_safetensors

    sizes = SHAPES[family if shape == "family" else shape]
    if layers is not None:
        sizes = {**sizes, "num_hidden_layers": layers}
    # Gemma and Phi-3 windows of 4096 never slide at 4096 positions; Gemma 3's local base
    # equals its global one (tjx has neither a window nor a second base yet).
    hf = {"model_type": family, "max_position_embeddings": 4096, **sizes}
    if family in ("phi3", "gemma2", "gemma3_text"):
        hf["sliding_window"] = 4096
    if family == "llama":
        mapping = llama_mapping(llama_config_from_hf(hf))
    elif family.startswith("deepseek"):
        # The published YaRN (a config setting: no tensor) and DeepSeek's latent-norm epsilon.
        m = 0.707 if family == "deepseek_v2" else 1.0
        yarn = dict(_DEEPSEEK_YARN, mscale=m, mscale_all_dim=m)
        hf |= dict(rms_norm_eps=1e-6, rope_scaling=yarn, max_position_embeddings=163840)
        mapping = deepseek_mapping(deepseek_config_from_hf(hf), family)
    else:
        if family == "gemma3_text":
            hf["rope_theta"] = hf["rope_local_base_freq"]
        mapping = family_mapping(family_config_from_hf(hf), family)
    bf16 = jnp.dtype("bfloat16")
    tensors = [
        (name, s, lambda s=s: np.full(s, 0.01, dtype=bf16)) for name, s in mapping.shapes.items()
    ]
    write_safetensors(folder, tensors, itemsize=2, max_shard_size=2 * 10**9)
    (folder / "config.json").write_text(json.dumps({**hf, "torch_dtype": "bfloat16"}))


def load(folder: Path, param_dtype: str) -> dict[str, float]:
    """Import ``folder`` with ``load_hf``; baseline and peak RSS in MiB, model bytes."""
    import jax
    import jax.numpy as jnp

    from tjx import nn

    baseline = _rss_mib()
    jnp.zeros((1,)).block_until_ready()  # the backend starts: not the import's memory
    backend = _rss_mib()
    dtype = jnp.dtype(param_dtype)
    model, _ = nn.load_hf(folder, precision=nn.Precision(dtype, dtype))
    leaves = jax.tree.leaves(nnx_state(model))
    model_bytes = sum(x.size * x.dtype.itemsize for x in leaves)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    params = sum(x.size for x in leaves)
    # After the import: anonymous memory (the model) vs file pages still mapped (none: closed).
    anon, file = _rss_mib("RssAnon"), _rss_mib("RssFile")
    return {
        "baseline_mib": baseline,
        "backend_mib": backend,
        "peak_mib": peak,
        "model_mib": model_bytes / 2**20,
        "params": params,
        "after_anon_mib": anon,
        "after_file_mib": file,
    }


def nnx_state(model: Any) -> Any:
    from flax import nnx

    return nnx.state(model, nnx.Param)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=(*SHAPES, "family"), default="1b")
    families = ("llama", "qwen3", "olmo2", "phi3", "gemma2", "gemma3_text", *DEEPSEEK)
    parser.add_argument("--family", choices=families, default="llama")
    parser.add_argument("--param-dtype", default="bfloat16", choices=("bfloat16", "float32"))
    parser.add_argument("--layers", type=int, default=None, help="this many layers of the shape")
    parser.add_argument("--child", nargs=2, metavar=("ROLE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        role, folder = args.child
        if role == "write":
            write(Path(folder), args.shape, args.family, args.layers)
        else:
            print(json.dumps(load(Path(folder), args.param_dtype)))
        return
    me = [sys.executable, __file__, "--shape", args.shape, "--param-dtype", args.param_dtype]
    me += ["--family", args.family]
    me += ["--layers", str(args.layers)] if args.layers else []
    with tempfile.TemporaryDirectory(prefix="tjx-hf-bench-") as tmp:
        subprocess.run([*me, "--child", "write", tmp], check=True)
        disk = sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors")) / 2**20
        out = subprocess.run(
            [*me, "--child", "load", tmp], check=True, capture_output=True, text=True
        )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    extra = (r["peak_mib"] - r["baseline_mib"]) / r["model_mib"]
    above = (r["peak_mib"] - r["backend_mib"]) / r["model_mib"]
    print(
        f"{args.family} shape {args.shape} ({args.layers or 'its'} layers): "
        f"{r['params'] / 1e9:.2f} B params, checkpoint "
        f"{disk:,.0f} MiB (bf16), model {r['model_mib']:,.0f} MiB ({args.param_dtype}); RSS after "
        f"imports {r['baseline_mib']:,.0f} MiB, after the backend's start "
        f"{r['backend_mib']:,.0f} MiB, peak {r['peak_mib']:,.0f} MiB; (peak - baseline) / model "
        f"bytes = {extra:.2f}, {above:.2f} above the backend, peak / model bytes = "
        f"{r['peak_mib'] / r['model_mib']:.2f}; after: anonymous {r['after_anon_mib']:,.0f} MiB, "
        f"file-backed {r['after_file_mib']:,.0f} MiB"
    )


if __name__ == "__main__":
    main()
