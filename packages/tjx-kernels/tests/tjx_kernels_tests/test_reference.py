"""reference_attention against a float64 NumPy reference; masks, bias, dropout, edge cases."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import AttentionMask, attention_mask, attention_weights, reference_attention
from tjx.kernels._checks import check_qkv
from tjx.kernels.reference import rows_seeing_a_key, zero_unseen_rows

from ._ref import masked, np_attention, np_mask, rel_err


def _qkv(seed, b, sq, sk, h, hkv, d, scale=1.0):
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((b, sq, h, d)) * scale,
        rng.standard_normal((b, sk, hkv, d)) * scale,
        rng.standard_normal((b, sk, hkv, d)),
        rng.standard_normal((b, sq, h, d)),
    )


def _fwd_bwd(fn, q, k, v, do):
    """(out, dq, dk, dv) under one jit: eager op-by-op dispatch is slow on a loaded CPU."""

    @jax.jit
    def run(q, k, v, do):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(do))

    return run(q, k, v, do)


@pytest.mark.parametrize(
    "b,sq,sk,h,hkv,causal,with_bias,with_lengths",
    [
        (2, 9, 9, 4, 2, True, False, False),
        (2, 12, 7, 8, 1, False, True, True),
        (1, 5, 11, 4, 4, True, True, False),
    ],
)
def test_reference_forward_and_grads_vs_float64(b, sq, sk, h, hkv, causal, with_bias, with_lengths):
    d = 16
    q, k, v, do = _qkv(sq + sk, b, sq, sk, h, hkv, d)
    rng = np.random.default_rng(1)
    q_ids = rng.integers(0, 3, (b, sq)).astype(np.int32)
    kv_ids = rng.integers(0, 3, (b, sk)).astype(np.int32)
    lengths = rng.integers(0, sk + 1, (b,)).astype(np.int32) if with_lengths else None
    bias = rng.standard_normal((1, h, sq, sk)) if with_bias else None
    mask = np_mask(b, sq, sk, causal=causal, q_ids=q_ids, kv_ids=kv_ids, kv_lengths=lengths)
    expected = np_attention(q, k, v, mask, scale=0.3, bias=bias, d_out=do)

    def fn(q, k, v):
        return reference_attention(
            q,
            k,
            v,
            mask=AttentionMask(
                causal=causal,
                segment_ids=(jnp.asarray(q_ids), jnp.asarray(kv_ids)),
                kv_lengths=None if lengths is None else jnp.asarray(lengths),
            ),
            scale=0.3,
            bias=None if bias is None else jnp.asarray(bias, jnp.float32),
        )

    got = _fwd_bwd(fn, *(jnp.asarray(x, jnp.float32) for x in (q, k, v, do)))
    for a, e in zip(got, expected, strict=True):
        assert np.all(np.isfinite(np.asarray(a)))
        assert rel_err(a, e) <= 1e-5


def test_bias_broadcast_over_batch_and_heads():
    q, k, v, _ = _qkv(2, 2, 6, 6, 4, 2, 8)
    bias = np.random.default_rng(3).standard_normal((2, 1, 6, 6))
    expected = np_attention(q, k, v, np.ones((2, 6, 6), bool), bias=bias)
    got = jax.jit(reference_attention)(
        *(jnp.asarray(x, jnp.float32) for x in (q, k, v)), bias=jnp.asarray(bias, jnp.float32)
    )
    assert rel_err(got, expected) <= 1e-5


def test_bf16_accumulates_in_float32():
    q, k, v, _ = _qkv(4, 1, 64, 64, 2, 2, 64)
    q, k, v = (np.asarray(jnp.asarray(x, jnp.bfloat16).astype(jnp.float32)) for x in (q, k, v))
    expected = np_attention(q, k, v, np_mask(1, 64, 64, causal=True))
    # The mask crosses jit as a pytree: its causal flag static, no static_argnames needed.
    got = jax.jit(reference_attention)(
        *(jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)), AttentionMask(causal=True)
    )
    assert got.dtype == jnp.bfloat16
    assert rel_err(got.astype(jnp.float32), expected) <= 2e-2


def test_fully_masked_rows_are_zero_with_finite_grads():
    q, k, v, do = (jnp.asarray(x, jnp.float32) for x in _qkv(5, 1, 6, 6, 2, 1, 8))
    ids = jnp.asarray([[1, 1, 0, 2, 0, 0]], jnp.int32)
    out, *grads = _fwd_bwd(
        lambda q, k, v: reference_attention(q, k, v, mask=AttentionMask(segment_ids=ids)),
        q,
        k,
        v,
        do,
    )
    assert np.all(np.asarray(out)[0, [2, 4, 5]] == 0.0)
    assert all(np.all(np.isfinite(np.asarray(g))) for g in grads)
    assert np.all(np.asarray(grads[0])[0, [2, 4, 5]] == 0.0)
    # A batch row with kv_length 0 is fully masked as well.
    out0 = jax.jit(reference_attention)(
        q, k, v, AttentionMask(kv_lengths=jnp.asarray([0], jnp.int32))
    )
    assert np.all(np.asarray(out0) == 0.0)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_magnitude_100_inputs_stay_finite(dtype):
    q, k, v, do = (jnp.asarray(x, dtype) for x in _qkv(6, 1, 16, 16, 2, 2, 32, scale=100.0))
    got = _fwd_bwd(
        lambda q, k, v: reference_attention(q, k, v, mask=AttentionMask(causal=True)), q, k, v, do
    )
    assert all(np.all(np.isfinite(np.asarray(g.astype(jnp.float32)))) for g in got)


def test_dropout_is_keyed_and_unbiased():
    q, k, v, _ = (jnp.asarray(x, jnp.float32) for x in _qkv(7, 1, 8, 8, 2, 2, 8))
    plain = reference_attention(q, k, v)

    @jax.jit
    def drop(key):
        return reference_attention(q, k, v, dropout_rate=0.25, dropout_rng=key)

    k1, k2 = jax.random.key(1), jax.random.key(2)
    np.testing.assert_array_equal(drop(k1), drop(k1))
    assert not np.allclose(drop(k1), drop(k2))
    mean = jax.jit(jax.vmap(drop))(jax.random.split(jax.random.key(3), 2000)).mean(0)
    # Inverted dropout keeps the expectation: the mean over many keys approaches the plain output.
    assert float(jnp.max(jnp.abs(mean - plain))) < 0.05


def test_attention_mask_is_none_without_masking():
    shapes = check_qkv(*(jnp.ones((1, 3, 1, 4)),) * 3)
    assert attention_mask(shapes, AttentionMask()) is None
    m = attention_mask(shapes, AttentionMask(causal=True))
    assert m is not None and m.shape == (1, 1, 3, 3) and not bool(m[0, 0, 0, 1])


def test_rows_seeing_a_key_and_zeroing_them_match_the_reference():
    """The rows the cuDNN and tokamax paths zero are those whose NumPy mask row is empty, and
    zeroing them leaves the reference's output (it zeroes them itself) unchanged."""
    rng_seed = int(np.random.SeedSequence().entropy % 2**31)  # fresh inputs, named on failure
    rng = np.random.default_rng(rng_seed)
    b, sq, sk = 2, 6, 5
    q, k, v, _ = (jnp.asarray(x, jnp.float32) for x in _qkv(rng_seed, b, sq, sk, 2, 1, 8))
    q_ids = rng.integers(0, 3, (b, sq)).astype(np.int32)
    kv_ids = rng.integers(0, 3, (b, sk)).astype(np.int32)
    lengths = rng.integers(0, sk + 1, (b,)).astype(np.int32)
    mask = AttentionMask(
        causal=True, segment_ids=(jnp.asarray(q_ids), jnp.asarray(kv_ids)), kv_lengths=lengths
    )
    shapes = check_qkv(q, k, v)
    expected = np_mask(b, sq, sk, causal=True, q_ids=q_ids, kv_ids=kv_ids, kv_lengths=lengths)
    seen = rows_seeing_a_key(shapes, mask)
    assert seen is not None and seen.shape == (b, sq), rng_seed
    np.testing.assert_array_equal(np.asarray(seen), expected.any(-1), err_msg=str(rng_seed))
    assert rows_seeing_a_key(shapes, AttentionMask()) is None
    out = reference_attention(q, k, v, mask)
    np.testing.assert_array_equal(np.asarray(zero_unseen_rows(out, seen)), np.asarray(out))
    ones = zero_unseen_rows(jnp.ones_like(q), seen)
    np.testing.assert_array_equal(np.asarray(ones[..., 0, 0]), expected.any(-1).astype(np.float32))
    assert zero_unseen_rows(q, None) is q


X = jnp.ones((2, 4, 4, 8), jnp.float32)
KV = jnp.ones((2, 4, 2, 8), jnp.float32)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((jnp.ones((4, 4, 8)), KV, KV), {}, "rank 4"),
        ((X, KV, jnp.ones((2, 5, 2, 8))), {}, "same shape"),
        ((X, KV.astype(jnp.bfloat16), KV.astype(jnp.bfloat16)), {}, "dtype"),
        ((X, jnp.ones((3, 4, 2, 8)), jnp.ones((3, 4, 2, 8))), {}, "batch"),
        ((X, jnp.ones((2, 4, 2, 4)), jnp.ones((2, 4, 2, 4))), {}, "head_dim"),
        ((X, jnp.ones((2, 4, 3, 8)), jnp.ones((2, 4, 3, 8))), {}, "multiple"),
        ((X.astype(jnp.int32), KV, KV), {}, "dtype"),
        ((X, KV, KV), {"segment_ids": jnp.ones((2, 5), jnp.int32)}, "segment_ids"),
        ((X, KV, KV), {"segment_ids": jnp.ones((2, 4), jnp.float32)}, "integer"),
        ((X, KV, KV), {"segment_ids": (jnp.ones((2, 4), jnp.int32),)}, "pair"),
        ((X, KV, KV), {"kv_lengths": jnp.ones((3,), jnp.int32)}, "kv_lengths"),
        ((X, KV, KV), {"bias": jnp.ones((2, 3, 4, 4))}, "bias"),
        ((X, KV, KV), {"dropout_rate": 1.0}, "dropout_rate"),
        ((X, KV, KV), {"dropout_rate": 0.1}, "dropout_rng"),
        ((X, KV, KV), {"scale": 0.0}, "scale"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        reference_attention(*args, **masked(**kwargs))


def test_single_segment_array_needs_equal_lengths():
    q = jnp.ones((1, 3, 2, 8))
    kv = jnp.ones((1, 5, 2, 8))
    with pytest.raises(ValueError, match="pair"):
        reference_attention(q, kv, kv, mask=AttentionMask(segment_ids=jnp.ones((1, 3), jnp.int32)))


def test_attention_weights_are_the_reference_softmax_in_float64():
    """The probabilities against a float64 softmax with the same masks and bias (GQA, causal,
    segments, lengths); rows with no visible key are zero, the others sum to one."""
    b, sq, sk, h, hkv, d = 2, 7, 7, 4, 2, 8
    q, k, _, _ = _qkv(5, b, sq, sk, h, hkv, d)
    rng = np.random.default_rng(2)
    ids = rng.integers(0, 3, (b, sq)).astype(np.int32)
    lengths = np.asarray([7, 5], np.int32)
    bias = rng.standard_normal((1, h, sq, sk))
    got = np.asarray(
        attention_weights(
            jnp.asarray(q, jnp.float32),
            jnp.asarray(k, jnp.float32),
            mask=AttentionMask(
                causal=True, segment_ids=jnp.asarray(ids), kv_lengths=jnp.asarray(lengths)
            ),
            scale=0.4,
            bias=jnp.asarray(bias, jnp.float32),
        )
    )
    mask = np_mask(b, sq, sk, causal=True, q_ids=ids, kv_ids=ids, kv_lengths=lengths)[:, None]
    k_heads = np.repeat(k, h // hkv, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k_heads) * 0.4 + bias
    logits = np.where(mask, logits, -np.inf)
    seen = mask.any(-1)
    row_max = np.where(seen, logits.max(-1), 0.0)[..., None]
    want = np.exp(np.where(seen[..., None], logits - row_max, -np.inf))
    want = np.where(seen[..., None], want / np.where(seen, want.sum(-1), 1)[..., None], 0.0)
    assert got.shape == (b, h, sq, sk)
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=2e-6)
    sums = got.sum(-1)
    np.testing.assert_allclose(sums[np.broadcast_to(seen, sums.shape)], 1.0, atol=1e-5)
    assert np.all(sums[~np.broadcast_to(seen, sums.shape)] == 0.0)


def test_masked_softmax_derivatives_match_finite_differences_in_float64():
    # The softmax has its own derivative rule (a custom_jvp, for speed): check it, to second order
    # and in both modes, against finite differences, on a mask with a fully masked row.
    from jax.test_util import check_grads

    from tjx.kernels.reference import _masked_softmax

    rng = np.random.default_rng(7)
    mask = rng.random((2, 3, 5, 6)) < 0.7
    mask[0, 1, 2] = False  # a query that sees no key
    with jax.enable_x64(True):
        x = jnp.asarray(rng.standard_normal((2, 3, 5, 6)), jnp.float64)

        def f(x):
            return _masked_softmax(jnp.where(mask, x, -jnp.inf))

        p = f(x)
        assert np.all(np.asarray(p)[0, 1, 2] == 0.0)
        np.testing.assert_allclose(
            np.asarray(p)[mask.any(-1)].sum(-1), 1.0, rtol=1e-12
        )  # every row that sees a key sums to 1
        check_grads(f, (x,), order=2, modes=("fwd", "rev"), atol=1e-6, rtol=1e-6)


def test_bias_gradient_matches_float64_softmax_attention():
    # A learned bias (T5) trains through the softmax's derivative: compare d(bias) with plain
    # float64 softmax attention (every row sees a key here, so jax.nn.softmax is the reference).

    b, s, h, hkv, d = 2, 7, 4, 2, 8
    q, k, v, do = _qkv(11, b, s, s, h, hkv, d)
    bias = np.random.default_rng(12).standard_normal((1, h, s, s))

    def loss32(bias):
        out = reference_attention(
            *(jnp.asarray(x, jnp.float32) for x in (q, k, v)),
            mask=AttentionMask(causal=True),
            bias=bias,
        )
        return jnp.sum(out * jnp.asarray(do, jnp.float32))

    got = jax.jit(jax.grad(loss32))(jnp.asarray(bias, jnp.float32))
    with jax.enable_x64(True):

        def loss64(bias):
            kk, vv = (jnp.repeat(jnp.asarray(x), h // hkv, axis=2) for x in (k, v))
            logits = jnp.einsum("bqhd,bkhd->bhqk", jnp.asarray(q), kk) / np.sqrt(d) + bias
            logits = jnp.where(jnp.tril(jnp.ones((s, s), bool)), logits, -jnp.inf)
            out = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(logits, axis=-1), vv)
            return jnp.sum(out * jnp.asarray(do))

        expected = jax.grad(loss64)(jnp.asarray(bias))
    assert rel_err(got, np.asarray(expected)) <= 1e-5
