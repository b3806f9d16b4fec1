"""The split forward/backward (``attention_forward`` / ``attention_backward``) against float64:
one block alone, and blocks merged by their log-sum-exp as ring attention merges them."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import AttentionMask, attention_backward, attention_forward, block_kernel

from ._ref import np_attention, np_mask, pretend_h100, rel_err
from .test_flash import _inputs, _segments

F32 = jnp.float32


def _np_lse(q, k, mask, scale):
    g = q.shape[2] // k.shape[2]
    s = np.einsum("bqhd,bkhd->bhqk", q, np.repeat(k, g, axis=2)) * scale
    s = np.where(mask[:, None], s, -np.inf)
    mx = s.max(-1, keepdims=True)
    safe = np.where(np.isfinite(mx), mx, 0.0)
    total = np.exp(s - safe).sum(-1)
    with np.errstate(divide="ignore"):
        return np.where(total > 0, np.log(total) + safe[..., 0], -np.inf)


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_one_block_gives_the_output_lse_and_gradients_of_attention(impl):
    q, k, v, do = _inputs(1, 2, 40, 40, 4, 2, 16, F32)
    ids = _segments(1, 2, 40)
    ids[1] = 0  # a row that sees nothing: zeros and lse -inf
    mask = np_mask(2, 40, 40, causal=True, q_ids=ids, kv_ids=ids, window=9)
    want = np_attention(q, k, v, mask, d_out=do)
    kw = dict(
        mask=AttentionMask(causal=True, segment_ids=jnp.asarray(ids), window=9), implementation=impl
    )
    qj, kj, vj = (jnp.asarray(x, F32) for x in (q, k, v))
    out, lse = jax.jit(lambda q, k, v: attention_forward(q, k, v, **kw))(qj, kj, vj)
    assert rel_err(out, want[0]) <= 1e-5
    want_lse = _np_lse(q, k, mask, 0.25)
    lse = np.asarray(lse)
    assert np.array_equal(np.isinf(lse), np.isinf(want_lse))
    finite = np.isfinite(want_lse)
    assert np.max(np.abs(lse[finite] - want_lse[finite])) <= 1e-5
    grads = jax.jit(lambda *a: attention_backward(*a, **kw))(
        qj, kj, vj, out, jnp.asarray(lse), jnp.asarray(do, F32)
    )
    for g, w in zip(grads, want[1:], strict=True):
        assert rel_err(g, w) <= 1e-5


@pytest.mark.parametrize("impl", ["xla", "pallas"])
def test_blocks_merged_by_their_lse_are_the_whole_attention(impl):
    """Keys in two halves: outputs merged with weights exp(lse_i - lse), and each half's
    backward run with the merged output and lse, give the whole attention and its gradients."""
    s, half = 48, 24
    q, k, v, do = _inputs(2, 1, s, s, 4, 1, 16, F32)
    ids = _segments(2, 1, s)
    want = np_attention(q, k, v, np_mask(1, s, s, q_ids=ids, kv_ids=ids), d_out=do)
    qj, do_j = jnp.asarray(q, F32), jnp.asarray(do, F32)
    parts = []
    for sl in (slice(0, half), slice(half, s)):
        kv_ids = jnp.asarray(ids[:, sl])
        kw = dict(mask=AttentionMask(segment_ids=(jnp.asarray(ids), kv_ids)), implementation=impl)
        kj, vj = jnp.asarray(k[:, sl], F32), jnp.asarray(v[:, sl], F32)
        parts.append((kj, vj, kw, *attention_forward(qj, kj, vj, **kw)))
    lse = jnp.logaddexp(parts[0][4], parts[1][4])
    w = [jnp.where(jnp.isfinite(p[4]), jnp.exp(p[4] - lse), 0.0) for p in parts]
    out = sum(wi.transpose(0, 2, 1)[..., None] * p[3] for wi, p in zip(w, parts, strict=True))
    assert rel_err(out, want[0]) <= 1e-5
    grads = [attention_backward(qj, kj, vj, out, lse, do_j, **kw) for kj, vj, kw, _, _ in parts]
    assert rel_err(grads[0][0] + grads[1][0], want[1]) <= 1e-5
    assert rel_err(jnp.concatenate([grads[0][1], grads[1][1]], 1), want[2]) <= 1e-5
    assert rel_err(jnp.concatenate([grads[0][2], grads[1][2]], 1), want[3]) <= 1e-5


def test_token_index_places_the_causal_and_window_masks():
    """Queries of chunk 3 against keys of chunks 0 and 3 (load-balanced context parallelism):
    the masks follow the tokens' indices in the whole sequence, not their places in the call."""
    c = 8
    qi = np.arange(3 * c, 4 * c)
    ki = np.concatenate([np.arange(c), np.arange(3 * c, 4 * c)])
    q, k, v, do = _inputs(3, 1, c, 2 * c, 2, 2, 8, F32)
    mask = np_mask(1, c, 2 * c, causal=True, window=12, index=(qi, ki))
    want = np_attention(q, k, v, mask, d_out=do)
    kw = dict(
        mask=AttentionMask(causal=True, window=12),
        token_index=(jnp.asarray(qi), jnp.asarray(ki)),
    )
    qj, kj, vj = (jnp.asarray(x, F32) for x in (q, k, v))
    out, lse = attention_forward(qj, kj, vj, **kw)
    grads = attention_backward(qj, kj, vj, out, lse, jnp.asarray(do, F32), **kw)
    for g, w in zip((out, *grads), want, strict=True):
        assert rel_err(g, w) <= 1e-5


def test_block_kernel_choice_and_refusals(monkeypatch):
    assert block_kernel("auto") == "xla"  # CPU
    pretend_h100(monkeypatch)
    assert block_kernel("auto") == "pallas"
    index = (jnp.arange(4), jnp.arange(4))
    assert block_kernel("auto", token_index=index) == "xla"
    with pytest.raises(ValueError, match="cuDNN has no separate forward and backward"):
        block_kernel("cudnn")
    with pytest.raises(ValueError, match="`token_index` is served by the XLA path only"):
        block_kernel("pallas", token_index=index)
    x = jnp.zeros((1, 4, 1, 8))
    with pytest.raises(ValueError, match="`token_index` must be int arrays of shapes"):
        attention_forward(x, x, x, token_index=(jnp.arange(3), jnp.arange(4)), implementation="xla")
