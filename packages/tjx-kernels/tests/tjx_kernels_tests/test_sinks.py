"""Attention sinks (gpt-oss): a logit per head in every row's softmax, against float64 NumPy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import (
    AttentionKernel,
    AttentionMask,
    attention,
    attention_weights,
    resolve_attention,
)
from tjx.kernels.choice import FUSED_SINKS


def _reference(q, k, v, sinks, *, causal, window=None):
    """float64: softmax over [scores of the visible keys, the head's sink], the sink dropped."""
    q, k, v, sinks = (np.asarray(x, np.float64) for x in (q, k, v, sinks))
    b, t, h, d = q.shape
    g = h // k.shape[2]
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    i, j = np.arange(t)[:, None], np.arange(t)[None]
    visible = (j <= i) if causal else np.ones((t, t), bool)
    if window is not None:
        visible &= i - window < j
    s = np.where(visible, s, -np.inf)
    full = np.concatenate([s, np.broadcast_to(sinks[None, :, None, None], (b, h, t, 1))], -1)
    full = full - full.max(-1, keepdims=True)
    p = np.exp(full) / np.exp(full).sum(-1, keepdims=True)
    p = p[..., :-1]
    return np.einsum("bhqk,bkhd->bqhd", p, v), p


@pytest.mark.parametrize("causal,window", [(True, None), (False, None), (True, 3)])
def test_sinks_take_their_share_of_every_rows_softmax(causal: bool, window):
    rng = np.random.default_rng()
    q = rng.normal(size=(2, 7, 4, 8))
    k, v = rng.normal(size=(2, 2, 7, 2, 8))  # GQA: 2 kv heads for 4 query heads
    sinks = rng.normal(size=4) * 2
    want_o, want_p = _reference(q, k, v, sinks, causal=causal, window=window)
    with jax.enable_x64(True):
        args = [jnp.asarray(x) for x in (q, k, v)]
        mask = AttentionMask(causal=causal, window=window, sinks=jnp.asarray(sinks))
        out = attention(*args, mask)
        p = attention_weights(args[0], args[1], mask)
    np.testing.assert_allclose(np.asarray(out), want_o, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.asarray(p), want_p, rtol=1e-12, atol=1e-12)
    assert np.all(np.asarray(p).sum(-1) < 1.0)  # the sink took its share


def test_the_sinks_gradient_is_the_float64_references():
    rng = np.random.default_rng()
    q, k, v = rng.normal(size=(3, 1, 5, 2, 4))
    sinks, w = rng.normal(size=2), rng.normal(size=(1, 5, 2, 4))
    with jax.enable_x64(True):
        qkv = [jnp.asarray(x) for x in (q, k, v)]
        grad = jax.grad(
            lambda s: jnp.sum(attention(*qkv, AttentionMask(causal=True, sinks=s)) * w)
        )(jnp.asarray(sinks))
    eps = 1e-6
    for head in range(2):
        hi, lo = sinks.copy(), sinks.copy()
        hi[head] += eps
        lo[head] -= eps
        fd = (np.sum(_reference(q, k, v, hi, causal=True)[0] * w)
              - np.sum(_reference(q, k, v, lo, causal=True)[0] * w)) / (2 * eps)  # fmt: skip
        np.testing.assert_allclose(float(grad[head]), fd, rtol=1e-6)


def test_auto_is_xla_with_sinks_and_a_fused_kernel_is_refused_in_one_line():
    assert resolve_attention("auto", jnp.bfloat16, 64, sinks=True) == AttentionKernel.XLA
    for name in ("cudnn", "pallas"):
        with pytest.raises(ValueError, match="sinks.*served by implementation 'xla' only"):
            resolve_attention(name, jnp.bfloat16, 64, sinks=True)
    x = jnp.zeros((1, 4, 2, 8))
    with pytest.raises(ValueError) as err:
        attention(x, x, x, AttentionMask(sinks=jnp.zeros(2)), implementation=AttentionKernel.PALLAS)
    assert str(err.value) == FUSED_SINKS
    with pytest.raises(ValueError, match=r"`sinks` must be a floating array of shape \(2,\)"):
        attention(x, x, x, mask=AttentionMask(sinks=jnp.zeros(3)))
