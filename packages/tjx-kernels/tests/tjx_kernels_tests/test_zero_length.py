"""Zero-length sequences: every attention entry point and the chunked cross-entropy.

A ``kv_len == 0`` call is compared with the same call over real keys that are all masked (the
float64 NumPy reference and ``kv_lengths = 0``): both mean "no query sees a key", so both must
give zeros with zero gradients. A ``q_len == 0`` call has nothing to return but its empty shape,
and its keys, seen by no query, get zero gradients.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tjx.kernels.dispatch as dispatch
import tjx.kernels.flash as flash
from tjx.kernels import (
    AttentionMask,
    attention,
    attention_weights,
    chunked_cross_entropy,
    flash_attention,
    reference_attention,
)

from ._ref import np_attention, np_cross_entropy, pretend_h100

B, H, HKV, D = 2, 4, 2, 8


def _qkv(seed: int, sq: int, sk: int, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((B, sq, H, D))
    k = rng.standard_normal((B, sk, HKV, D))
    v = rng.standard_normal((B, sk, HKV, D))
    return (jnp.asarray(x, dtype) for x in (q, k, v))


def _fwd_bwd(fn, q, k, v, do):
    out, vjp = jax.vjp(fn, q, k, v)
    return (out, *vjp(do))


ENTRY_POINTS = {
    "reference": reference_attention,
    "auto": attention,
    "xla": lambda q, k, v, mask=None, **kw: attention(q, k, v, mask, implementation="xla", **kw),
    "pallas": lambda q, k, v, mask=None, **kw: attention(
        q, k, v, mask, implementation="pallas", **kw
    ),
    "flash": flash_attention,
}


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("causal", [False, True])
def test_no_keys_gives_zeros_like_fully_masked_keys(name, dtype, causal):
    fn = ENTRY_POINTS[name]
    seed = sorted(ENTRY_POINTS).index(name) + 10 * causal
    q, k, v = _qkv(seed, 5, 6, dtype)
    do = jnp.asarray(np.random.default_rng(seed + 1).standard_normal(q.shape), dtype)
    # The reference: the same queries over six real keys, every one of them masked.
    want, want_dq, _, _ = np_attention(
        q.astype(jnp.float32), k, v, np.zeros((B, 5, 6), bool), d_out=do.astype(jnp.float32)
    )
    out, dq, dk, dv = _fwd_bwd(
        lambda q, k, v: fn(q, k, v, AttentionMask(causal=causal)), q, k[:, :0], v[:, :0], do
    )
    chex.assert_shape(out, (B, 5, H, D))
    chex.assert_type([out, dq, dk, dv], dtype)
    chex.assert_shape([dk, dv], (B, 0, HKV, D))
    np.testing.assert_array_equal(np.asarray(out, np.float64), want)
    np.testing.assert_array_equal(np.asarray(dq, np.float64), want_dq)
    # The same masking expressed as lengths over the real keys agrees exactly.
    masked = reference_attention(
        q, k, v, mask=AttentionMask(causal=causal, kv_lengths=jnp.zeros((B,), jnp.int32))
    )
    np.testing.assert_array_equal(out, masked)


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("sk", [0, 7])
def test_no_queries_gives_an_empty_result_and_zero_key_grads(name, sk):
    fn = ENTRY_POINTS[name]
    q, k, v = _qkv(sk + len(name), 0, sk)
    segs = (jnp.zeros((B, 0), jnp.int32), jnp.ones((B, sk), jnp.int32))
    mask = AttentionMask(causal=True, segment_ids=segs)
    out, dq, dk, dv = jax.jit(
        lambda q, k, v: _fwd_bwd(lambda q, k, v: fn(q, k, v, mask), q, k, v, jnp.zeros_like(q))
    )(q, k, v)
    chex.assert_shape([out, dq], (B, 0, H, D))
    chex.assert_shape([dk, dv], (B, sk, HKV, D))
    chex.assert_type([out, dq, dk, dv], jnp.float32)
    assert not np.asarray(dk).any() and not np.asarray(dv).any()
    # A loss that does read the result (a weighted sum of nothing) differentiates to zeros too.
    w = jnp.asarray(np.random.default_rng(sk).standard_normal((B, 0, H, D)), jnp.float32)
    grads = jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v) * w), argnums=(0, 1, 2))(q, k, v)
    assert all(np.isfinite(g).all() and not np.asarray(g).any() for g in grads)


@pytest.mark.parametrize("sq,sk", [(0, 0), (0, 3), (4, 0)])
def test_attention_weights_of_empty_sequences(sq, sk):
    q, k, _ = _qkv(sq * 7 + sk, sq, sk)
    p = attention_weights(
        q, k, mask=AttentionMask(causal=True, kv_lengths=jnp.full((B,), sk, jnp.int32))
    )
    chex.assert_shape(p, (B, H, sq, sk))
    chex.assert_type(p, jnp.float32)
    assert not np.asarray(p).any()  # no entries, or rows that see no key: all zero


def test_empty_calls_never_reach_a_fused_kernel(monkeypatch):
    """On a (pretended) GPU, "auto" would pick cuDNN: an empty call must take XLA instead."""

    def no_fused(*args, **kwargs):
        raise AssertionError("a fused kernel was called for an empty sequence")

    pretend_h100(monkeypatch)
    monkeypatch.setattr(dispatch, "_cudnn_attention", no_fused)
    monkeypatch.setattr(flash, "flash_attention", no_fused)
    q, k, v = _qkv(3, 4, 0, jnp.bfloat16)
    for impl in ("auto", "cudnn", "pallas"):
        out = attention(q, k, v, implementation=impl)
        chex.assert_shape(out, (B, 4, H, D))
        assert not np.asarray(out, np.float32).any()
    # An explicit request is still validated before the empty shortcut.
    q32, k32, v32 = _qkv(4, 0, 0, jnp.float32)
    with pytest.raises(ValueError, match="not supported by cuDNN"):
        attention(q32, k32, v32, implementation="cudnn")


@pytest.mark.parametrize("shape", [(3, 0), (0, 5), (0,), (0, 0)])
@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_cross_entropy_with_no_tokens_is_zero_with_zero_grads(shape, z_loss):
    d, vocab = 6, 11
    rng = np.random.default_rng(len(shape) + sum(shape))
    hidden = jnp.asarray(rng.standard_normal((*shape, d)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((d, vocab)), jnp.bfloat16)
    labels = jnp.zeros(shape, jnp.int32)

    def loss(h, w):
        out = chunked_cross_entropy(h, w, labels, chunk_size=4, z_loss=z_loss)
        return out.loss, out

    (value, out), (dh, dw) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        hidden, w
    )
    chex.assert_type([out.loss, out.sum_loss], jnp.float32)
    chex.assert_type([out.num_tokens, out.num_correct], jnp.int32)
    chex.assert_shape(dh, hidden.shape)
    chex.assert_type([dh, dw], jnp.bfloat16)
    # Reference: the naive computation over a non-empty batch whose every label is ignored
    # (the same "no token counts" case): loss, sums and gradients all zero.
    h_ref = rng.standard_normal((2, 3, d))
    ref = np_cross_entropy(h_ref, np.asarray(w, np.float64), np.full((2, 3), -100), z_loss=z_loss)
    assert ref[:4] == (0.0, 0.0, 0, 0) and not ref[5].any()
    assert (float(value), float(out.sum_loss), int(out.num_tokens), int(out.num_correct)) == ref[:4]
    np.testing.assert_array_equal(np.asarray(dw, np.float64), ref[5])
