"""tjx's LoRA exports against PEFT and transformers (PyTorch in a scratch venv).

tjx builds small random LLaMA-family models (GQA with a scanned stack; Qwen2's q/k/v biases
unrolled), saves the base with ``save_hf``, adds adapters on every role with a trained-looking
(random) ``B``, and writes them both ways: ``save_peft`` (PEFT loads it onto transformers' base
model) and ``save_hf`` (merged). Both sets of float32 logits equal tjx's within 1e-4 relative.
One peer process for the module.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import pytest
from flax import nnx

from tests_integration._hf_peer import run_peer
from tjx import nn

VOCAB = 64
CASES: dict[str, dict[str, Any]] = {
    "llama-scanned": dict(
        model=dict(num_kv_heads=2, scan_layers=True),
        lora=dict(rank=4, alpha=8.0, targets=nn.LORA_ROLES),
    ),
    "qwen2-unrolled": dict(
        model=dict(num_kv_heads=2, **{"attention.qkv_bias": True}, tie_embeddings=True),
        lora=dict(rank=3, alpha=3.0, rslora=True, targets=("q", "k", "v", "down")),
    ),
}


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    work = tmp_path_factory.mktemp("lora-peer")
    rng = np.random.default_rng()
    tokens = rng.integers(0, VOCAB, (2, 10))
    np.save(work / "tokens.npy", tokens)
    jobs, ours = [], {}
    for name, case in CASES.items():
        config = nn.make_config(
            nn.LlamaConfig,
            {"vocab_size": VOCAB, "max_seq_len": 32, "d_model": 32, "num_layers": 2,
             "num_heads": 4, "mlp": nn.MLPConfig(dim=48), **case["model"]},
        )  # fmt: skip
        model = nn.Llama(config, rngs=nnx.Rngs(int(rng.integers(1 << 20))))
        folder = work / name
        nn.save_hf(model, folder / "base")
        base = np.asarray(model(tokens), np.float32)
        lora = nn.LoraConfig(**case["lora"])
        nn.add_lora(model, lora, rngs=nnx.Rngs(int(rng.integers(1 << 20))))
        key = jax.random.key(int(rng.integers(1 << 20)))
        for i, (_, _, dense) in enumerate(nn.lora.lora_modules(model)):
            b = dense.lora.lora_b  # type: ignore[union-attr]
            b.set_value(0.2 * jax.random.normal(jax.random.fold_in(key, i), b[...].shape))
        nn.save_peft(model, folder / "adapter", lora, base_model=str(folder / "base"))
        nn.save_hf(model, folder / "merged")
        ours[name] = {"ours": np.asarray(model(tokens), np.float32), "base": base}
        jobs.append({"peft": str(folder / "base"), "adapter": str(folder / "adapter"),
                     "merged": str(folder / "merged"), "tokens": str(work / "tokens.npy"),
                     "out": str(folder / "peer.npz")})  # fmt: skip
    run_peer(jobs, work)
    return {name: {**ours[name], **np.load(work / name / "peer.npz")} for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_peft_loads_the_adapter_onto_the_transformers_base_with_tjxs_logits(
    results: dict[str, dict[str, Any]], name: str
):
    r = results[name]
    assert _rel(r["adapted"], r["ours"]) < 1e-4
    assert _rel(r["ours"], r["base"]) > 1e-2  # the adapters change the model: not base vs base


@pytest.mark.parametrize("name", list(CASES))
def test_the_merged_export_is_an_ordinary_checkpoint_with_tjxs_logits(
    results: dict[str, dict[str, Any]], name: str
):
    r = results[name]
    assert _rel(r["merged"], r["ours"]) < 1e-4
    assert _rel(r["adapted"], r["merged"]) < 1e-4
