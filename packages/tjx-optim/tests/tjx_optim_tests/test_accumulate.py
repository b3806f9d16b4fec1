"""Gradient accumulation: k micro-batches in one scan give the same step as one k-times batch."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tjx.optim import OptimizerConfig, accumulate_gradients, build_optimizer


def _problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    params = {
        "w": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32),
        "b": jnp.asarray(rng.normal(size=(5,)), jnp.float32),
    }
    batch = {
        "x": jnp.asarray(rng.normal(size=(16, 6)), jnp.float32),
        "y": jnp.asarray(rng.normal(size=(16, 5)), jnp.float32),
    }
    return params, batch


def _loss(params, batch):
    pred = jnp.tanh(batch["x"] @ params["w"] + params["b"])
    loss = jnp.mean((pred - batch["y"]) ** 2)
    return loss, {"loss": loss, "rows": jnp.asarray(batch["x"].shape[0], jnp.int32)}


GRAD_FN = jax.value_and_grad(_loss, has_aux=True)


@pytest.mark.parametrize("name", ["adamw", "lion"])
def test_accumulated_step_equals_big_batch(name: str) -> None:
    params0, batch = _problem(1)
    tx = build_optimizer(OptimizerConfig(name=name, learning_rate=1e-2, clip_norm=1.0))

    @functools.partial(jax.jit, static_argnames="k")
    def step(params, state, batch, k):
        loss, _, grads = accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=k)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state, loss

    results = {}
    for k in (1, 4):
        params, state = params0, tx.init(params0)
        for i in range(3):
            rolled = jax.tree.map(functools.partial(jnp.roll, shift=i, axis=0), batch)
            params, state, loss = step(params, state, rolled, k)
        results[k] = (params, loss)
    diff = max(
        float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(
            jax.tree.leaves(results[1][0]), jax.tree.leaves(results[4][0]), strict=False
        )
    )
    assert diff <= 1e-6
    assert float(jnp.abs(results[1][1] - results[4][1])) <= 1e-6
    # The parameters really moved (equality of two no-ops would prove nothing).
    assert float(jnp.max(jnp.abs(results[4][0]["w"] - params0["w"]))) > 1e-3


def test_loss_grads_and_aux_reductions() -> None:
    params, batch = _problem(2)
    (loss1, _), grads1 = GRAD_FN(params, batch)
    loss, aux, grads = accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=2)
    assert float(loss) == pytest.approx(float(loss1), rel=1e-6)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(grads1), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert a.dtype == b.dtype
    assert aux["rows"].dtype == jnp.float32 and float(aux["rows"]) == 8.0
    _, aux_sum, _ = accumulate_gradients(
        GRAD_FN, params, batch, num_micro_batches=4, aux_reduce="sum"
    )
    assert int(aux_sum["rows"]) == 16 and aux_sum["rows"].dtype == jnp.int32
    _, stacked, _ = accumulate_gradients(
        GRAD_FN, params, batch, num_micro_batches=4, aux_reduce="stack"
    )
    assert stacked["loss"].shape == (4,)
    assert float(jnp.mean(stacked["loss"])) == pytest.approx(float(loss1), rel=1e-5)
    for reduce, shape in (("stack", (1,)), ("mean", ()), ("sum", ())):
        _, a1, _ = accumulate_gradients(
            GRAD_FN, params, batch, num_micro_batches=1, aux_reduce=reduce
        )
        assert a1["rows"].shape == shape


def test_accumulate_rejects_bad_input() -> None:
    params, batch = _problem(3)
    with pytest.raises(ValueError, match=r"\['x'\].*divisible by num_micro_batches=3"):
        accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=3)
    with pytest.raises(ValueError, match="num_micro_batches=0"):
        accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=0)
    with pytest.raises(ValueError, match="aux_reduce='max'"):
        accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=2, aux_reduce="max")


def test_memory_stays_flat_scan_in_jaxpr() -> None:
    params, batch = _problem(4)
    jaxpr = jax.make_jaxpr(lambda p, b: accumulate_gradients(GRAD_FN, p, b, num_micro_batches=8))(
        params, batch
    )
    scans = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "scan"]
    assert len(scans) == 1 and scans[0].params["length"] == 8
    # The carry holds one float32 gradient tree plus the loss, the two aux scalars and the
    # total weight, not k of them.
    scan_params = scans[0].params
    if "num_carry" in scan_params:  # jax <= 0.10
        num_carry = scan_params["num_carry"]
    else:  # jax >= 0.11: the (carry, ys) split lives in a FlatTree
        num_carry = len(scan_params["ft_out"].unpack()[0])
    carry_sizes = [v.aval.size for v in scans[0].outvars[:num_carry]]
    assert sum(carry_sizes) == 1 + 6 * 5 + 5 + 2 + 1
