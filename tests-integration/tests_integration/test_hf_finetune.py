"""A tiny Llama made by transformers, fine-tuned by the trainer, handed back to transformers.

transformers (scratch venv) saves a random tiny Llama with GPT-2's vocabulary; the folder gets
GPT-2's ``tokenizer.json`` and ``data.tokenizer`` names the folder (the model's own vocabulary).
``--init-from`` fine-tunes it for 20 steps on Shakespeare; ``python -m eval --export-hf`` writes
the run as a HF folder; transformers loads it and gives the logits of tjx's final parameters
(1e-4 relative). ``python -m eval --checkpoint HF_FOLDER`` scores and samples the HF folder
directly; a family other than ``model.kind`` is refused in one line.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tests_integration._helpers_apps import check_ok, run_app, train
from tests_integration._hf_peer import run_peer
from tjx import ckpt, data, nn

TOKENS = np.random.default_rng(1).integers(0, 50257, size=(2, 16))
CONFIG = dict(
    model_type="llama",
    vocab_size=50257,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
)
SETS = [
    "model.kind=llama",
    "data.seq_len=32",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=20",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.sample_every=0",
    "train.checkpoint_every=20",
    "optimizer.schedule.peak_lr=3e-3",
    "optimizer.schedule.warmup_steps=0",
    "logging.sinks=[jsonl]",
]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def test_fine_tuned_llama_exports_with_tjx_final_logits(tmp_path):
    hf = tmp_path / "hf"
    np.save(tmp_path / "tokens.npy", TOKENS)
    job = {"config": CONFIG, "tokens": TOKENS.tolist(), "new": 4}
    run_peer([{"make": job, "out": str(hf)}], tmp_path)
    data.load_tokenizer("gpt2").save(hf)  # type: ignore[attr-defined]
    wrong = train(tmp_path, "wrong", [f"data.tokenizer={hf}"], "--init-from", str(hf))
    assert wrong.returncode == 2 and "model.kind must be 'llama'" in wrong.stderr
    assert wrong.stderr.count("\n") == 1 and not (tmp_path / "wrong").exists()

    proc = train(tmp_path, "ft", [*SETS, f"data.tokenizer={hf}"], "--init-from", str(hf))
    check_ok(proc)
    run = tmp_path / "ft"
    out = tmp_path / "exported"
    check_ok(run_app("eval", ["--checkpoint", str(run), "--export-hf", str(out)], tmp_path))
    assert (out / "tokenizer.json").is_file()
    back = tmp_path / "back.npz"
    run_peer(
        [{"score": str(out), "tokens": str(tmp_path / "tokens.npy"), "out": str(back), "new": 4}],
        tmp_path,
    )
    peer = dict(np.load(back))
    assert str(peer["arch"]) == "LlamaForCausalLM"

    config = nn.config_from_dict(json.loads((run / "model.json").read_text()))
    model = nnx.eval_shape(lambda: nn.build_model(config, rngs=nnx.Rngs(0)))
    graphdef, abstract, rest = nnx.split(model, nnx.Param, ...)
    target = nnx.to_pure_dict(abstract)
    params = ckpt.restore_params(run / "checkpoints", target=target, step=20)
    nnx.replace_by_pure_dict(abstract, params)
    model = nnx.merge(graphdef, abstract, nn.concrete_state(rest))
    final = np.asarray(model(jnp.asarray(TOKENS, jnp.int32)))
    assert _rel(peer["logits"], final) < 1e-4
    before = dict(np.load(hf / "peer.npz"))["logits"]
    assert _rel(before, final) > 1e-3  # the fine-tune moved the weights

    scored = run_app(
        "eval",
        [
            "--checkpoint",
            str(hf),
            "--data",
            "shakespeare",
            "--max-batches",
            "1",
            "--batch-size",
            "2",
            "--generate",
            "ROMEO:",
            "--max-new-tokens",
            "4",
        ],
        tmp_path,
    )
    check_ok(scored)
    assert "loss" in scored.stdout and "--- sample" in scored.stdout
    assert jax.tree.leaves(params)
