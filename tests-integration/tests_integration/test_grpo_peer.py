"""tjx's GRPO loss against TRL's ``GRPOTrainer`` (PyTorch and TRL in the scratch peer venv).

A small random Llama is saved with ``save_hf``; fixed rollouts (prompts of one length,
completions right-padded with their masks, group advantages from random rewards, the sampling
policy's and the reference's log-probabilities as the policy's own plus noise, so that ratios
clip and the KL is not 0) go to TRL's ``_compute_loss`` for each aggregation (``loss_type``).
tjx's ``token_logprobs`` equals TRL's per-token log-probabilities, and tjx-nn's ``grpo_loss`` on
them equals TRL's loss within 1e-5, its gradient (every weight) TRL's ``loss.backward()`` within
1e-5 of the largest, and its ``kl`` and ``clip_ratio/*`` TRL's logged values. One peer process.
"""

from __future__ import annotations

import json
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
from tjx.data import load_tokenizer

PROMPTS, GROUP, PROMPT_LEN, LENGTH = 2, 3, 5, 6
SETTINGS = {"beta": 0.04, "epsilon": 0.2, "epsilon_high": 0.28}
LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _batch(data: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Prompt + completion as tjx's layout: targets are the completion tokens its mask keeps."""
    ids = np.concatenate([data["prompt_ids"], data["completion_ids"]], axis=1)
    scored = np.concatenate([np.zeros_like(data["prompt_ids"]), data["completion_mask"]], axis=1)
    targets = np.where(scored[:, 1:] == 1, ids[:, 1:], -100)
    return {"inputs": jnp.asarray(ids[:, :-1], jnp.int32),
            "targets": jnp.asarray(targets, jnp.int32)}  # fmt: skip


def _completion_logps(model: nn.Llama, batch: dict[str, jax.Array]) -> jax.Array:
    return nn.token_logprobs(model, batch)[:, PROMPT_LEN - 1 :]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("grpo-peer")
    rng = np.random.default_rng()
    tok_folder = make_tokenizer_folder(work / "tok", "llama3", TEMPLATES["llama3"][1])
    tokenizer = load_tokenizer(tok_folder)
    config = nn.LlamaConfig(vocab_size=tokenizer.vocab_size, max_seq_len=32, d_model=32,
                            num_layers=2, num_heads=4, num_kv_heads=2, mlp_dim=48,
                            tie_embeddings=False)  # fmt: skip
    model = nn.Llama(config, rngs=nnx.Rngs(int(rng.integers(1 << 20))))
    nn.save_hf(model, work / "policy", tokenizer_from=tok_folder)
    rows = PROMPTS * GROUP
    prompts = rng.integers(0, 200, (PROMPTS, PROMPT_LEN))
    data = {
        "prompt_ids": np.repeat(prompts, GROUP, axis=0),
        "completion_ids": rng.integers(0, 200, (rows, LENGTH)),
    }
    lengths = rng.integers(2, LENGTH + 1, rows)
    data["completion_mask"] = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int64)
    rewards = rng.normal(size=rows).astype(np.float32)
    data["advantages"] = np.asarray(nn.group_advantages(jnp.asarray(rewards), GROUP))
    own = np.asarray(_completion_logps(model, _batch(data)))
    data["old_logps"] = (own + rng.normal(0, 0.3, own.shape)).astype(np.float32)
    data["ref_logps"] = (own + rng.normal(0, 0.3, own.shape)).astype(np.float32)
    np.savez(work / "rollout.npz", **data)
    common = {"policy": str(work / "policy"), "npz": str(work / "rollout.npz"), "group": GROUP,
              **SETTINGS}  # fmt: skip
    run_peer(
        [{"grpo": {**common, "loss_type": kind, "workdir": str(work / f"trl-{kind}")},
          "out": str(work / f"{kind}.npz")} for kind in LOSSES],  # fmt: skip
        work,
    )
    return {"work": work, "model": model, "data": data,
            "peer": {k: dict(np.load(work / f"{k}.npz")) for k in LOSSES}}  # fmt: skip


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, float(np.abs(theirs).max()))


def test_token_log_probabilities_equal_trls(run: dict[str, Any]):
    ours = np.asarray(_completion_logps(run["model"], _batch(run["data"])))
    mask = run["data"]["completion_mask"] == 1
    _close(ours[mask], run["peer"]["grpo"]["logps"][mask])


@pytest.mark.parametrize("loss_type", LOSSES)
def test_the_grpo_loss_its_gradient_and_metrics_equal_trls(run: dict[str, Any], loss_type: str):
    peer, data, work = run["peer"][loss_type], run["data"], run["work"]
    graphdef, params, rest = nnx.split(run["model"], nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    batch = _batch(data)
    cfg = nn.GrpoConfig(loss_type=loss_type, **SETTINGS)

    def loss(p: dict) -> tuple[jax.Array, nn.GrpoOutput]:
        logps = _completion_logps(nnx.merge(graphdef, p, rest), batch)
        out = nn.grpo_loss(logps, jnp.asarray(data["old_logps"]),
                           jnp.asarray(data["advantages"]), jnp.asarray(data["completion_mask"]),
                           config=cfg, ref_logps=jnp.asarray(data["ref_logps"]))  # fmt: skip
        return out.loss, out

    (value, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    assert abs(float(value) - float(peer["loss"])) <= 1e-5 * max(1.0, abs(float(peer["loss"])))
    assert float(out.clip_region) > 0 and float(out.kl) > 0  # both terms are exercised
    holder = nnx.merge(graphdef, grads, rest)
    nn.save_hf(holder, work / f"grads-{loss_type}")
    ours = load_file(str(work / f"grads-{loss_type}" / "model.safetensors"))
    theirs = {k.removeprefix("grad:"): v for k, v in peer.items() if k.startswith("grad:")}
    assert sorted(ours) == sorted(theirs)
    for name, value_ in theirs.items():
        _close(ours[name], value_)
    logged = json.loads(str(peer["metrics"]))
    for name, value_ in out.metrics().items():
        assert abs(float(value_) - logged[name]) <= 1e-5, name
