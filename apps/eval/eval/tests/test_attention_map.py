"""Attention distances from the model's own attention probabilities (masks and biases included)."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from eval.attention_map import capture_weights, layer_distances, mean_distances, plot
from tjx import kernels, nn


def _loop_reference(p):
    b, h, s, _ = p.shape
    out = []
    for bi in range(b):
        for hi in range(h):
            for i in range(s):
                if p[bi, hi, i].sum() > 0:
                    out.append(sum(p[bi, hi, i, j] * (i - j) for j in range(s)))
    return np.asarray(out)


def test_mean_distances_match_loops_and_skip_rows_that_see_nothing(rng):
    p = rng.random((2, 3, 6, 6))
    p = np.tril(p)
    p /= p.sum(-1, keepdims=True)
    p[1, :, 4:] = 0.0  # padding queries
    got = mean_distances(p)
    np.testing.assert_allclose(got, _loop_reference(p), rtol=1e-12)
    assert got.shape == (2 * 3 * 6 - 3 * 2,)


def test_uniform_causal_attention_has_mean_distance_half_the_position():
    p = np.tril(np.ones((1, 1, 9, 9)))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(mean_distances(p), np.arange(9) / 2, atol=1e-12)


@pytest.mark.parametrize("position", ["learned", "alibi", "t5"])
def test_weights_are_the_ones_the_model_used(position, rng):
    """Each layer's captured probabilities times its values give that layer's attention output
    (so ALiBi and T5 biases are in them), and no query looks across a document boundary."""
    cfg = nn.GPT2Config(
        vocab_size=50,
        max_seq_len=16,
        d_model=16,
        num_layers=2,
        num_heads=2,
        position=nn.PositionConfig(kind=position),
    )
    model = nn.build_model(cfg, rngs=nnx.Rngs(0))
    tokens = rng.integers(0, 50, (2, 12)).astype(np.int32)
    seg = np.asarray([[1] * 7 + [2] * 5, [1] * 10 + [0] * 2], np.int32)
    pos = np.asarray([[*range(7), *range(5)], [*range(10), 0, 0]], np.int32)
    calls = []
    original = kernels.attention

    def spy(q, k, v, **kw):
        out = original(q, k, v, **kw)
        jax.debug.callback(lambda *a: calls.append([np.asarray(x) for x in a]), v, out)
        return out

    kernels.attention = spy
    try:
        with capture_weights() as weights:
            graphdef, state = nnx.split(model)
            out = jax.jit(
                lambda st: nnx.merge(graphdef, st)(tokens, positions=pos, segment_ids=seg)
            )(state)
            jax.block_until_ready(out)
            jax.effects_barrier()
    finally:
        kernels.attention = original
    assert len(weights) == len(calls) == 2
    for p, (v, attn_out) in zip(weights, calls, strict=True):
        rep = p.shape[1] // v.shape[2]
        v_heads = np.repeat(v.astype(np.float64), rep, axis=2)
        mixed = np.einsum("bhqk,bkhd->bqhd", p.astype(np.float64), v_heads)
        real = seg > 0
        np.testing.assert_allclose(mixed[real], attn_out[real], rtol=1e-4, atol=1e-5)
        assert np.all(p[0, :, 7:, :7] == 0.0)  # document 2 never sees document 1
        assert np.all(p[1, :, 10:] == 0.0)  # padding queries see nothing


def test_layer_distances_and_plot_on_a_small_gpt(tmp_path, rng):
    cfg = nn.GPT2Config(vocab_size=50, max_seq_len=16, d_model=16, num_layers=3, num_heads=2)
    model = nn.build_model(cfg, rngs=nnx.Rngs(0))
    batch = {
        "inputs": rng.integers(0, 50, (2, 12)).astype(np.int32),
        "segment_ids": np.ones((2, 12), np.int32),
        "positions": np.tile(np.arange(12, dtype=np.int32), (2, 1)),
    }
    dists = layer_distances(model, batch)
    assert len(dists) == 3
    for d in dists:
        assert d.shape == (2 * 2 * 12,)
        assert (d >= 0).all() and (d <= 11).all()
    with capture_weights() as records:  # the wrapper is removed afterwards
        assert records == []
    assert kernels.attention.__name__ == "attention"
    png = plot(dists, tmp_path / "a.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
