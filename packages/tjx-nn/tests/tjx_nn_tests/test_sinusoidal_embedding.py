"""Sinusoidal positions in token models: the embedded input is the token row plus sinusoids on
the token embeddings' scale (amplitude ``SINUSOID_RMS_RATIO * init.std * sqrt(2)``), checked in
float64 against a NumPy reference, for the decoder and the encoder-decoder."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx import nn as tnn
from tjx.nn.embeddings import SINUSOID_RMS_RATIO, sinusoid_amplitude
from tjx_nn_tests._helpers import TINY, build, gpt2_tiny

F64 = tnn.Precision(jnp.float64, jnp.float64)


def _reference(table: np.ndarray, tokens: np.ndarray, positions: np.ndarray, std: float):
    """token rows + amplitude · [sin(p·f), cos(p·f)], f = 10000^(−i/half), all in float64."""
    half = table.shape[1] // 2
    freq = np.exp(-np.log(10000.0) * np.arange(half, dtype=np.float64) / half)
    ang = positions[..., None].astype(np.float64) * freq
    waves = np.concatenate([np.sin(ang), np.cos(ang)], axis=-1)
    return table[tokens] + SINUSOID_RMS_RATIO * std * np.sqrt(2.0) * waves


@pytest.mark.parametrize("kind", ["decoder", "encoder-decoder"])
def test_sinusoidal_embedding_is_tokens_plus_sinusoids_at_the_token_scale_float64(kind):
    jax.config.update("jax_enable_x64", True)
    try:
        rng = np.random.default_rng(7)
        std = float(rng.uniform(0.01, 0.05))  # a fresh init scale: the amplitude must follow it
        cfg_kw = dict(
            position=tnn.PositionConfig(kind="sinusoidal"),
            init=tnn.InitConfig(std=std),
            precision=F64,
        )
        if kind == "decoder":
            model = build(gpt2_tiny(**cfg_kw), seed=3)
        else:
            model = build(tnn.EncoderDecoderConfig(**{**TINY, **cfg_kw}), seed=3)
        tokens = rng.integers(0, TINY["vocab_size"], (2, 9)).astype(np.int32)
        if kind == "decoder":
            positions = rng.integers(0, TINY["max_seq_len"], (2, 9)).astype(np.int32)
            got = model.embed_tokens(jnp.asarray(tokens), jnp.asarray(positions))
        else:
            positions = np.broadcast_to(np.arange(9), (2, 9))
            got, _ = model._embed(jnp.asarray(tokens), None, True)
        table = np.asarray(model.embed.embedding.get_value(), np.float64)
        assert got.dtype == jnp.float64
        np.testing.assert_allclose(
            np.asarray(got), _reference(table, tokens, positions, std), rtol=0, atol=1e-12
        )
    finally:
        jax.config.update("jax_enable_x64", False)


def test_sinusoids_match_the_token_embeddings_rms_at_initialisation():
    """At initialisation the sinusoids' rms over a window is the token rows' (times the ratio),
    instead of the ~35× excess of amplitude-1 sinusoids at d 64 (they drowned the tokens)."""
    model = build(
        gpt2_tiny(
            d_model=64,
            vocab_size=4096,
            position=tnn.PositionConfig(kind="sinusoidal"),
            max_seq_len=64,
        )
    )
    tokens_rms = float(np.sqrt(np.mean(np.asarray(model.embed.embedding.get_value()) ** 2)))
    amp = sinusoid_amplitude(model.config.init.std)
    waves = amp * np.asarray(tnn.sinusoidal(jnp.arange(64), 64))
    assert float(np.sqrt(np.mean(waves**2))) == pytest.approx(amp / np.sqrt(2), rel=1e-6)
    assert amp / np.sqrt(2) == pytest.approx(SINUSOID_RMS_RATIO * tokens_rms, rel=0.02)
