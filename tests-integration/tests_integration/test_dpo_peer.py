"""tjx's DPO against TRL's ``DPOTrainer`` (PyTorch, PEFT and TRL in a scratch venv).

A small random Llama with a Llama-3-style tokenizer folder (`_chat_fixtures`) is saved with
``save_hf``. TRL's trainer runs two fixed batches of three preference pairs, in dataset order:

1. chat pairs, the sigmoid loss, LoRA: the policy is the base + tjx's adapters (``save_peft``,
   random ``B``), the reference the same model with the adapters disabled;
2. plain-text pairs, the IPO loss, full fine-tuning: the policy is another checkpoint (the LoRA
   model merged), the reference the base.

tjx-data's preference encoding equals TRL's collated ids and completion masks token for token;
tjx-nn's ``preference_loss`` on those ids equals TRL's ``compute_loss`` within 1e-5, its gradient
(every adapter, or every weight) TRL's ``loss.backward()`` within 1e-5 of the largest, and its
metrics (rewards, margins, accuracy, log-probabilities) TRL's logged ones. One peer process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import load_file

from tests_integration._chat_fixtures import TEMPLATES, make_tokenizer_folder
from tests_integration._hf_peer import run_peer
from tjx import nn
from tjx.data import ChatEncoder, ChatTemplate, load_tokenizer

BETA = 0.1
WORDS = "the quick brown fox What is capital Paris legs spider Eight 42 Café naïve 東京".split()
LORA = nn.LoraConfig(rank=4, alpha=8.0, targets=("q", "v", "o", "up", "down"))


def _rows(rng: np.random.Generator, chat: bool) -> list[dict[str, Any]]:
    def text(lo: int, hi: int) -> str:
        return " ".join(rng.choice(WORDS, int(rng.integers(lo, hi))))

    rows = []
    for _ in range(3):
        prompt, chosen, rejected = text(2, 7), text(1, 6), text(1, 6)
        if chat:
            rows.append({"prompt": [{"role": "user", "content": prompt}],
                         "chosen": [{"role": "assistant", "content": chosen}],
                         "rejected": [{"role": "assistant", "content": rejected}]})  # fmt: skip
        else:
            rows.append({"prompt": prompt, "chosen": " " + chosen, "rejected": " " + rejected})
    return rows


def _tjx_batch(peer: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """TRL's [chosen..., rejected...] rows as tjx's preference layout (pair i in rows 2i, 2i+1)."""
    ids, completion, attention = peer["input_ids"], peer["completion_mask"], peer["attention_mask"]
    n = ids.shape[0] // 2
    order = np.stack([np.arange(n), np.arange(n) + n], axis=1).reshape(-1)
    targets = np.where(completion[:, 1:] == 1, ids[:, 1:], -100)
    return {"inputs": jnp.asarray(ids[order, :-1], jnp.int32),
            "targets": jnp.asarray(targets[order], jnp.int32),
            "segment_ids": jnp.asarray(attention[order, :-1], jnp.int32)}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("dpo-peer")
    rng = np.random.default_rng()
    tok_folder = make_tokenizer_folder(work / "tok", "llama3", TEMPLATES["llama3"][1])
    tokenizer = load_tokenizer(tok_folder)
    config = nn.LlamaConfig(vocab_size=tokenizer.vocab_size, max_seq_len=64, d_model=32,
                            num_layers=2, num_heads=4, num_kv_heads=2, mlp=nn.MLPConfig(dim=48),
                            tie_embeddings=False)  # fmt: skip
    model = nn.Llama(config, rngs=nnx.Rngs(int(rng.integers(1 << 20))))
    nn.save_hf(model, work / "base", tokenizer_from=tok_folder)
    nn.add_lora(model, LORA, rngs=nnx.Rngs(int(rng.integers(1 << 20))))
    key = jax.random.key(int(rng.integers(1 << 20)))
    for i, (_, _, dense) in enumerate(nn.lora.lora_modules(model)):
        b = dense.lora.lora_b  # type: ignore[union-attr]
        b.set_value(0.3 * jax.random.normal(jax.random.fold_in(key, i), b[...].shape))
    nn.save_peft(model, work / "adapter", LORA, base_model=str(work / "base"))
    nn.save_hf(model, work / "policy", tokenizer_from=tok_folder)
    rows = {"lora": _rows(rng, chat=True), "full": _rows(rng, chat=False)}
    common = {"base": str(work / "base"), "beta": BETA, "workdir": str(work / "trl")}
    run_peer(
        [{"dpo": {**common, "adapter": str(work / "adapter"), "rows": rows["lora"],
                  "loss_type": "sigmoid"}, "out": str(work / "lora.npz")},
         {"dpo": {**common, "policy": str(work / "policy"), "rows": rows["full"],
                  "loss_type": "ipo"}, "out": str(work / "full.npz")}],  # fmt: skip
        work,
    )
    encoder = ChatEncoder(tokenizer, ChatTemplate.from_folder(tok_folder))
    return {"work": work, "model": model, "rows": rows, "encoder": encoder,
            "peer": {k: dict(np.load(work / f"{k}.npz")) for k in ("lora", "full")}}  # fmt: skip


@pytest.mark.parametrize("case", ["lora", "full"])
def test_preference_pairs_encode_as_trl_collates_them(run: dict[str, Any], case: str):
    peer, n = run["peer"][case], len(run["rows"][case])
    for i, row in enumerate(run["rows"][case]):
        pair = run["encoder"].encode_pair(row)
        for r, side in ((i, pair.chosen), (n + i, pair.rejected)):
            length = int(peer["attention_mask"][r].sum())
            assert side.ids.tolist() == peer["input_ids"][r, :length].tolist()
            assert side.mask.astype(int).tolist() == peer["completion_mask"][r, :length].tolist()


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, float(np.abs(theirs).max()))


def test_lora_dpo_loss_gradient_and_metrics_equal_trls(run: dict[str, Any]):
    peer, model = run["peer"]["lora"], run["model"]
    graphdef, lora, frozen, rest = nnx.split(model, nnx.LoRAParam, nnx.Param, ...)
    lora, frozen = nnx.to_pure_dict(lora), nnx.to_pure_dict(frozen)
    batch = _tjx_batch(peer)

    def loss(
        adapters: dict, frozen: dict, rest: nnx.State
    ) -> tuple[jax.Array, nn.PreferenceOutput]:
        out = nn.preference_loss(nnx.merge(graphdef, adapters, frozen, rest), batch, beta=BETA)
        return out.loss, out

    # One program (eager, the gradient is many small ones); the weights are its arguments.
    (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(lora, frozen, rest)
    assert abs(float(value) - float(peer["loss"])) <= 1e-5
    assert float(jnp.abs(out.chosen_rewards).max()) > 1e-3  # policy and reference differ
    # tjx's gradients in PEFT's layout: written through the exporter itself.
    holder = nnx.merge(graphdef, grads, frozen, rest)
    nn.save_peft(holder, run["work"] / "grads", LORA)
    ours = load_file(str(run["work"] / "grads" / "adapter_model.safetensors"))
    theirs = {k.removeprefix("grad:").replace(".default", ""): v for k, v in peer.items()
              if k.startswith("grad:")}  # fmt: skip
    assert sorted(ours) == sorted(theirs)
    for name, value_ in theirs.items():
        _close(ours[name], value_)
    _metrics_match(out, peer)


def test_full_fine_tuning_ipo_loss_gradient_and_metrics_equal_trls(run: dict[str, Any]):
    peer, work = run["peer"]["full"], run["work"]
    policy, _ = nn.load_hf(work / "policy")
    reference, _ = nn.load_hf(work / "base")
    graphdef, params, rest = nnx.split(policy, nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    ref_graphdef, ref_state = nnx.split(reference)
    batch = _tjx_batch(peer)

    def loss(p: dict, rest: nnx.State, ref: nnx.State) -> tuple[jax.Array, nn.PreferenceOutput]:
        out = nn.preference_loss(nnx.merge(graphdef, p, rest), batch, beta=BETA, loss_type="ipo",
                                 reference=nnx.merge(ref_graphdef, ref))  # fmt: skip
        return out.loss, out

    # One program, as the LoRA case's.
    (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params, rest, ref_state)
    assert abs(float(value) - float(peer["loss"])) <= 1e-5 * max(1.0, float(peer["loss"]))
    holder = nnx.merge(graphdef, grads, rest)
    nn.save_hf(holder, work / "grads-full")
    ours = load_file(str(work / "grads-full" / "model.safetensors"))
    theirs = {k.removeprefix("grad:"): v for k, v in peer.items() if k.startswith("grad:")}
    assert sorted(ours) == sorted(theirs)
    for name, value_ in theirs.items():
        _close(ours[name], value_)
    _metrics_match(out, peer)


def _metrics_match(out: nn.PreferenceOutput, peer: dict[str, np.ndarray]) -> None:
    theirs = json.loads(str(peer["metrics"]))
    ours = {k: float(v) for k, v in out.metrics().items()}
    for name in ours:
        assert abs(ours[name] - theirs[name]) <= 1e-5 * max(1.0, abs(theirs[name])), name


def test_the_exported_policy_is_what_trl_trained(run: dict[str, Any]):
    # A guard on the setup: the PEFT adapter and the merged policy are one model.
    work = run["work"]
    merged, _ = nn.load_hf(work / "policy")
    tokens = jnp.asarray(np.random.default_rng().integers(0, 300, (1, 8)), jnp.int32)
    np.testing.assert_allclose(np.asarray(merged(tokens)), np.asarray(run["model"](tokens)),
                               rtol=1e-5, atol=1e-5)  # fmt: skip
    assert Path(work / "adapter" / "adapter_config.json").is_file()
