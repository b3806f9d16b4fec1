"""Preference losses (DPO, IPO) and sequence log-probabilities, against float64 references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests.test_lora import llama, randomize_b


def _reference_loss(c, r, rc, rr, beta, loss_type, nc=None, nr=None):
    """float64 numpy: DPO's -log σ(βΔ) or TRL's length-normalised IPO, mean over pairs."""
    c, r, rc, rr = (np.asarray(v, np.float64) for v in (c, r, rc, rr))
    if loss_type == "sigmoid":
        z = beta * ((c - rc) - (r - rr))
        return float(np.mean(np.logaddexp(0.0, -z)))
    delta = (c - rc) / np.maximum(nc, 1) - (r - rr) / np.maximum(nr, 1)
    return float(np.mean((delta - 1 / (2 * beta)) ** 2))


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_the_preference_loss_and_its_gradient_match_a_float64_reference(loss_type: str):
    rng = np.random.default_rng()
    c, r, rc, rr = (jnp.asarray(rng.normal(-20, 5, 6), jnp.float32) for _ in range(4))
    nc, nr = (jnp.asarray(rng.integers(1, 30, 6), jnp.int32) for _ in range(2))
    beta = float(rng.uniform(0.05, 0.5))
    out = tnn.dpo_loss(c, r, rc, rr, beta=beta, loss_type=loss_type, chosen_tokens=nc,
                       rejected_tokens=nr)  # fmt: skip
    expected = _reference_loss(c, r, rc, rr, beta, loss_type, np.asarray(nc), np.asarray(nr))
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(out.chosen_rewards), beta * np.asarray(c - rc), rtol=1e-5)
    # d loss / d chosen_logps by central differences of the float64 reference.
    kw = dict(beta=beta, loss_type=loss_type, chosen_tokens=nc, rejected_tokens=nr)
    grad = jax.grad(lambda x: tnn.dpo_loss(x, r, rc, rr, **kw).loss)(c)
    eps = 1e-4
    for i in range(6):
        hi, lo = np.asarray(c, np.float64).copy(), np.asarray(c, np.float64).copy()
        hi[i] += eps
        lo[i] -= eps
        f = (
            _reference_loss(hi, r, rc, rr, beta, loss_type, np.asarray(nc), np.asarray(nr))
            - _reference_loss(lo, r, rc, rr, beta, loss_type, np.asarray(nc), np.asarray(nr))
        ) / (2 * eps)
        np.testing.assert_allclose(float(grad[i]), f, rtol=1e-3, atol=1e-6)
    # The reference's log-probabilities take no gradient.
    assert (
        float(jnp.abs(jax.grad(lambda x: tnn.dpo_loss(c, r, x, rr, beta=beta).loss)(rc)).max()) == 0
    )


def test_metrics_are_means_over_real_pairs_only():
    c, r = jnp.array([-1.0, -5.0, 0.0]), jnp.array([-2.0, -1.0, 0.0])
    zero = jnp.zeros(3)
    out = tnn.dpo_loss(c, r, zero, zero, beta=0.5, valid=jnp.array([True, True, False]))
    metrics = {k: float(v) for k, v in out.metrics().items()}
    assert metrics["rewards/accuracies"] == 0.5
    np.testing.assert_allclose(metrics["rewards/margins"], 0.5 * ((1.0 - 4.0) / 2))
    np.testing.assert_allclose(metrics["rewards/chosen"], 0.5 * (-3.0))
    np.testing.assert_allclose(
        float(out.loss), _reference_loss(c[:2], r[:2], zero[:2], zero[:2], 0.5, "sigmoid")
    )


def test_sums_over_split_batches_give_the_whole_batchs_means():
    rng = np.random.default_rng()
    c, r, rc, rr = (jnp.asarray(rng.normal(size=6), jnp.float32) for _ in range(4))
    valid = jnp.array([True, True, False, True, True, True])
    whole = tnn.dpo_loss(c, r, rc, rr, beta=0.3, valid=valid)
    parts = [tnn.dpo_loss(c[s], r[s], rc[s], rr[s], beta=0.3, valid=valid[s]).sums()
             for s in (slice(0, 2), slice(2, 6))]  # fmt: skip
    summed = {k: parts[0][k] + parts[1][k] for k in parts[0]}
    assert float(summed["pairs"]) == 5.0
    means = tnn.preference_means(summed)
    np.testing.assert_allclose(float(means["loss"]), float(whole.loss), rtol=1e-6)
    for key, value in whole.metrics().items():
        np.testing.assert_allclose(float(means[key]), float(value), rtol=1e-6, atol=1e-7)
    ranked = (np.asarray(c) > np.asarray(r))[np.asarray(valid)].mean()  # no reference in it
    np.testing.assert_allclose(float(means["logps/accuracies"]), ranked, rtol=1e-6)
    empty = tnn.dpo_loss(c[:1], r[:1], rc[:1], rr[:1], valid=jnp.array([False])).sums()
    assert all(float(v) == 0.0 for v in tnn.preference_means(empty).values())


def test_held_out_metrics_add_every_batchs_sums_and_weigh_each_real_pair_the_same():
    rng = np.random.default_rng()
    c, r, rc, rr = (jnp.asarray(rng.normal(size=7), jnp.float32) for _ in range(4))
    valid = jnp.array([True, False, True, True, True, True, False])
    whole = tnn.dpo_loss(c, r, rc, rr, beta=0.2, valid=valid)
    batches = (slice(0, 3), slice(3, 6), slice(6, 7))  # the last one only padding
    sums = (
        tnn.dpo_loss(c[s], r[s], rc[s], rr[s], beta=0.2, valid=valid[s]).sums() for s in batches
    )
    held = tnn.heldout_preference(sums, empty="none")
    assert held["pairs"] == 5.0
    np.testing.assert_allclose(held["loss"], float(whole.loss), rtol=1e-6)
    for key, value in whole.metrics().items():
        np.testing.assert_allclose(held[key], float(value), rtol=1e-6, atol=1e-7)
    padding = tnn.dpo_loss(c[:1], r[:1], rc[:1], rr[:1], valid=jnp.array([False])).sums()
    for batches_of_nothing in ([], [padding]):
        with pytest.raises(ValueError, match="^no pairs here$"):
            tnn.heldout_preference(batches_of_nothing, empty="no pairs here")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"beta": 0.0}, "PreferenceConfig.beta must be a number > 0"),
     ({"loss_type": "hinge"}, "PreferenceConfig.loss_type must be one of")],
)  # fmt: skip
def test_a_preference_config_refuses_what_the_loss_cannot_take(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        tnn.PreferenceConfig(**kwargs)
    assert tnn.PreferenceConfig().beta == 0.1


def _pair_batch(rng: np.random.Generator, pairs: int = 3, s: int = 12) -> dict[str, jax.Array]:
    """Rows 2i / 2i+1: a shared prompt, then different completions; the last pair is padding."""
    inputs = rng.integers(0, 40, (2 * pairs, s))
    targets = np.full((2 * pairs, s), -100)
    for i in range(pairs - 1):
        prompt = int(rng.integers(2, 6))
        inputs[2 * i + 1, :prompt] = inputs[2 * i, :prompt]
        for row in (2 * i, 2 * i + 1):
            end = int(rng.integers(prompt + 1, s))
            targets[row, prompt - 1 : end] = rng.integers(0, 40, end - prompt + 1)
    seg = (np.arange(2 * pairs) < 2 * pairs - 2)[:, None] * np.ones((1, s), int)
    return {"inputs": jnp.asarray(inputs, jnp.int32), "targets": jnp.asarray(targets, jnp.int32),
            "segment_ids": jnp.asarray(seg, jnp.int32)}  # fmt: skip


def test_sequence_log_probabilities_sum_each_rows_scored_targets_chunked_or_not():
    rng = np.random.default_rng()
    model, batch = llama(False), _pair_batch(rng)
    logits = np.asarray(model(batch["inputs"], segment_ids=batch["segment_ids"]), np.float64)
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
    logp -= logits.max(-1, keepdims=True)
    targets = np.asarray(batch["targets"])
    picked = np.take_along_axis(logp, np.maximum(targets, 0)[..., None], -1)[..., 0]
    expected = np.where(targets != -100, picked, 0).sum(-1)
    for chunked in (True, False):
        sums, counts = tnn.sequence_logprobs(model, batch, chunked=chunked, chunk_size=8)
        np.testing.assert_allclose(np.asarray(sums), expected, rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(np.asarray(counts), (targets != -100).sum(-1))


def test_dpo_with_lora_takes_the_base_as_reference_and_trains_only_the_adapters():
    rng = np.random.default_rng()
    model, batch = llama(True), _pair_batch(rng)
    tnn.add_lora(model, tnn.LoraConfig(rank=2, targets=("q", "v", "up")), rngs=nnx.Rngs(0))
    start = tnn.preference_loss(model, batch, beta=0.2)
    assert float(start.loss) == pytest.approx(np.log(2.0), abs=1e-7)  # policy == reference
    assert np.asarray(start.valid).tolist() == [True, True, False]
    randomize_b(model)
    graphdef, lora, frozen, rest = nnx.split(model, nnx.LoRAParam, nnx.Param, ...)
    lora, frozen = nnx.to_pure_dict(lora), nnx.to_pure_dict(frozen)

    def loss(adapters: dict, frozen: dict, batch: dict) -> jax.Array:
        return tnn.preference_loss(
            nnx.merge(graphdef, adapters, frozen, rest), batch, beta=0.2
        ).loss

    # Jitted, with the random weights and batch as arguments: one program, which the persistent
    # compilation cache serves on the next run (eagerly, each op of the forward and backward
    # pass was traced, lowered and looked up on its own).
    value, grads = jax.jit(jax.value_and_grad(loss))(lora, frozen, batch)
    # The same loss from the pieces: the base model's log-probabilities as constants.
    policy, _ = tnn.sequence_logprobs(model, batch)
    base, _ = tnn.sequence_logprobs(tnn.adapters_off(model), batch)
    expected = _reference_loss(policy[0:4:2], policy[1:4:2], base[0:4:2], base[1:4:2], 0.2,
                               "sigmoid")  # fmt: skip
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    assert float(sum(jnp.abs(g).sum() for g in jax.tree.leaves(grads))) > 0
    with pytest.raises(ValueError, match="DPO needs a reference model"):
        tnn.preference_loss(llama(False), batch)
    with pytest.raises(ValueError, match="rows in pairs"):
        tnn.preference_loss(model, {k: v[:3] for k, v in batch.items()})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(beta=0.0), "beta must be > 0"),
        (dict(loss_type="hinge"), "loss_type must be one of"),
        (dict(loss_type="ipo"), "ipo loss needs chosen_tokens"),
    ],
)
def test_a_bad_preference_setting_is_one_error(kwargs: dict, message: str):
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match=message):
        tnn.dpo_loss(x, x, x, x, **kwargs)


def test_the_sft_loss_is_the_mean_over_the_batchs_assistant_tokens_not_per_sequence():
    rng = np.random.default_rng()
    model = llama(False)
    inputs = jnp.asarray(rng.integers(0, 40, (2, 12)), jnp.int32)
    logits = model(inputs).astype(jnp.float32)
    # The short answer is the model's likeliest tokens, the long one its least likely: their
    # mean losses differ whatever the draw (random targets' could nearly tie, and then the
    # per-token and per-sequence averages too).
    targets = np.full((2, 12), -100)
    targets[0, 2:4] = np.asarray(jnp.argmax(logits[0, 2:4], -1))  # a short answer
    targets[1, 1:11] = np.asarray(jnp.argmin(logits[1, 1:11], -1))  # a long one
    batch = {"inputs": inputs, "targets": jnp.asarray(targets, jnp.int32)}
    out = tnn.objective_loss(model, batch, chunked=False)
    picked = jnp.maximum(batch["targets"], 0)[..., None]
    nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), picked, -1)[..., 0]
    mask = batch["targets"] != -100
    per_token = tnn.masked_mean(nll, mask)
    np.testing.assert_allclose(float(out.loss), float(per_token), rtol=1e-5)
    assert int(out.num_tokens) == 12
    per_sequence = np.mean([float(tnn.masked_mean(nll[i], mask[i])) for i in range(2)])
    assert abs(per_sequence - float(per_token)) > 1e-3  # the two averages differ here
    assert float(tnn.masked_mean(nll, jnp.zeros_like(mask))) == 0.0
