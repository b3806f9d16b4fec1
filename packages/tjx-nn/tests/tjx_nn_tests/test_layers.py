"""Layers against direct numpy/jnp references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.kernels import AttentionMask

RS = np.random.RandomState(0)


def test_layernorm_and_rmsnorm_match_numpy_with_f32_stats():
    x = RS.randn(3, 5, 16).astype(np.float32) * 3 + 1
    ln = tnn.LayerNorm(16, rngs=nnx.Rngs(0), eps=1e-5)
    ln.scale.set_value(jnp.asarray(RS.randn(16), jnp.float32))
    ln.bias.set_value(jnp.asarray(RS.randn(16), jnp.float32))
    mu = x.mean(-1, keepdims=True)
    ref = (x - mu) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * np.asarray(ln.scale) + np.asarray(
        ln.bias
    )
    np.testing.assert_allclose(ln(jnp.asarray(x)), ref, rtol=1e-5, atol=1e-5)
    rms = tnn.RMSNorm(16, rngs=nnx.Rngs(0), eps=1e-6)
    ref = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(rms(jnp.asarray(x)), ref, rtol=1e-5, atol=1e-5)
    # bf16 compute: output is bf16 but statistics came from float32: against a float64
    # reference on the same bf16 inputs, the only error left is the final rounding to bf16
    # (unit roundoff 2**-8). Statistics in bf16 would be off by ~1e-3 absolute near y = 0.
    bf = tnn.LayerNorm(16, rngs=nnx.Rngs(0), precision=tnn.Precision.bf16(), use_bias=False)
    xb = jnp.asarray(x, jnp.bfloat16)
    y = bf(xb)
    assert y.dtype == jnp.bfloat16 and bf.scale.get_value().dtype == jnp.float32
    x64 = np.asarray(xb.astype(jnp.float32), np.float64)
    mu64 = x64.mean(-1, keepdims=True)
    ref = (x64 - mu64) / np.sqrt(x64.var(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(np.asarray(y, np.float64), ref, rtol=2**-8, atol=1e-6)


def test_layernorm_near_constant_input_is_finite():
    x = jnp.full((2, 64), 1000.0, jnp.float32) + jnp.asarray(RS.randn(2, 64) * 1e-6, jnp.float32)
    ln = tnn.LayerNorm(64, rngs=nnx.Rngs(0))
    y = ln(x)
    assert bool(jnp.all(jnp.isfinite(y)))
    g = jax.grad(lambda v: jnp.sum(ln(v) ** 2))(x)
    assert bool(jnp.all(jnp.isfinite(g)))
    y16 = tnn.LayerNorm(64, rngs=nnx.Rngs(0), precision=tnn.Precision.bf16())(x)
    assert bool(jnp.all(jnp.isfinite(y16)))


def test_rope_matches_numpy_rotation_and_is_relative():
    b, s, h, d = 1, 6, 2, 8
    x = RS.randn(b, s, h, d).astype(np.float32)
    pos = np.arange(s)[None]
    out = np.asarray(tnn.apply_rope(jnp.asarray(x), jnp.asarray(pos), theta=100.0))
    half = d // 2
    inv = 1.0 / (100.0 ** (np.arange(half) / half))
    ang = pos[..., None] * inv
    cos, sin = np.cos(ang)[:, :, None], np.sin(ang)[:, :, None]
    x1, x2 = x[..., :half], x[..., half:]
    ref = np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)
    # q·k depends only on the position difference.
    q, k = jnp.asarray(RS.randn(1, 1, 1, d), jnp.float32), jnp.asarray(RS.randn(1, 1, 1, d))
    k = k.astype(jnp.float32)

    def dot(i, j):
        qi = tnn.apply_rope(q, jnp.asarray([[i]]))
        kj = tnn.apply_rope(k, jnp.asarray([[j]]))
        return float(jnp.sum(qi * kj))

    assert dot(5, 3) == pytest.approx(dot(9, 7), rel=1e-4)


def test_alibi_and_sinusoidal():
    np.testing.assert_allclose(tnn.alibi_slopes(8), [2.0 ** -(i + 1) for i in range(8)])
    assert tnn.alibi_slopes(6).shape == (6,)
    pos = jnp.arange(4)[None]
    bias = np.asarray(tnn.alibi_bias(pos, pos, 2))
    assert bias.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(bias[0, 0], -0.0625 * np.abs(np.arange(4)[:, None] - np.arange(4)))
    sin = np.asarray(tnn.sinusoidal(jnp.arange(5), 8))
    freq = np.exp(-np.log(10000.0) * np.arange(4) / 4)
    ang = np.arange(5)[:, None] * freq
    np.testing.assert_allclose(sin, np.concatenate([np.sin(ang), np.cos(ang)], -1), atol=1e-5)
    assert tnn.sinusoidal(jnp.arange(3), 7).shape == (3, 7)


@pytest.mark.parametrize("act", ["gelu", "gelu_exact", "relu", "silu", "swiglu", "geglu"])
def test_mlp_matches_reference(act):
    mlp = tnn.MLP(8, 12, rngs=nnx.Rngs(1), activation_name=act)
    x = RS.randn(2, 3, 8).astype(np.float32)
    w_in = np.asarray(mlp.fc_in.kernel)
    b_in = np.asarray(mlp.fc_in.bias)
    w_out, b_out = np.asarray(mlp.fc_out.kernel), np.asarray(mlp.fc_out.bias)
    fns = {
        "gelu": lambda v: jax.nn.gelu(v, approximate=True),
        "gelu_exact": lambda v: jax.nn.gelu(v, approximate=False),
        "relu": jax.nn.relu,
        "silu": jax.nn.silu,
        "swiglu": jax.nn.silu,
        "geglu": lambda v: jax.nn.gelu(v, approximate=True),
    }
    if act in ("swiglu", "geglu"):
        gate = x @ np.asarray(mlp.fc_gate.kernel) + np.asarray(mlp.fc_gate.bias)
        hidden = np.asarray(fns[act](gate)) * (x @ w_in + b_in)
    else:
        hidden = np.asarray(fns[act](x @ w_in + b_in))
    np.testing.assert_allclose(mlp(jnp.asarray(x)), hidden @ w_out + b_out, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="mlp.activation"):
        tnn.MLP(8, 12, rngs=nnx.Rngs(1), activation_name="tanh")


def _np_attention(q, k, v, causal):
    b, s, h, d = q.shape
    g = h // k.shape[2]
    k = np.repeat(k, g, axis=2)
    v = np.repeat(v, g, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(d)
    if causal:
        logits = np.where(np.tril(np.ones((s, s), bool)), logits, -np.inf)
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_attention_module_matches_numpy_gqa(kv_heads):
    cfg = tnn.LlamaConfig(
        vocab_size=8,
        max_seq_len=8,
        d_model=16,
        num_layers=1,
        num_heads=4,
        num_kv_heads=kv_heads,
        position=tnn.PositionConfig(kind="none"),
    )
    attn = tnn.Attention(cfg, rngs=nnx.Rngs(0), causal=True)
    x = RS.randn(2, 5, 16).astype(np.float32)
    q = np.einsum("bsd,dhk->bshk", x, np.asarray(attn.query.kernel))
    k = np.einsum("bsd,dhk->bshk", x, np.asarray(attn.key.kernel))
    v = np.einsum("bsd,dhk->bshk", x, np.asarray(attn.value.kernel))
    o = _np_attention(q, k, v, causal=True)
    ref = np.einsum("bshk,hkd->bsd", o, np.asarray(attn.out.kernel))
    out, cache = attn(jnp.asarray(x))
    assert cache is None
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)


def test_cross_attention_uses_context_and_masks_padding():
    cfg = tnn.EncoderDecoderConfig(
        vocab_size=8, max_seq_len=8, d_model=16, num_layers=1, num_heads=2
    )
    attn = tnn.Attention(cfg, rngs=nnx.Rngs(0), cross=True)
    x = jnp.asarray(RS.randn(1, 3, 16), jnp.float32)
    ctx = jnp.asarray(RS.randn(1, 4, 16), jnp.float32)
    ids = (jnp.ones((1, 3), jnp.int32), jnp.asarray([[1, 1, 0, 0]], jnp.int32))
    full, _ = attn(x, context=ctx[:, :2])
    masked, _ = attn(x, context=ctx, mask=AttentionMask(segment_ids=ids))
    np.testing.assert_allclose(full, masked, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="context"):
        attn(x)


def test_dense_embed_dropout():
    emb = tnn.Embed(10, 4, rngs=nnx.Rngs(0))
    ids = jnp.asarray([[1, 7]])
    np.testing.assert_allclose(emb(ids)[0, 1], np.asarray(emb.embedding)[7])
    h = jnp.asarray(RS.randn(2, 4), jnp.float32)
    np.testing.assert_allclose(
        emb.attend(h), np.asarray(h) @ np.asarray(emb.embedding).T, rtol=1e-5, atol=1e-6
    )
    assert emb.unembedding().shape == (4, 10)
    x = jnp.ones((200, 50))
    assert tnn.dropout(x, 0.5, None, deterministic=True) is x
    y = tnn.dropout(x, 0.25, jax.random.key(0), deterministic=False)
    kept = np.asarray(y) != 0
    assert 0.7 < kept.mean() < 0.8
    np.testing.assert_allclose(np.asarray(y)[kept], 1 / 0.75, rtol=1e-6)
    with pytest.raises(ValueError, match="PRNG key"):
        tnn.dropout(x, 0.1, None, deterministic=False)
    dense = tnn.Dense((4,), (2, 3), ("embed",), ("heads", "head_dim"), rngs=nnx.Rngs(0))
    assert dense(h).shape == (2, 2, 3)
    with pytest.raises(ValueError, match="unknown logical axis"):
        tnn.make_param(nnx.Rngs(0), jax.nn.initializers.zeros, (2,), ("depth",))
    with pytest.raises(ValueError, match="one entry per dim"):
        tnn.make_param(nnx.Rngs(0), jax.nn.initializers.zeros, (2, 2), ("embed",))


def test_the_stack_builds_one_mask_that_every_layer_refines_for_its_kernel(monkeypatch):
    """A Stack builds the call's AttentionMask once (its segment ids) and hands that one value to
    every block; each attention layer adds its own parts (causal, window) for the kernel."""
    import tjx.kernels

    cfg = tnn.LlamaConfig(
        vocab_size=16,
        max_seq_len=8,
        d_model=16,
        num_layers=2,
        num_heads=2,
        attention=tnn.AttentionConfig(sliding_window=3),
    )
    model = tnn.Llama(cfg, rngs=nnx.Rngs(0))
    ids = jnp.asarray([[1, 1, 1, 2, 2, 2, 0, 0]], jnp.int32)
    blocks, kernel_masks = [], []
    block_call, attention = tnn.Block.__call__, tjx.kernels.attention

    def seen_block(self, x, **kw):
        blocks.append(kw["inputs"].mask)
        return block_call(self, x, **kw)

    def seen_attention(q, k, v, mask=None, **kw):
        kernel_masks.append(mask)
        return attention(q, k, v, mask, **kw)

    monkeypatch.setattr(tnn.Block, "__call__", seen_block)
    monkeypatch.setattr(tjx.kernels, "attention", seen_attention)
    model(jnp.zeros((1, 8), jnp.int32), segment_ids=ids)
    assert len(blocks) == 2 and blocks[0] is blocks[1]  # one value, built once
    assert blocks[0].segment_ids is ids and not blocks[0].causal and blocks[0].window is None
    assert len(kernel_masks) == 2
    for mask in kernel_masks:
        assert mask.causal and mask.window == 3 and mask.segment_ids is ids
