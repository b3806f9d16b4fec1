"""Token-weighted accumulation against a float64 one-pass gradient of the full-batch token mean.

The model is softmax regression over tokens (logits = x @ W + b), whose gradient has a closed
form, so the reference is plain float64 numpy: dL/dlogits = (softmax - onehot) / N over the
N valid tokens of the whole batch.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.optim import accumulate_gradients

K, ROWS, SEQ, D, V = 4, 2, 6, 5, 7  # 4 micro-batches of 2 rows x 6 tokens


def _problem(seed: int, valid_per_micro: tuple[int, ...]):
    """Fresh random params/batch; micro-batch i keeps exactly valid_per_micro[i] labels."""
    rng = np.random.default_rng(seed)
    params = {
        "w": rng.normal(size=(D, V)).astype(np.float32),
        "b": rng.normal(size=(V,)).astype(np.float32),
    }
    x = rng.normal(size=(K * ROWS, SEQ, D)).astype(np.float32)
    labels = rng.integers(0, V, (K * ROWS, SEQ)).astype(np.int32)
    for i, n in enumerate(valid_per_micro):
        block = labels[i * ROWS : (i + 1) * ROWS].reshape(-1)  # a view into labels
        drop = rng.permutation(ROWS * SEQ)[n:]
        block[drop] = -100
    assert [int((labels[i * ROWS : (i + 1) * ROWS] >= 0).sum()) for i in range(K)] == list(
        valid_per_micro
    )
    return params, {"x": x, "labels": labels}


def _reference(params, batch):
    """float64: (loss, grads) of sum over valid tokens of CE / number of valid tokens."""
    w, b = params["w"].astype(np.float64), params["b"].astype(np.float64)
    x, labels = batch["x"].astype(np.float64), batch["labels"]
    mask = labels >= 0
    logits = x @ w + b
    logits -= logits.max(-1, keepdims=True)
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    safe = np.where(mask, labels, 0)
    n = mask.sum()
    loss = -np.log(np.take_along_axis(p, safe[..., None], -1)[..., 0])[mask].sum() / n
    dlogits = (p - np.eye(V)[safe]) * mask[..., None] / n
    return loss, {"w": np.einsum("bsd,bsv->dv", x, dlogits), "b": dlogits.sum((0, 1))}


def _loss(params, batch, *, guard=True):
    logits = batch["x"] @ params["w"] + params["b"]
    mask = batch["labels"] >= 0
    safe = jnp.where(mask, batch["labels"], 0)
    ce = jax.nn.logsumexp(logits, -1) - jnp.take_along_axis(logits, safe[..., None], -1)[..., 0]
    n = mask.sum()
    # guard=False: 0/0 = NaN on a micro-batch without valid tokens, to prove it is masked.
    denom = jnp.maximum(n, 1) if guard else n
    loss = (ce * mask).sum() / denom  # unguarded, the gradient is 0 * inf = NaN too
    return loss, {"num_tokens": n, "loss": loss}


GRAD_FN = jax.value_and_grad(_loss, has_aux=True)
UNGUARDED = jax.value_and_grad(lambda p, b: _loss(p, b, guard=False), has_aux=True)


def _assert_close(grads, ref, rtol=2e-5, atol=1e-6):
    for name in ("w", "b"):
        np.testing.assert_allclose(np.asarray(grads[name]), ref[name], rtol=rtol, atol=atol)


@pytest.mark.parametrize("seed", [0, 1])
def test_token_weighted_equals_full_batch_float64(seed: int) -> None:
    params, batch = _problem(seed, (12, 9, 3, 1))
    ref_loss, ref = _reference(params, batch)
    step = jax.jit(
        lambda p, b: accumulate_gradients(
            GRAD_FN, p, b, num_micro_batches=K, weight="num_tokens", aux_reduce="sum"
        )
    )
    loss, aux, grads = step(params, batch)
    _assert_close(grads, ref)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    assert int(aux["num_tokens"]) == 25 and aux["num_tokens"].dtype == jnp.int32
    # A callable weight is the same thing.
    _, _, grads_fn = accumulate_gradients(
        GRAD_FN, params, batch, num_micro_batches=K, weight=lambda a: a["num_tokens"]
    )
    _assert_close(grads_fn, ref)


def test_equal_weights_are_not_the_token_mean_gradient() -> None:
    # The bug the weights fix: equal weights over-count the tokens of sparse micro-batches.
    params, batch = _problem(2, (12, 9, 3, 1))
    _, ref = _reference(params, batch)
    _, _, grads = accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=K)
    err = np.abs(np.asarray(grads["w"]) - ref["w"]).max()
    assert err > 100 * (2e-5 * np.abs(ref["w"]).max() + 1e-6)
    # ...and with equal valid counts, the two agree (the old behaviour was right there).
    params, batch = _problem(3, (6, 6, 6, 6))
    _, ref = _reference(params, batch)
    for weight in (None, "num_tokens"):
        _, _, grads = accumulate_gradients(
            GRAD_FN, params, batch, num_micro_batches=K, weight=weight
        )
        _assert_close(grads, ref)


def test_weighted_mean_aux_and_stack() -> None:
    params, batch = _problem(4, (10, 2, 7, 4))
    ref_loss, _ = _reference(params, batch)
    loss, aux, _ = accumulate_gradients(
        GRAD_FN, params, batch, num_micro_batches=K, weight="num_tokens"
    )
    # aux_reduce="mean" is weighted like the loss: the mean loss entry equals the loss.
    assert aux["loss"].dtype == jnp.float32
    assert float(aux["loss"]) == pytest.approx(ref_loss, rel=1e-5)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    _, stacked, _ = accumulate_gradients(
        GRAD_FN, params, batch, num_micro_batches=K, weight="num_tokens", aux_reduce="stack"
    )
    np.testing.assert_array_equal(np.asarray(stacked["num_tokens"]), [10, 2, 7, 4])


def test_zero_weight_micro_batch_is_ignored_even_when_nan() -> None:
    params, batch = _problem(5, (8, 0, 5, 3))
    ref_loss, ref = _reference(params, batch)
    (nan_loss, _), nan_grads = UNGUARDED(params, jax.tree.map(lambda x: x[ROWS : 2 * ROWS], batch))
    assert np.isnan(float(nan_loss)) and np.isnan(np.asarray(nan_grads["w"])).all()
    loss, aux, grads = accumulate_gradients(
        UNGUARDED, params, batch, num_micro_batches=K, weight="num_tokens"
    )
    assert np.isfinite(float(loss)) and np.isfinite(float(aux["loss"]))
    _assert_close(grads, ref)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    # A negative weight counts as 0 (in the total too).
    negative = lambda a: jnp.where(a["num_tokens"] == 0, -7.0, a["num_tokens"])
    _, _, grads = accumulate_gradients(
        UNGUARDED, params, batch, num_micro_batches=K, weight=negative
    )
    _assert_close(grads, ref)


@pytest.mark.parametrize("k", [1, K])
def test_all_zero_weights_give_zeros_not_nan(k: int) -> None:
    params, batch = _problem(6, (0, 0, 0, 0))
    for reduce in ("mean", "sum", "stack"):
        loss, aux, grads = accumulate_gradients(
            UNGUARDED, params, batch, num_micro_batches=k, weight="num_tokens", aux_reduce=reduce
        )
        assert float(loss) == 0.0
        for g, p in zip(jax.tree.leaves(grads), jax.tree.leaves(params), strict=True):
            assert g.dtype == p.dtype and not np.asarray(g).any()
        if reduce == "mean":
            assert float(aux["loss"]) == 0.0 and float(aux["num_tokens"]) == 0.0


def test_single_micro_batch_with_weight_is_the_plain_gradient() -> None:
    params, batch = _problem(7, (5, 9, 2, 8))
    ref_loss, ref = _reference(params, batch)
    loss, aux, grads = accumulate_gradients(
        GRAD_FN, params, batch, num_micro_batches=1, weight="num_tokens"
    )
    _assert_close(grads, ref)
    assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
    assert float(aux["num_tokens"]) == 24.0


def test_jit_traces_once_across_different_token_counts() -> None:
    traces = []

    @jax.jit
    def step(p, b):
        traces.append(1)
        return accumulate_gradients(GRAD_FN, p, b, num_micro_batches=K, weight="num_tokens")

    for seed, counts in ((8, (12, 9, 3, 1)), (9, (1, 2, 11, 7)), (10, (0, 12, 4, 6))):
        params, batch = _problem(seed, counts)
        _, ref = _reference(params, batch)
        _assert_close(step(params, batch)[2], ref)
    assert len(traces) == 1
    jaxpr = jax.make_jaxpr(step)(params, batch)
    inner = jaxpr.jaxpr.eqns[0].params["jaxpr"].jaxpr
    assert [e.params["length"] for e in inner.eqns if e.primitive.name == "scan"] == [K]


def test_bad_weights_are_rejected_with_their_name() -> None:
    params, batch = _problem(11, (3, 3, 3, 3))
    cases = [
        ("tokens", r"weight='tokens' names no aux entry.*num_tokens"),
        (3, r"weight=3; allowed values: None, the name of an aux entry, or a callable"),
        (lambda aux: jnp.ones(2), r"gave shape \(2,\); allowed: a scalar"),
    ]
    for weight, match in cases:
        for k in (1, K):
            with pytest.raises(ValueError, match=match):
                accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=k, weight=weight)
    tuple_aux = jax.value_and_grad(lambda p, b: (_loss(p, b)[0], (1.0,)), has_aux=True)
    with pytest.raises(ValueError, match=r"names no aux entry.*\(tuple\)"):
        accumulate_gradients(tuple_aux, params, batch, num_micro_batches=K, weight="n")


def test_interleaved_micro_batches_take_every_kth_unit_and_keep_the_big_batch_loss() -> None:
    """``interleave_rows=u``: micro-batch i is units i, i+k, ... of u rows (a device's block of
    a row-sharded batch splits evenly); the token-weighted mean is still the big batch's."""
    params, batch = _problem(6, (9, 3, 12, 5))  # 8 rows
    ref_loss, ref = _reference(params, batch)
    rows = {"row": jnp.arange(K * ROWS)}

    def seen(p, b):
        return (jnp.zeros(()), {"rows": b["row"]}), p

    # (unit, micro-batches, rows of each): single rows over 4; pairs (DPO) over 2, kept whole.
    for unit, k, want in (
        (1, 4, [[0, 4], [1, 5], [2, 6], [3, 7]]),
        (2, 2, [[0, 1, 4, 5], [2, 3, 6, 7]]),
    ):
        _, stacked, _ = accumulate_gradients(
            seen, None, rows, num_micro_batches=k, aux_reduce="stack", interleave_rows=unit
        )
        np.testing.assert_array_equal(np.asarray(stacked["rows"]), want)
        loss, _, grads = accumulate_gradients(
            GRAD_FN, params, batch, num_micro_batches=k, weight="num_tokens", interleave_rows=unit
        )
        assert float(loss) == pytest.approx(ref_loss, rel=1e-5)
        _assert_close(grads, ref)


@pytest.mark.parametrize(
    ("unit", "match"),
    [(0, "interleave_rows=0; allowed"), (True, "interleave_rows=True"), (3, "× interleave_rows=3")],
)
def test_bad_interleave_rows_is_one_line(unit, match) -> None:
    params, batch = _problem(7, (4, 4, 4, 4))
    with pytest.raises(ValueError, match=match):
        accumulate_gradients(GRAD_FN, params, batch, num_micro_batches=2, interleave_rows=unit)
