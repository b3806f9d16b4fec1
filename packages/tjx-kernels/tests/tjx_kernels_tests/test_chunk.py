"""Chunked local attention (Llama 4's local layers, issue #56) on every path against float64.

Token ``t`` sees only keys of its own chunk ``t // C`` (and of its own packed segment; not after
it when causal). The dispatcher turns the chunks into segment ids, so XLA, Pallas (interpret
mode) and the cuDNN plumbing serve it unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import AttentionMask, attention
from tjx.kernels._checks import check_qkv, chunk_segment_ids

from ._ref import np_attention, np_mask, pretend_h100, rel_err
from .test_flash import _inputs, _segments

F32 = jnp.float32


def _chunk_mask(b, s, chunk, *, causal, ids=None):
    """The float64 reference's mask, from the definition: same chunk (and segment, causal)."""
    t = np.arange(s)
    same = (t[:, None] // chunk == t[None, :] // chunk)[None]
    return np_mask(b, s, s, causal=causal, q_ids=ids, kv_ids=ids) & same


@pytest.mark.parametrize(
    "s,chunk,causal,packed,impl",
    [
        (40, 8, True, False, "xla"),  # whole chunks
        (37, 16, True, True, "xla"),  # a short last chunk, packed documents across chunk edges
        (40, 5, False, True, "xla"),  # bidirectional within each chunk
        (33, 8, True, True, "pallas"),  # Pallas: the chunks as segment ids, blocks of 16
        (20, 64, True, False, "pallas"),  # a chunk longer than the sequence: plain causal
    ],
)
def test_each_token_sees_only_its_own_chunk_in_float64(s, chunk, causal, packed, impl):
    with jax.enable_x64(impl == "xla"):
        dtype = jnp.float64 if impl == "xla" else F32
        q, k, v, do = _inputs(s * chunk + packed, 2, s, s, 4, 2, 16, dtype)
        ids = _segments(s + chunk, 2, s) if packed else None
        want = np_attention(q, k, v, _chunk_mask(2, s, chunk, causal=causal, ids=ids), d_out=do)
        segs = None if ids is None else jnp.asarray(ids)

        mask = AttentionMask(causal=causal, segment_ids=segs, chunk=chunk)

        def fn(q, k, v):
            return attention(q, k, v, mask, implementation=impl)

        out, vjp = jax.vjp(jax.jit(fn), *(jnp.asarray(x, dtype) for x in (q, k, v)))
        got = (out, *vjp(jnp.asarray(do, dtype)))
        tol = 1e-12 if impl == "xla" else 1e-5
        for name, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
            assert rel_err(np.asarray(g, np.float64), w) <= tol, f"{impl} {name}"


def test_chunk_ids_give_each_segments_chunk_its_own_id_and_keep_padding():
    ids = jnp.asarray([[1, 1, 1, 2, 2, 2, 0, 0]], jnp.int32)
    shapes = check_qkv(*(jnp.zeros((1, 8, 1, 4)),) * 3)
    q_ids, kv_ids = chunk_segment_ids(ids, 3, shapes)
    np.testing.assert_array_equal(q_ids, kv_ids)
    row = np.asarray(q_ids)[0]
    assert row[6] == row[7] == 0  # padding stays padding
    # positions 0-2 chunk 0, 3-5 chunk 1: segment 1 is in chunk 0, segment 2 in chunk 1.
    assert len({row[0], row[1], row[2]}) == 1 and len({row[3], row[4], row[5]}) == 1
    assert row[0] != row[3]
    alone, _ = chunk_segment_ids(None, 3, shapes)
    np.testing.assert_array_equal(np.asarray(alone)[0], [1, 1, 1, 2, 2, 2, 3, 3])


def test_cudnn_gets_the_chunks_as_its_segment_mask(monkeypatch):
    """On CPU, cuDNN swapped for jax's XLA path: what reaches jax.nn.dot_product_attention is a
    segment mask, and it means the chunks."""
    calls = []
    real = jax.nn.dot_product_attention

    def fake(*args, implementation=None, **kwargs):
        calls.append(implementation)
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    pretend_h100(monkeypatch)
    q, k, v, _ = _inputs(3, 2, 24, 24, 4, 2, 16, jnp.bfloat16)
    args = [jnp.asarray(x, jnp.bfloat16) for x in (q, k, v)]
    got = jax.jit(lambda q, k, v: attention(q, k, v, mask=AttentionMask(causal=True, chunk=8)))(
        *args
    )
    assert calls and calls[-1] == "cudnn"
    want = np_attention(q, k, v, _chunk_mask(2, 24, 8, causal=True))
    assert rel_err(np.asarray(got.astype(F32), np.float64), want) <= 2e-2


@pytest.mark.parametrize(
    ("chunk", "sk", "words"),
    [
        (0, 8, "`chunk` must be a positive int"),
        (2.5, 8, "`chunk` must be a positive int"),
        (4, 9, "`chunk` needs as many queries as keys (q_len 8, kv_len 9)"),
    ],
)
def test_a_bad_chunk_is_refused_by_name(chunk, sk, words):
    q, kv = jnp.zeros((1, 8, 2, 16)), jnp.zeros((1, sk, 2, 16))
    with pytest.raises(ValueError) as err:
        attention(q, kv, kv, mask=AttentionMask(causal=True, chunk=chunk))
    assert words in str(err.value)
