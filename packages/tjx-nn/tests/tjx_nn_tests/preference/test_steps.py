"""Preference steps: `preference_loss` as pure functions of the params (train and held-out)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests.preference.test_losses import _pair_batch
from tjx_nn_tests.test_lora import llama, randomize_b


def _split(model: nnx.Module) -> tuple:
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
    return graphdef, nnx.to_pure_dict(params), rest


def test_the_loss_fn_is_the_preference_loss_against_the_given_reference_params():
    rng = np.random.default_rng()
    policy, batch = llama(False), _pair_batch(rng)
    graphdef, params, rest = _split(policy)
    reference = jax.tree.map(lambda x: x * 0.5, params)
    settings = tnn.PreferenceConfig(beta=0.3, loss_type="sigmoid")
    loss_fn = tnn.preference_loss_fn(graphdef, rest, settings, chunked=False)
    loss, aux = loss_fn(params, batch, jnp.int32(0), reference=reference)
    ref_model = nnx.merge(graphdef, reference, rest)
    expected = tnn.preference_loss(policy, batch, beta=0.3, reference=ref_model, chunked=False)
    np.testing.assert_allclose(float(loss), float(expected.loss), rtol=1e-6)
    assert float(aux["num_tokens"]) == float(aux["preference"]["pairs"]) == 2.0
    sums = tnn.preference_sums_fn(graphdef, rest, settings, chunked=False)(params, batch, reference)
    for key, value in expected.sums().items():
        np.testing.assert_allclose(float(sums[key]), float(value), rtol=1e-6)


def test_without_reference_params_the_steps_score_against_the_adapters_off():
    rng = np.random.default_rng()
    model, batch = llama(False), _pair_batch(rng)
    tnn.add_lora(model, tnn.LoraConfig(rank=2, targets=("q", "v")), rngs=nnx.Rngs(0))
    randomize_b(model)
    graphdef, params, rest = _split(model)
    settings = tnn.PreferenceConfig(beta=0.2, loss_type="ipo")
    loss, _ = tnn.preference_loss_fn(graphdef, rest, settings)(params, batch, jnp.int32(3))
    expected = tnn.preference_loss(model, batch, beta=0.2, loss_type="ipo")
    np.testing.assert_allclose(float(loss), float(expected.loss), rtol=1e-6)
    sums = jax.jit(tnn.preference_sums_fn(graphdef, rest, settings))(params, batch)
    np.testing.assert_allclose(float(sums["loss"]), float(expected.sums()["loss"]), rtol=1e-5)


def test_a_steps_metrics_are_the_means_over_its_pairs_without_the_loss():
    sums = {"pairs": jnp.float32(4), "loss": jnp.float32(2), "rewards/margins": jnp.float32(1)}
    metrics = tnn.preference_step_metrics({"preference": sums, "num_tokens": sums["pairs"]})
    assert set(metrics) == {"rewards/margins", "pairs"}
    assert float(metrics["rewards/margins"]) == pytest.approx(0.25)
    assert float(metrics["pairs"]) == 4.0
