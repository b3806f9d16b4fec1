"""GRPO's advantages, token log-probabilities and loss, against float64 NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx import nn as tnn
from tjx_nn_tests._helpers import build, llama_tiny


def _advantages(rewards: np.ndarray, g: int, scale: str) -> np.ndarray:
    """float64: reward less the group mean, over the (Bessel) std + 1e-4 (TRL's formula)."""
    r = np.asarray(rewards, np.float64)
    groups = r.reshape(-1, g)
    adv = (groups - groups.mean(1, keepdims=True)).reshape(-1)
    if scale == "group":
        return adv / (np.repeat(groups.std(1, ddof=1), g) + 1e-4)
    if scale == "batch":
        return adv / (r.std(ddof=1) + 1e-4)
    return adv


def _loss(logps, old, adv, mask, ref, *, beta, eps, eps_high, loss_type, correct=True, total=None):
    """float64 NumPy of the module docstring's per-token loss and aggregations."""
    logps, old, ref, mask = (np.asarray(x, np.float64) for x in (logps, old, ref, mask))
    a = np.asarray(adv, np.float64)[:, None]
    ratio = np.exp(logps - old)
    per = -np.minimum(ratio * a, np.clip(ratio, 1 - eps, 1 + eps_high) * a)
    if beta > 0:
        kl = np.exp(ref - logps) - (ref - logps) - 1
        per = per + beta * (kl * ratio if correct else kl)
    if loss_type == "grpo":
        return np.mean((per * mask).sum(-1) / np.maximum(mask.sum(-1), 1))
    if loss_type == "bnpo":
        return (per * mask).sum() / max(mask.sum(), 1)
    if loss_type == "dr_grpo":
        return (per * mask).sum() / (per.shape[0] * per.shape[1])
    return (per * mask).sum() / max(mask.sum() if total is None else total, 1)


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_are_the_reward_less_its_group_mean_over_the_chosen_std(scale: str):
    rng = np.random.default_rng()
    g = int(rng.integers(2, 6))
    rewards = rng.normal(size=3 * g).astype(np.float32)
    rewards[:g] = 1.0  # a group whose completions all scored alike: advantages of exactly 0
    got = np.asarray(tnn.group_advantages(jnp.asarray(rewards), g, scale=scale))
    np.testing.assert_allclose(got, _advantages(rewards, g, scale), rtol=1e-5, atol=1e-6)
    assert np.all(got[:g] == 0.0)


def test_a_batch_that_does_not_split_into_groups_is_refused():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        tnn.group_advantages(jnp.zeros(6), 4)
    with pytest.raises(ValueError, match="groups of 1"):
        tnn.group_advantages(jnp.zeros(6), 1)
    with pytest.raises(ValueError, match="scale"):
        tnn.group_advantages(jnp.zeros(6), 2, scale="median")


@pytest.mark.parametrize(
    "loss_type,correct", [*[(k, True) for k in tnn.GRPO_LOSSES], ("dapo", False)]
)
def test_the_grpo_loss_and_its_gradient_match_a_float64_reference(loss_type: str, correct: bool):
    rng = np.random.default_rng()
    rows, t = 6, 7
    logps = rng.uniform(-4, -0.1, (rows, t)).astype(np.float32)
    # Ratios far enough from 1 that both clips bite; the reference away from the policy: a KL.
    old = (logps + rng.normal(0, 0.4, (rows, t))).astype(np.float32)
    ref = (logps + rng.normal(0, 0.3, (rows, t))).astype(np.float32)
    mask = (rng.uniform(size=(rows, t)) < 0.8).astype(np.float32)
    mask[-1] = 0.0  # a completion with no token: counted in grpo's mean, as TRL counts it
    adv = rng.normal(size=rows).astype(np.float32)
    cfg = tnn.GrpoConfig(
        beta=0.04, epsilon=0.2, epsilon_high=0.28, loss_type=loss_type, kl_correction=correct
    )
    kw = dict(beta=0.04, eps=0.2, eps_high=0.28, loss_type=loss_type, correct=correct)

    def loss(x):
        return tnn.grpo_loss(x, jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask),
                             config=cfg, ref_logps=jnp.asarray(ref))  # fmt: skip

    out = loss(jnp.asarray(logps))
    # The loss is a mean of ~40 signed float32 terms of size ~1 that may cancel to ~1e-3 (a
    # relative 1.3e-5 was seen on 2026-11-27): relative to the terms, not to the sum.
    want = _loss(logps, old, adv, mask, ref, **kw)
    np.testing.assert_allclose(float(out.loss), want, rtol=1e-5, atol=1e-6)
    # d loss / d logps by central differences of the float64 reference, on tokens away from a
    # clip's edge (where the objective has a kink).
    grad = np.asarray(jax.grad(lambda x: loss(x).loss)(jnp.asarray(logps)))
    ratio = np.exp(logps.astype(np.float64) - old)
    eps = 1e-6
    checked = 0
    for i, j in zip(*np.nonzero(mask), strict=True):
        if min(abs(ratio[i, j] - 0.8), abs(ratio[i, j] - 1.28)) < 1e-3:
            continue
        hi, lo = logps.astype(np.float64), logps.astype(np.float64)  # two fresh copies
        hi[i, j] += eps
        lo[i, j] -= eps
        fd = (_loss(hi, old, adv, mask, ref, **kw) - _loss(lo, old, adv, mask, ref, **kw)) / (
            2 * eps
        )
        np.testing.assert_allclose(grad[i, j], fd, rtol=1e-3, atol=1e-6)
        checked += 1
    assert checked > rows
    assert np.all(grad[mask == 0] == 0.0)  # masked tokens get no gradient


def test_the_logged_shares_count_clipped_tokens_of_the_right_sign():
    logps = jnp.zeros((1, 4))
    old = jnp.log(jnp.array([[1 / 0.5, 1 / 0.5, 1 / 2.0, 1.0]]))  # ratios 0.5, 0.5, 2, 1
    mask = jnp.ones((1, 4))
    cfg = tnn.GrpoConfig(epsilon=0.2)
    neg = tnn.grpo_loss(logps, old, jnp.array([-1.0]), mask, config=cfg)
    pos = tnn.grpo_loss(logps, old, jnp.array([1.0]), mask, config=cfg)
    assert float(neg.clip_low) == 0.5 and float(neg.clip_high) == 0.0
    assert float(pos.clip_high) == 0.25 and float(pos.clip_low) == 0.0
    assert float(pos.clip_region) == 0.25 and float(pos.kl) == 0.0 and float(pos.tokens) == 4
    assert set(pos.metrics()) == {
        "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"
    }  # fmt: skip


def test_dapo_divides_by_the_whole_generation_batchs_tokens_when_given():
    rng = np.random.default_rng()
    logps = jnp.asarray(rng.uniform(-3, -0.5, (4, 5)), jnp.float32)
    mask, adv = jnp.ones((4, 5)), jnp.asarray(rng.normal(size=4), jnp.float32)
    cfg = tnn.GrpoConfig(loss_type="dapo")
    own = tnn.grpo_loss(logps, logps, adv, mask, config=cfg)
    whole = tnn.grpo_loss(logps, logps, adv, mask, config=cfg, total_tokens=jnp.asarray(60.0))
    np.testing.assert_allclose(float(whole.loss) * 60, float(own.loss) * 20, rtol=1e-6)


def test_a_kl_penalty_without_the_references_log_probabilities_is_refused():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="ref_logps"):
        tnn.grpo_loss(x, x, jnp.zeros(2), x, config=tnn.GrpoConfig(beta=0.1))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"beta": -0.1}, "beta must be a number >= 0"),
        ({"epsilon": 0}, "epsilon must be a number > 0"),
        ({"epsilon_high": True}, "epsilon_high"),
        ({"loss_type": "ppo"}, "loss_type"),
        ({"scale_rewards": "max"}, "scale_rewards"),
    ],
)
def test_a_bad_grpo_setting_names_itself(kw, match):
    with pytest.raises(ValueError, match=match):
        tnn.GrpoConfig(**kw)


def test_token_log_probabilities_are_the_targets_log_softmax_and_sum_to_the_sequences():
    model = build(llama_tiny())
    rng = np.random.default_rng()
    inputs = rng.integers(0, model.config.vocab_size, (3, 8)).astype(np.int32)
    targets = rng.integers(0, model.config.vocab_size, (3, 8)).astype(np.int32)
    targets[:, :3] = -100  # the prompt is not scored
    batch = {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(targets)}
    got = np.asarray(tnn.token_logprobs(model, batch))
    logits = np.asarray(model(batch["inputs"], deterministic=True), np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], -1)[..., 0] - logz
    np.testing.assert_allclose(got, np.where(targets != -100, picked, 0.0), atol=2e-5)
    sums, _ = tnn.sequence_logprobs(model, batch, chunked=False)
    np.testing.assert_allclose(got.sum(-1), np.asarray(sums), rtol=1e-5)
