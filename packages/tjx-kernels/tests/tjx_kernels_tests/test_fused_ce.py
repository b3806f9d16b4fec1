"""fused_cross_entropy (Pallas, interpret mode here) against the full-logits loss in float64."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import CELaunch, CrossEntropyOutput, fused_cross_entropy

from ._ref import np_cross_entropy, rel_err

#: Small tiles so a few dozen tokens span several token, vocabulary and D tiles.
SMALL = CELaunch(block_t=16, block_v=32, block_k=16, block_d=16)


def _data(seed, shape, d, vocab, ignore_index=-100, argmax_frac=0.3):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((*shape, d))
    w = rng.standard_normal((d, vocab)) * 0.5
    labels = rng.integers(0, vocab, shape).astype(np.int32)
    top = (hidden.reshape(-1, d) @ w).argmax(-1).reshape(shape)
    take = rng.random(shape) < argmax_frac  # some tokens right, so the top-1 count is tested
    labels[take] = top[take]
    labels[rng.random(shape) < 0.2] = ignore_index
    return hidden, w, labels


def _run(hidden, w, labels, dtype=jnp.float32, **kw):
    def fn(h, w):
        out = fused_cross_entropy(h, w, jnp.asarray(labels), launch=SMALL, interpret=True, **kw)
        return out.loss, out

    grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))
    return grad(jnp.asarray(hidden, dtype), jnp.asarray(w, dtype))


@pytest.mark.parametrize(
    "shape,d,vocab,z_loss,ignore_index",
    [
        ((3, 11), 24, 100, 0.0, -100),  # 33 tokens → 48; d 24 → 32; vocab 100 → 128 (masked)
        ((2, 16), 16, 64, 1e-2, -100),  # every size a tile multiple; z-loss
        ((37,), 20, 37, 0.1, 0),  # ignore_index inside the vocabulary range
        ((2, 5), 40, 33, 0.0, -1),
    ],
)
def test_loss_counts_and_both_gradients_match_float64(shape, d, vocab, z_loss, ignore_index):
    hidden, w, labels = _data(d + vocab, shape, d, vocab, ignore_index)
    loss, sum_loss, n, correct, dh, dw = np_cross_entropy(
        hidden, w, labels, ignore_index=ignore_index, z_loss=z_loss
    )
    (got, out), (g_h, g_w) = _run(hidden, w, labels, z_loss=z_loss, ignore_index=ignore_index)
    assert isinstance(out, CrossEntropyOutput)
    assert correct > 0 and int(out.num_correct) == correct and int(out.num_tokens) == n
    assert out.num_tokens.dtype == jnp.int32 and got.dtype == jnp.float32
    assert rel_err(got, loss) <= 1e-5 and rel_err(out.sum_loss, sum_loss) <= 1e-5
    assert g_h.shape == hidden.shape and g_w.shape == w.shape
    assert rel_err(g_h, dh) <= 1e-5 and rel_err(g_w, dw) <= 1e-5


def test_bf16_inputs_within_tolerance():
    hidden, w, labels = _data(5, (2, 24), 32, 96)
    loss, sum_loss, _, _, dh, dw = np_cross_entropy(
        np.asarray(jnp.asarray(hidden, jnp.bfloat16), np.float64),
        np.asarray(jnp.asarray(w, jnp.bfloat16), np.float64),
        labels,
    )
    (got, out), (g_h, g_w) = _run(hidden, w, labels, jnp.bfloat16)
    assert g_h.dtype == jnp.bfloat16 and g_w.dtype == jnp.bfloat16
    assert rel_err(got, loss) <= 1e-4  # float32 accumulation of exact bf16 products
    assert rel_err(g_h, dh) <= 2e-2 and rel_err(g_w, dw) <= 2e-2  # dlogits rounded to bf16


def test_agrees_with_the_chunked_loss_and_equal_maxima_count_the_first():
    from tjx.kernels import chunked_cross_entropy

    hidden, w, labels = _data(9, (4, 8), 16, 48)
    w[:, 40] = w[:, 3]  # column 40 repeats column 3: an argmax tie, the first index counts
    labels[0, :] = 40
    (got, out), grads = _run(hidden, w, labels, z_loss=1e-3)
    ref = chunked_cross_entropy(
        jnp.asarray(hidden), jnp.asarray(w), jnp.asarray(labels), z_loss=1e-3
    )
    assert int(out.num_correct) == int(ref.num_correct)
    assert rel_err(got, ref.loss) <= 1e-5 and rel_err(out.sum_loss, ref.sum_loss) <= 1e-5


def test_no_token_to_score_gives_zeros_and_zero_gradients():
    hidden, w, labels = _data(1, (2, 3), 8, 20)
    (got, out), (g_h, g_w) = _run(hidden, w, np.full((2, 3), -100, np.int32))
    assert float(got) == 0.0 and int(out.num_tokens) == 0 and int(out.num_correct) == 0
    assert not np.any(np.asarray(g_h)) and not np.any(np.asarray(g_w))
    (got, out), (g_h, g_w) = _run(hidden[:, :0], w, labels[:, :0])  # [b, 0]: nothing at all
    assert float(got) == 0.0 and g_h.shape == (2, 0, 8) and not np.any(np.asarray(g_w))


def test_bad_arguments_and_launches_name_the_problem():
    h, w = jnp.zeros((2, 4, 8)), jnp.zeros((8, 16))
    with pytest.raises(ValueError, match="disagree"):
        fused_cross_entropy(h, jnp.zeros((7, 16)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        fused_cross_entropy(h, w, jnp.zeros((2, 4)))
    with pytest.raises(ValueError, match="z_loss"):
        fused_cross_entropy(h, w, jnp.zeros((2, 4), jnp.int32), z_loss=-1.0)
    with pytest.raises(ValueError, match="block_v must be a power of two >= 16"):
        CELaunch(block_v=24)
    with pytest.raises(ValueError, match="num_warps"):
        CELaunch(num_warps=3)
