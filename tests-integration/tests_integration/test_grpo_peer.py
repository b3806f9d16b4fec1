"""tjx's GRPO loss against TRL's ``GRPOTrainer`` (PyTorch and TRL in the scratch peer venv).

A small random Llama is saved with ``save_hf``; fixed rollouts (prompts of one length,
completions right-padded with their masks, group advantages from random rewards, the sampling
policy's and the reference's log-probabilities as the policy's own plus noise, so that ratios
clip and the KL is not 0) go to TRL's ``_compute_loss`` for each loss variant (`VARIANTS`: the
four aggregations, GSPO's sequence-level ratio, cispo, sapo, luspo, vespo, two-sided clipping,
the off-policy and high-entropy masks, the entropy bonus). tjx's ``token_logprobs_and_entropies``
equals TRL's per-token log-probabilities and entropies, and tjx-nn's ``grpo_loss`` on them equals
TRL's loss within 1e-5, its gradient (every weight) TRL's ``loss.backward()`` within 1e-5 of the
largest, and its metrics are the ones TRL logged, by name and value. One peer process.
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
#: The settings every variant shares (TRL's GRPOConfig names, tjx's GrpoConfig's).
COMMON = {"beta": 0.04, "epsilon": 0.2, "epsilon_high": 0.28}
#: Each variant's own settings (issue #72), the same dict on both sides.
VARIANTS: dict[str, dict[str, Any]] = {
    **{kind: {"loss_type": kind} for kind in ("grpo", "bnpo", "dr_grpo", "dapo")},
    # GSPO as its paper runs it: one ratio per completion, its small clip range, grpo's average.
    "gspo": {
        "loss_type": "grpo",
        "importance_sampling_level": "sequence",
        "epsilon": 3e-4,
        "epsilon_high": 4e-4,
    },
    # GSPO's ratio under a token sum, with DeepSeek-V3.2's off-policy sequence mask.
    "gspo-dapo-off-policy": {
        "loss_type": "dapo",
        "importance_sampling_level": "sequence",
        "off_policy_mask_threshold": 0.05,
    },
    "dapo-two-sided": {"loss_type": "dapo", "delta": 1.4},
    "cispo": {"loss_type": "cispo", "epsilon_high": 1.2},
    "sapo": {"loss_type": "sapo", "sapo_temperature_neg": 1.3},
    "luspo": {"loss_type": "luspo", "importance_sampling_level": "sequence"},
    "vespo": {"loss_type": "vespo", "vespo_k_pos": 1.5},
    # The high-entropy token mask and the entropy bonus (differentiated through the entropies).
    "entropy": {"loss_type": "dapo", "top_entropy_quantile": 0.4, "entropy_coef": 0.02},
}


def _batch(data: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    """Prompt + completion as tjx's layout: targets are the completion tokens its mask keeps."""
    ids = np.concatenate([data["prompt_ids"], data["completion_ids"]], axis=1)
    scored = np.concatenate([np.zeros_like(data["prompt_ids"]), data["completion_mask"]], axis=1)
    targets = np.where(scored[:, 1:] == 1, ids[:, 1:], -100)
    return {"inputs": jnp.asarray(ids[:, :-1], jnp.int32),
            "targets": jnp.asarray(targets, jnp.int32)}  # fmt: skip


def _completion_stats(model: nn.Llama, batch: dict[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """The completion tokens' log-probabilities and entropies ``[rows, LENGTH]``."""
    logps, entropies = nn.token_logprobs_and_entropies(model, batch)
    return logps[:, PROMPT_LEN - 1 :], entropies[:, PROMPT_LEN - 1 :]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    work = tmp_path_factory.mktemp("grpo-peer")
    rng = np.random.default_rng()
    tok_folder = make_tokenizer_folder(work / "tok", "llama3", TEMPLATES["llama3"][1])
    tokenizer = load_tokenizer(tok_folder)
    config = nn.LlamaConfig(vocab_size=tokenizer.vocab_size, max_seq_len=32, d_model=32,
                            num_layers=2, num_heads=4, num_kv_heads=2, mlp=nn.MLPConfig(dim=48),
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
    mask = (np.arange(LENGTH)[None] < lengths[:, None]).astype(np.int64)
    data["completion_mask"] = mask
    rewards = rng.normal(size=rows).astype(np.float32)
    adv = np.asarray(nn.group_advantages(jnp.asarray(rewards), GROUP))
    data["advantages"] = adv
    own = np.asarray(_completion_stats(model, _batch(data))[0], np.float64)
    noise = rng.normal(0, 0.3, own.shape)
    # Two completions whose mean log-ratio is ±0.5 with their advantage's sign, whatever the
    # noise: a sequence-level ratio (GSPO) clips above and below, cispo's cap bites, the
    # off-policy mask drops the negative one. That one's first token has a ratio of e^0.8
    # (its others lower): two-sided clipping caps it.
    for row, sign in ((int(np.argmax(adv)), 1.0), (int(np.argmin(adv)), -1.0)):
        n = mask[row].sum()
        if sign < 0:  # log-ratio (-noise) 0.8 on token 0, the others bringing the mean to -0.5
            noise[row, 0] = -0.8
            rest = (noise[row, 1:] * mask[row, 1:]).sum()
            noise[row, 1:] += (0.5 * n + 0.8 - rest) / (n - 1)
        mean_noise = (noise[row] * mask[row]).sum() / n
        noise[row] += -sign * 0.5 - mean_noise
    data["old_logps"] = (own + noise).astype(np.float32)
    data["ref_logps"] = (own + rng.normal(0, 0.3, own.shape)).astype(np.float32)
    np.savez(work / "rollout.npz", **data)
    common = {"policy": str(work / "policy"), "npz": str(work / "rollout.npz"), "group": GROUP}
    jobs = []
    for name, settings in VARIANTS.items():  # one peer process for all of them
        spec = {**common, "settings": {**COMMON, **settings}, "workdir": str(work / f"trl-{name}")}
        jobs.append({"grpo": spec, "out": str(work / f"{name}.npz")})
    run_peer(jobs, work)
    return {"work": work, "model": model, "data": data,
            "peer": {k: dict(np.load(work / f"{k}.npz")) for k in VARIANTS}}  # fmt: skip


def _close(ours: np.ndarray, theirs: np.ndarray) -> None:
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= 1e-5 * max(1.0, float(np.abs(theirs).max()))


def test_token_log_probabilities_and_entropies_equal_trls(run: dict[str, Any]):
    logps, entropies = (np.asarray(x) for x in _completion_stats(run["model"], _batch(run["data"])))
    mask = run["data"]["completion_mask"] == 1
    _close(logps[mask], run["peer"]["grpo"]["logps"][mask])
    _close(entropies[mask], run["peer"]["grpo"]["entropies"][mask])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_grpo_loss_its_gradient_and_metrics_equal_trls(run: dict[str, Any], variant: str):
    peer, data, work = run["peer"][variant], run["data"], run["work"]
    graphdef, params, rest = nnx.split(run["model"], nnx.Param, ...)
    params = nnx.to_pure_dict(params)
    batch = _batch(data)
    settings = {**COMMON, **VARIANTS[variant]}
    cfg = nn.GrpoConfig(**settings)

    def loss(p: dict, config: nn.GrpoConfig = cfg) -> tuple[jax.Array, nn.GrpoOutput]:
        logps, entropies = _completion_stats(nnx.merge(graphdef, p, rest), batch)
        out = nn.grpo_loss(logps, jnp.asarray(data["old_logps"]),
                           jnp.asarray(data["advantages"]), jnp.asarray(data["completion_mask"]),
                           config=config, ref_logps=jnp.asarray(data["ref_logps"]),
                           entropies=entropies)  # fmt: skip
        return out.loss, out

    (value, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    assert abs(float(value) - float(peer["loss"])) <= 1e-5 * max(1.0, abs(float(peer["loss"])))
    # The variant's own settings act on this rollout: without them the loss is another.
    own = [k for k in VARIANTS[variant] if k not in ("loss_type", "epsilon", "epsilon_high")]
    if own and cfg.loss_type != "luspo":  # (luspo needs its sequence level)
        plain = nn.GrpoConfig(**{k: v for k, v in settings.items() if k not in own})
        assert abs(float(loss(params, plain)[0]) - float(peer["loss"])) > 1e-4, own
    metrics = {k: float(v) for k, v in out.metrics().items()}
    assert metrics["kl"] > 0  # the KL term is exercised; so is each variant's clip or cap:
    clipped = {"cispo": "cispo_clip_ratio", "sapo": None, "vespo": None}.get(
        cfg.loss_type, "clip_ratio/region_mean"
    )
    assert clipped is None or metrics[clipped] > 0, metrics
    holder = nnx.merge(graphdef, grads, rest)
    nn.save_hf(holder, work / f"grads-{variant}")
    ours = load_file(str(work / f"grads-{variant}" / "model.safetensors"))
    theirs = {k.removeprefix("grad:"): v for k, v in peer.items() if k.startswith("grad:")}
    assert sorted(ours) == sorted(theirs)
    for name, value_ in theirs.items():
        _close(ours[name], value_)
    logged = json.loads(str(peer["metrics"]))
    assert set(metrics) == set(logged), (sorted(metrics), sorted(logged))  # TRL's names, all
    for name, value_ in metrics.items():
        assert abs(value_ - logged[name]) <= 1e-5 * max(1.0, abs(logged[name])), name
