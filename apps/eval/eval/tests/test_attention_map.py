"""Attention-distance reference: float64 softmax over causal scores, checked against loops."""

from __future__ import annotations

import math

import numpy as np
from flax import nnx

from eval.attention_map import capture_qk, layer_distances, mean_distances, plot
from tjx import nn


def _loop_reference(q, k):
    b, s, h, d = q.shape
    rep = h // k.shape[2]
    out = np.zeros((b, h, s))
    for bi in range(b):
        for hi in range(h):
            for i in range(s):
                scores = [q[bi, i, hi] @ k[bi, j, hi // rep] / math.sqrt(d) for j in range(i + 1)]
                m = max(scores)
                w = [math.exp(x - m) for x in scores]
                z = sum(w)
                out[bi, hi, i] = sum(w[j] / z * (i - j) for j in range(i + 1))
    return out


def test_mean_distances_matches_loops(rng):
    q = rng.normal(size=(2, 7, 4, 8))
    k = rng.normal(size=(2, 7, 2, 8))  # grouped: 2 key heads for 4 query heads
    np.testing.assert_allclose(mean_distances(q, k), _loop_reference(q, k), rtol=1e-10)


def test_uniform_attention_has_mean_distance_half_the_position():
    q = np.zeros((1, 9, 1, 4))
    k = np.ones((1, 9, 1, 4))
    np.testing.assert_allclose(mean_distances(q, k)[0, 0], np.arange(9) / 2, atol=1e-12)


def test_capture_and_plot_on_a_small_gpt(tmp_path, rng):
    cfg = nn.GPT2Config(vocab_size=50, max_seq_len=16, d_model=16, num_layers=3, num_heads=2)
    model = nn.build_model(cfg, rngs=nnx.Rngs(0))
    tokens = rng.integers(0, 50, (2, 12)).astype(np.int32)
    dists = layer_distances(model, tokens)
    assert len(dists) == 3
    for d in dists:
        assert d.shape == (2 * 2 * 12,)
        assert (d >= 0).all() and (d <= 11).all()
    # The wrapper is removed afterwards.
    from tjx import kernels

    with capture_qk() as records:
        assert records == []
    assert kernels.attention.__name__ == "attention"
    png = plot(dists, tmp_path / "a.png", "test")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
