"""Sliding-window attention on every path (XLA, Pallas, the cuDNN plumbing) against float64.

A window ``W`` lets query ``i`` see keys ``i - W < j`` (and ``j <= i`` causal, ``j < i + W``
bidirectional). Pallas runs in interpret mode; each case is one compiled forward + backward.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import (
    AttentionMask,
    attention,
    attention_mask,
    flash_attention,
    reference_attention,
)
from tjx.kernels._checks import check_qkv

from ._ref import masked, np_attention, np_mask, pretend_h100, rel_err
from .test_flash import _inputs, _run_flash, _segments

F32 = jnp.float32


def _reference(q, k, v, do, *, causal, window, ids=None):
    b, sq, sk = q.shape[0], q.shape[1], k.shape[1]
    mask = np_mask(b, sq, sk, causal=causal, q_ids=ids, kv_ids=ids, window=window)
    return np_attention(q, k, v, mask, d_out=do)


@pytest.mark.parametrize(
    "sq,h,hkv,window,causal,packed",
    [
        (70, 4, 2, 1, True, False),  # a window of one: each query sees itself only
        (70, 4, 2, 5, True, True),  # inside one 16-block, with packed documents and GQA
        (100, 2, 2, 37, True, False),  # crossing two block edges, odd length (padded keys)
        (64, 4, 1, 20, False, True),  # bidirectional window, MQA, packed
        (48, 2, 2, 200, True, False),  # wider than the sequence: plain causal
    ],
)
def test_a_window_hides_keys_further_than_it_on_xla_and_pallas(sq, h, hkv, window, causal, packed):
    q, k, v, do = _inputs(11 + sq + window, 2, sq, sq, h, hkv, 16, F32)
    ids = _segments(3, 2, sq) if packed else None
    want = _reference(q, k, v, do, causal=causal, window=window, ids=ids)
    kw = masked(causal=causal, window=window, segment_ids=None if ids is None else jnp.asarray(ids))
    got = _run_flash(q, k, v, do, F32, block_q=16, block_k=16, **kw)
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert rel_err(g, w) <= 1e-5, f"pallas {name}"

    def xla(q, k, v):
        return reference_attention(q, k, v, **kw)

    out, vjp = jax.vjp(xla, *(jnp.asarray(x, F32) for x in (q, k, v)))
    got = (out, *vjp(jnp.asarray(do, F32)))
    for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert rel_err(g, w) <= 1e-5, f"xla {name}"


def test_a_window_in_float64_matches_the_numpy_reference():
    with jax.enable_x64(True):
        q, k, v, do = _inputs(5, 2, 33, 33, 4, 2, 8, jnp.float64)
        ids = _segments(5, 2, 33)
        want = _reference(q, k, v, do, causal=True, window=6, ids=ids)
        fn = lambda q, k, v: attention(
            q, k, v, mask=AttentionMask(causal=True, segment_ids=jnp.asarray(ids), window=6)
        )
        out, vjp = jax.vjp(fn, *(jnp.asarray(x) for x in (q, k, v)))
        got = (out, *vjp(jnp.asarray(do)))
        assert out.dtype == jnp.float64
        for g, w in zip(got, want, strict=True):
            assert rel_err(g, w) <= 1e-12


def test_key_blocks_outside_the_window_are_never_read():
    """NaN in the first key block poisons every query block that loads it (0 · NaN = NaN even
    where the mask zeroes the probability), so finite rows prove the kernels skip it."""
    sq, window, blk = 128, 20, 16
    q, k, v, do = _inputs(9, 1, sq, sq, 2, 2, 16, F32)
    want = _reference(q, k, v, do, causal=True, window=window)
    kp, vp = k.copy(), v.copy()
    kp[:, :blk] = np.nan
    vp[:, :blk] = np.nan
    out, dq, _, _ = _run_flash(q, kp, vp, do, F32, causal=True, window=window, block_q=blk,
                               block_k=blk)  # fmt: skip
    # Query block i reaches keys from 16 i - 19: blocks from 3 on never touch key block 0.
    clear = slice(3 * blk, sq)
    assert np.isfinite(out[:, clear]).all() and np.isfinite(dq[:, clear]).all()
    assert rel_err(out[:, clear], want[0][:, clear]) <= 1e-5
    assert rel_err(dq[:, clear], want[1][:, clear]) <= 1e-5
    # The dK/dV kernel of a key block walks only the query blocks its window reaches: NaN in the
    # last query block leaves key blocks 0..4 (last key 79, seen by queries up to 98) exact.
    qp, dop = q.copy(), do.copy()
    qp[:, -blk:] = np.nan
    dop[:, -blk:] = np.nan
    _, _, dk, dv = _run_flash(qp, k, v, dop, F32, causal=True, window=window, block_q=blk,
                              block_k=blk)  # fmt: skip
    seen = slice(0, 5 * blk)
    assert np.isfinite(dk[:, seen]).all() and np.isfinite(dv[:, seen]).all()
    assert rel_err(dk[:, seen], want[2][:, seen]) <= 1e-5
    assert rel_err(dv[:, seen], want[3][:, seen]) <= 1e-5


def test_without_a_window_the_same_poison_reaches_every_row():
    """Control for the test above: a plain causal kernel loads key block 0 for every query."""
    q, k, v, do = _inputs(9, 1, 64, 64, 2, 2, 16, F32)
    k[:, :16] = np.nan
    out = _run_flash(q, k, v, do, F32, causal=True, block_q=16, block_k=16)[0]
    assert np.isnan(out[:, 16:]).any(axis=(-1, -2)).all()


def test_the_window_mask_is_the_documented_band():
    shapes = check_qkv(*(jnp.zeros((1, 6, 1, 4)),) * 3)
    causal = np.asarray(attention_mask(shapes, AttentionMask(causal=True, window=3)))[0, 0]
    both = np.asarray(attention_mask(shapes, AttentionMask(window=2)))[0, 0]
    i, j = np.arange(6)[:, None], np.arange(6)[None, :]
    np.testing.assert_array_equal(causal, (j <= i) & (i - j < 3))
    np.testing.assert_array_equal(both, np.abs(i - j) < 2)


@pytest.mark.parametrize("window", [0, -3, 2.5, True])
def test_a_window_that_is_not_a_positive_int_is_refused_by_name(window):
    x = jnp.zeros((1, 8, 2, 16))
    for fn in (attention, reference_attention, flash_attention):
        with pytest.raises(ValueError, match="`window` must be a positive int"):
            fn(x, x, x, AttentionMask(causal=True, window=window))


def test_cudnn_gets_its_own_window_and_refuses_a_bidirectional_one(monkeypatch):
    """On CPU, swap cuDNN for jax's XLA path (which applies the same ``local_window_size``) to
    check what reaches jax.nn.dot_product_attention and that it means the same band."""
    calls = []
    real = jax.nn.dot_product_attention

    def fake(*args, implementation=None, **kwargs):
        calls.append((implementation, kwargs))
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    pretend_h100(monkeypatch)
    rng = np.random.default_rng(4)
    q, k, v = (jnp.asarray(rng.standard_normal((2, 24, n, 16)), jnp.bfloat16) for n in (4, 2, 2))
    got = jax.jit(lambda q, k, v: attention(q, k, v, mask=AttentionMask(causal=True, window=5)))(
        q, k, v
    )
    assert calls[-1][0] == "cudnn" and calls[-1][1]["local_window_size"] == (4, 0)
    ref = reference_attention(q, k, v, mask=AttentionMask(causal=True, window=5))
    assert rel_err(got.astype(F32), ref.astype(F32)) <= 2e-2
    with pytest.raises(ValueError, match="`window` without `causal`.*'cudnn'"):
        attention(q, k, v, mask=AttentionMask(window=5), implementation="cudnn")
    n = len(calls)
    got = attention(
        q, k, v, mask=AttentionMask(window=5)
    )  # auto: the next kernel (XLA, nothing measured)
    assert len(calls) == n
    assert (
        rel_err(
            got.astype(F32), reference_attention(q, k, v, mask=AttentionMask(window=5)).astype(F32)
        )
        <= 2e-2
    )
