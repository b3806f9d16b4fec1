"""Tiny models made by transformers, fine-tuned by the trainer, handed back to transformers.

transformers (scratch venv) saves a random tiny Llama, or a tiny Qwen3.5 (``qwen3_5_text``: Gated
DeltaNet layers beside attention, tjx's ``llama`` kind with a ``mixer_pattern``), with GPT-2's
vocabulary; the folder gets GPT-2's ``tokenizer.json`` and ``data.tokenizer`` names the folder
(the model's own vocabulary). ``--init-from`` fine-tunes it on Shakespeare (4 steps: the logits
move by far more than the 1e-3 asserted) and samples after the last step; ``python -m eval
--export-hf`` writes the run as a HF folder; transformers loads it and gives the logits of tjx's
final parameters (1e-4 relative). ``python -m eval --checkpoint HF_FOLDER`` scores and samples
the HF folder directly, and a family other than ``model.kind`` is refused in one line (both in
the Llama case only: neither depends on the model). The fine-tunes, the refusal and the
evaluator's calls run the apps' ``main`` in this process (`call_app`: no interpreter to start and
import for each; none of them is about the command line), and one peer process scores both
exports (torch and transformers imported once).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tests_integration._helpers_apps import call_app, call_train, check_ok
from tests_integration._hf_peer import run_peer
from tjx import ckpt, data, nn

TOKENS = np.random.default_rng(1).integers(0, 50257, size=(2, 16))
COMMON = dict(
    vocab_size=50257,
    hidden_size=32,
    intermediate_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    bos_token_id=None,
    eos_token_id=None,
)
CONFIG = dict(model_type="llama", num_hidden_layers=2, **COMMON)
#: A Gated DeltaNet layer, then attention (tjx's ``mixer_pattern`` from ``layer_types``).
QWEN3_5 = dict(
    model_type="qwen3_5_text",
    num_hidden_layers=2,
    layer_types=["linear_attention", "full_attention"],
    head_dim=8,
    linear_num_key_heads=2,
    linear_num_value_heads=4,
    linear_key_head_dim=8,
    linear_value_head_dim=8,
    **COMMON,
)
#: HF config, transformers' class name, fine-tuning steps.
CASES = {
    "llama": (CONFIG, "LlamaForCausalLM", 4),
    "qwen3_5": (QWEN3_5, "Qwen3_5ForCausalLM", 4),
}
SETS = [
    "model.kind=llama",
    "data.seq_len=32",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.eval_every=0",
    "train.eval_batches=1",
    "train.sample_every=0",
    "optimizer.schedule.peak_lr=3e-3",
    "optimizer.schedule.warmup_steps=0",
    "sampling.max_new_tokens=8",
    "logging.sinks=[jsonl]",
]


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case's folder as transformers saves it (scored in ``peer.npz``), with GPT-2's
    ``tokenizer.json``: made in one peer process (torch and transformers imported once)."""
    root = tmp_path_factory.mktemp("made")
    jobs = [
        {"make": {"config": config, "tokens": TOKENS.tolist(), "new": 4}, "out": str(root / case)}
        for case, (config, _, _) in sorted(CASES.items())
    ]
    run_peer(jobs, root)
    for case in CASES:
        data.load_tokenizer("gpt2").save(root / case)  # type: ignore[attr-defined]
    return {case: root / case for case in CASES}


@pytest.fixture(scope="module")
def tuned(made: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each case fine-tuned from its folder (``CASE/ft``) and exported (``CASE/exported``), and
    transformers' scores of the exports (``CASE/back.npz``): one peer process for both."""
    root = tmp_path_factory.mktemp("tuned")
    np.save(root / "tokens.npy", TOKENS)
    scores = []
    for case in sorted(CASES):
        steps, work = CASES[case][2], root / case
        work.mkdir()
        sets = [*SETS, f"train.steps={steps}", f"train.checkpoint_every={steps}"]
        proc = call_train(work, "ft", [*sets, f"data.tokenizer={made[case]}"], "--init-from",
                          str(made[case]))  # fmt: skip
        check_ok(proc)
        out = ["--checkpoint", str(work / "ft"), "--export-hf", str(work / "exported")]
        check_ok(call_app("eval", out, work))
        scores.append({"score": str(work / "exported"), "tokens": str(root / "tokens.npy"),
                       "out": str(work / "back.npz"), "new": 4})  # fmt: skip
    run_peer(scores, root)
    return {case: root / case for case in CASES}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fine_tuned_hf_model_exports_with_tjx_final_logits(made, tuned, tmp_path, case: str):
    _, arch, steps = CASES[case]
    hf = made[case]
    if case == "llama":  # the refusal is the family's, not the model's: checked once
        wrong = call_train(tmp_path, "wrong", [f"data.tokenizer={hf}"], "--init-from", str(hf))
        assert wrong.returncode == 2 and "model.kind must be 'llama'" in wrong.stderr
        assert wrong.stderr.count("\n") == 1 and not (tmp_path / "wrong").exists()

    # The last step's samples: the generation cache of every layer kind, on 8 CPU devices.
    run = tuned[case] / "ft"
    assert (run / "samples" / f"step_{steps:07d}.txt").is_file()
    out = tuned[case] / "exported"
    assert (out / "tokenizer.json").is_file()
    peer = dict(np.load(tuned[case] / "back.npz"))
    assert str(peer["arch"]) == arch

    config = nn.config_from_dict(json.loads((run / "model.json").read_text()))
    model = nnx.eval_shape(lambda: nn.build_model(config, rngs=nnx.Rngs(0)))
    graphdef, abstract, rest = nnx.split(model, nnx.Param, ...)
    target = nnx.to_pure_dict(abstract)
    params = ckpt.restore_params(run / "checkpoints", target=target, step=steps)
    nnx.replace_by_pure_dict(abstract, params)
    model = nnx.merge(graphdef, abstract, nn.concrete_state(rest))
    final = np.asarray(nnx.jit(lambda m, t: m(t))(model, jnp.asarray(TOKENS, jnp.int32)))
    assert _rel(peer["logits"], final) < 1e-4
    before = dict(np.load(hf / "peer.npz"))["logits"]
    assert _rel(before, final) > 1e-3  # the fine-tune moved the weights
    assert jax.tree.leaves(params)
    if case != "llama":  # reading a HF folder is the family's: checked once
        return

    scored = call_app(
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
