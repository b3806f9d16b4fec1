"""T5 relative position bias (``position.kind="t5"``): buckets, forward, grads, scan, decoding."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from tjx import nn as tnn
from tjx_nn_tests import _t5_reference as ref
from tjx_nn_tests._helpers import TINY, build, llama_tiny

DIST = np.arange(-300, 301)
# Small tables reach the log-spaced and clipped buckets within the tiny models' 16 positions.
SMALL = {"position.relative_buckets": 8, "position.relative_max_distance": 10}
LLAMA_LIKE = dict(
    norm=tnn.NormConfig(kind="rmsnorm"),
    mlp=tnn.MLPConfig(activation="swiglu", dim=48),
    use_bias=False,
)


def _encdec(**kw):
    fields = {**TINY, **LLAMA_LIKE, "position.kind": "t5", **kw}
    return tnn.make_config(tnn.EncoderDecoderConfig, fields)


@pytest.mark.parametrize("bidirectional", [True, False])
@pytest.mark.parametrize("num_buckets,max_distance", [(32, 128), (8, 10), (64, 300), (6, 7)])
def test_bucket_equals_float64_reference_on_every_distance(
    bidirectional, num_buckets, max_distance
):
    kw = dict(bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
    expected = np.array([ref.bucket(int(r), **kw) for r in DIST])
    got = np.asarray(jax.jit(lambda r: tnn.t5_relative_bucket(r, **kw))(jnp.asarray(DIST)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, expected)
    assert got.min() == 0 and got.max() == num_buckets - 1  # every bucket range is reached
    # Same on a 2-D input (the [b, s_q, s_k] layout the models use).
    grid = DIST[:40].reshape(5, 8)
    np.testing.assert_array_equal(
        tnn.t5_relative_bucket(jnp.asarray(grid), **kw), expected[:40].reshape(5, 8)
    )


def test_bucket_hand_checked_values():
    # Bidirectional, 32 buckets (16 per side, 8 exact), max distance 128:
    # n >= 8 → 8 + floor(log(n/8) / log(16) · 8); keys after the query add 16.
    bi = {0: 0, -1: 1, -7: 7, -8: 8, -12: 9, -16: 10, -32: 12, -64: 14, -100: 15, -127: 15,
          -128: 15, -300: 15, 1: 17, 7: 23, 16: 26, 32: 28, 200: 31}  # fmt: skip
    # Causal, 32 buckets (16 exact), max 128: n >= 16 → 16 + floor(log(n/16) / log(8) · 16);
    # keys after the query (positive relative positions) share bucket 0.
    uni = {5: 0, 300: 0, 0: 0, -5: 5, -15: 15, -16: 16, -20: 17, -32: 21, -64: 26, -100: 30,
           -127: 31, -128: 31, -300: 31}  # fmt: skip
    for table, bidirectional in ((bi, True), (uni, False)):
        rel = jnp.asarray(list(table), jnp.int32)
        got = tnn.t5_relative_bucket(rel, bidirectional=bidirectional)
        assert np.asarray(got).tolist() == list(table.values()), bidirectional


def test_bucket_argument_errors():
    with pytest.raises(ValueError, match=r"num_buckets must be an int >= 4"):
        tnn.t5_relative_bucket(jnp.zeros(3, jnp.int32), bidirectional=True, num_buckets=3)
    with pytest.raises(ValueError, match=r"max_distance must be an int > 16"):
        tnn.t5_relative_bucket(jnp.zeros(3, jnp.int32), bidirectional=False, max_distance=16)


@pytest.mark.parametrize(
    "kw, pattern",
    [
        (dict(relative_buckets=3), r"relative_buckets must be an even int >= 4; got 3"),
        (dict(relative_buckets=33), r"relative_buckets must be an even int >= 4"),
        (dict(relative_buckets=True), r"relative_buckets must be an even int >= 4"),
        (dict(relative_max_distance=16), r"relative_max_distance must be an int > "),
        (
            dict(relative_buckets=8, relative_max_distance=4.5),
            r"relative_max_distance .* > .* = 4",
        ),
    ],
)
def test_bad_relative_config_values_name_field_and_allowed(kw, pattern):
    """The position section checks T5's buckets itself, whatever model holds it."""
    with pytest.raises(ValueError, match=f"^PositionConfig.{pattern}"):
        tnn.PositionConfig(kind="t5", **kw)


def test_position_choice_per_family():
    assert "t5" in tnn.POSITIONS
    assert (
        _encdec().position.kind == "t5"
        and llama_tiny(position=tnn.PositionConfig(kind="t5")).position.relative_buckets == 32
    )
    # BERT always has a learned table, ViT only absolute positions: no T5 bias there.
    with pytest.raises(ValueError, match=re.escape("BertConfig.position.kind must be one of")):
        tnn.BertConfig(**TINY, position=tnn.PositionConfig(kind="t5"))
    with pytest.raises(ValueError, match="ViTConfig.position"):
        tnn.ViTConfig(
            d_model=32,
            num_heads=4,
            image_size=8,
            patch_size=4,
            position=tnn.PositionConfig(kind="t5"),
        )


def _bias(p, name, q_pos, k_pos, cfg, bidirectional):
    return ref.bias_matrix(
        p[f"{name}.relative_bias.table"],
        q_pos,
        k_pos,
        bidirectional=bidirectional,
        num_buckets=cfg.position.relative_buckets,
        max_distance=cfg.position.relative_max_distance,
    )


def test_decoder_forward_equals_naive_reference():
    cfg = llama_tiny(**{"position.kind": "t5"}, **SMALL)  # GQA: 4 query heads, 2 kv heads
    model = build(cfg, seed=1)
    p = ref.randomize(model, 1)
    toks = np.random.RandomState(2).randint(0, 64, (2, 12)).astype(np.int32)
    # Row 0: two packed documents (positions restart) then padding; row 1: one document.
    seg = np.array([[1] * 5 + [2] * 5 + [0] * 2, [1] * 12])
    pos = np.array([list(range(5)) + list(range(5)) + [0, 0], list(range(12))])
    got = model(jnp.asarray(toks), positions=jnp.asarray(pos), segment_ids=jnp.asarray(seg))
    x = p["embed.embedding"][toks]
    bias = _bias(p, "stack", pos, pos, cfg, False)  # one bias, every layer
    for i in range(cfg.num_layers):
        x = ref.layer(p, f"stack.layers.{i}", x, cfg.norm.eps, self_bias=bias,
                      self_mask=ref.self_mask(seg, causal=True))  # fmt: skip
    want = ref.logits(p, ref.rms(x, p["final_norm.scale"], cfg.norm.eps))
    real = seg > 0
    np.testing.assert_allclose(np.asarray(got)[real], want[real], rtol=1e-4, atol=2e-5)
    # The bias matters: without it (table zeroed) the logits move well beyond the tolerance.
    model.stack.relative_bias.table.set_value(
        jnp.zeros_like(model.stack.relative_bias.table.get_value())
    )
    off = model(jnp.asarray(toks), positions=jnp.asarray(pos), segment_ids=jnp.asarray(seg))
    assert np.abs(np.asarray(off)[real] - want[real]).max() > 1e-2


def test_encdec_forward_equals_naive_reference():
    cfg = _encdec(num_kv_heads=2, tie_embeddings=False, num_encoder_layers=2, **SMALL)
    model = build(cfg, seed=2)
    p = ref.randomize(model, 3)
    rs = np.random.RandomState(4)
    src, tgt = rs.randint(0, 64, (2, 13)), rs.randint(0, 64, (2, 9))
    src_seg = (np.arange(13)[None] < np.array([[13], [8]])).astype(np.int32)  # row 1 padded
    got = model(jnp.asarray(src), jnp.asarray(tgt), src_segment_ids=jnp.asarray(src_seg))
    eps = cfg.norm.eps
    s_pos = np.broadcast_to(np.arange(13), (2, 13))
    t_pos = np.broadcast_to(np.arange(9), (2, 9))
    x = p["embed.embedding"][src]  # no absolute positions with t5
    enc_bias = _bias(p, "encoder", s_pos, s_pos, cfg, True)
    for i in range(2):
        x = ref.layer(p, f"encoder.layers.{i}", x, eps, self_bias=enc_bias,
                      self_mask=ref.self_mask(src_seg, causal=False))  # fmt: skip
    memory = ref.rms(x, p["encoder_norm.scale"], eps)
    y = p["embed.embedding"][tgt]
    dec_bias = _bias(p, "decoder", t_pos, t_pos, cfg, False)
    cross = np.broadcast_to((src_seg > 0)[:, None, :], (2, 9, 13))  # no relative bias
    for i in range(2):
        y = ref.layer(p, f"decoder.layers.{i}", y, eps, self_bias=dec_bias,
                      self_mask=ref.self_mask(np.ones((2, 9), int), causal=True),
                      memory=memory, cross_mask=cross)  # fmt: skip
    want = ref.logits(p, ref.rms(y, p["decoder_norm.scale"], eps))
    np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=2e-5)


def test_one_table_per_stack_axes_and_grads_reach_it():
    cfg = _encdec(num_kv_heads=2, scan_layers=True)
    model = build(cfg)
    names = [n for n in tnn.get_flat_params(model) if "relative" in n]
    assert names == ["decoder.relative_bias.table", "encoder.relative_bias.table"]
    assert model.encoder.relative_bias.table.get_value().shape == (32, 4)
    assert model.pos_embed is None
    spec = nnx.get_partition_spec(nnx.state(model, nnx.Param))
    assert spec["encoder"]["relative_bias"]["table"].get_value() == PartitionSpec(None, "heads")
    # The table is a lookup: the parameter count grows by it, the matmul count does not.
    plain = cfg.replace(**{"position.kind": "none"})
    assert tnn.config_param_count(cfg) == tnn.config_param_count(plain) + 2 * 32 * 4
    assert tnn.matmul_param_count(cfg) == tnn.matmul_param_count(plain)
    assert tnn.flops_per_token(cfg, 8) == tnn.flops_per_token(plain, 8)
    src = jnp.asarray(np.random.RandomState(5).randint(0, 64, (2, 6)), jnp.int32)
    tgt = jnp.asarray(np.random.RandomState(6).randint(0, 64, (2, 5)), jnp.int32)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(src, tgt) ** 2)))(model)
    enc = np.asarray(grads["encoder"]["relative_bias"]["table"].get_value())
    dec = np.asarray(grads["decoder"]["relative_bias"]["table"].get_value())
    # Distances -5..5 use encoder buckets 0..5 and 17..21; the decoder (5 targets) only 0..4.
    used_enc = np.zeros(32, bool)
    used_enc[[0, 1, 2, 3, 4, 5, 17, 18, 19, 20, 21]] = True
    assert np.all(np.abs(enc[used_enc]).sum(-1) > 0) and np.all(enc[~used_enc] == 0)
    assert np.all(np.abs(dec[:5]).sum(-1) > 0) and np.all(dec[5:] == 0)


def _loss_and_grads(model, src, tgt):
    def loss(m):
        return jnp.mean(jax.nn.log_softmax(m(src, tgt))[..., 0])

    return nnx.jit(nnx.value_and_grad(loss))(model)


def test_scanned_and_rematted_equal_unrolled():
    src = jnp.asarray(np.random.RandomState(7).randint(0, 64, (2, 7)), jnp.int32)
    tgt = jnp.asarray(np.random.RandomState(8).randint(0, 64, (2, 6)), jnp.int32)
    base = build(_encdec(num_kv_heads=2, **SMALL), seed=3)
    flat = tnn.get_flat_params(base)
    ref_loss, ref_grads = _loss_and_grads(base, src, tgt)
    tmp = build(_encdec(num_kv_heads=2, **SMALL), seed=3)
    nnx.update(tmp, nnx.State(ref_grads))
    ref_g = tnn.get_flat_params(tmp)
    assert np.abs(ref_g["encoder.relative_bias.table"]).max() > 0
    for kw in (dict(scan_layers=True), dict(scan_layers=True, remat="full")):
        cfg = _encdec(num_kv_heads=2, **SMALL, **kw)
        model = build(cfg, seed=9)
        tnn.set_flat_params(model, flat)
        loss, grads = _loss_and_grads(model, src, tgt)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        tmp = build(cfg, seed=9)
        nnx.update(tmp, nnx.State(grads))
        flat_g = tnn.get_flat_params(tmp)
        assert set(flat_g) == set(ref_g)
        for name in ref_g:
            np.testing.assert_allclose(
                flat_g[name], ref_g[name], rtol=1e-4, atol=1e-6, err_msg=f"{kw} {name}"
            )


def test_decode_bias_row_equals_full_sequence_row():
    bias = tnn.RelativePositionBias(llama_tiny(**SMALL), rngs=nnx.Rngs(0), bidirectional=False)
    t = 14
    full = bias(jnp.arange(t)[None], jnp.arange(t)[None])
    for p in (0, 5, 13):
        row = bias(jnp.asarray([[p]]), jnp.arange(t)[None])
        np.testing.assert_array_equal(row[0, :, 0, : p + 1], full[0, :, p, : p + 1])
