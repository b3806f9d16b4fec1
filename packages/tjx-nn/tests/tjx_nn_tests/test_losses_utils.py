"""Losses against numpy; parameter counts, FLOPs and the summary table."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests._helpers import build, gpt2_tiny

RS = np.random.RandomState(0)


def _np_ce(logits, labels, eps=0.0, z=0.0, ignore=-100):
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    logp = logits - lse[..., None]
    mask = labels != ignore
    safe = np.where(mask, labels, 0)
    nll = -np.take_along_axis(logp, safe[..., None], -1)[..., 0]
    smooth = -logp.mean(-1)
    loss = (1 - eps) * nll + eps * smooth + z * lse**2
    return (loss * mask).sum() / max(mask.sum(), 1)


@pytest.mark.parametrize("eps, z", [(0.0, 0.0), (0.1, 0.0), (0.0, 1e-3), (0.2, 1e-2)])
def test_cross_entropy_matches_numpy(eps, z):
    logits = RS.randn(3, 5, 11).astype(np.float32) * 3
    labels = RS.randint(0, 11, (3, 5))
    labels[0, :2] = -100
    got = tnn.cross_entropy_loss(
        jnp.asarray(logits), jnp.asarray(labels), label_smoothing=eps, z_loss=z
    )
    np.testing.assert_allclose(got, _np_ce(logits.astype(np.float64), labels, eps, z), rtol=1e-5)
    all_ignored = tnn.cross_entropy_loss(jnp.asarray(logits), jnp.full((3, 5), -100))
    assert float(all_ignored) == 0.0
    with pytest.raises(ValueError, match="label_smoothing"):
        tnn.cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels), label_smoothing=1.0)
    with pytest.raises(ValueError, match="z_loss"):
        tnn.cross_entropy_loss(jnp.asarray(logits), jnp.asarray(labels), z_loss=-1.0)


def test_mlm_and_classification_losses():
    logits = RS.randn(2, 6, 9).astype(np.float32)
    labels = np.full((2, 6), -100)
    labels[0, 1], labels[1, 4] = 3, 7
    np.testing.assert_allclose(
        tnn.masked_lm_loss(jnp.asarray(logits), jnp.asarray(labels)),
        _np_ce(logits.astype(np.float64), labels),
        rtol=1e-5,
    )
    cl = RS.randn(4, 3).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    np.testing.assert_allclose(
        tnn.classification_loss(jnp.asarray(cl), jnp.asarray(y), label_smoothing=0.1),
        _np_ce(cl.astype(np.float64), y, 0.1),
        rtol=1e-5,
    )


def test_contrastive_loss_matches_numpy():
    a, b = RS.randn(5, 8), RS.randn(5, 8)
    got = tnn.contrastive_loss(
        jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32), temperature=0.5
    )
    an = a / np.linalg.norm(a, axis=1, keepdims=True)
    bn = b / np.linalg.norm(b, axis=1, keepdims=True)
    logits = an @ bn.T / 0.5
    ref = 0.5 * (
        _np_ce(logits, np.arange(5), ignore=-1) + _np_ce(logits.T, np.arange(5), ignore=-1)
    )
    np.testing.assert_allclose(got, ref, rtol=1e-5)
    aligned = tnn.contrastive_loss(
        jnp.asarray(a, jnp.float32), jnp.asarray(a, jnp.float32), temperature=0.05
    )
    assert float(aligned) < float(got)
    with pytest.raises(ValueError, match="temperature"):
        tnn.contrastive_loss(jnp.asarray(a), jnp.asarray(b), temperature=0.0)


def test_mlm_mask_80_10_10():
    tokens = jnp.asarray(RS.randint(5, 100, (64, 128)), jnp.int32)
    special = jnp.zeros(tokens.shape, bool).at[:, 0].set(True)
    inputs, labels = tnn.mlm_mask(
        tokens, jax.random.key(0), mask_id=1, vocab_size=100, special_mask=special
    )
    inputs, labels, tokens = map(np.asarray, (inputs, labels, tokens))
    sel = labels != -100
    assert 0.13 < sel.mean() < 0.17 and not sel[:, 0].any()
    np.testing.assert_array_equal(labels[sel], tokens[sel])
    np.testing.assert_array_equal(inputs[~sel], tokens[~sel])
    masked = (inputs[sel] == 1).mean()
    unchanged = (inputs[sel] == tokens[sel]).mean()
    assert 0.77 < masked < 0.83 and 0.07 < unchanged < 0.13
    with pytest.raises(ValueError, match="mask_prob"):
        tnn.mlm_mask(
            jnp.asarray(tokens), jax.random.key(0), mask_id=1, vocab_size=100, mask_prob=0.0
        )


def test_count_params_and_summary():
    cfg = gpt2_tiny()
    model = build(cfg)
    n = tnn.count_params(model)
    d, L, V, P, m = 32, 2, 64, 16, 128
    per_layer = 4 * d + (3 * d * d + 3 * d) + (d * d + d) + (d * m + m) + (m * d + d)
    assert n == V * d + P * d + L * per_layer + 2 * d
    assert tnn.config_param_count(cfg) == n
    text = tnn.summary(model)
    assert "stack.layers.0.attn.query.kernel" in text and "embed,heads,head_dim" in text
    assert text.strip().splitlines()[-1].split()[-1] == f"{n:,}"
    abstract = nnx.eval_shape(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0)))
    assert tnn.count_params(abstract) == n


def test_set_flat_params_errors():
    model = build(gpt2_tiny(num_layers=1))
    flat = tnn.get_flat_params(model)
    with pytest.raises(ValueError, match="missing"):
        tnn.set_flat_params(model, {k: v for k, v in flat.items() if k != "embed.embedding"})
    with pytest.raises(ValueError, match="unused"):
        tnn.set_flat_params(model, {**flat, "extra": np.zeros(1)})
    scanned = build(gpt2_tiny(num_layers=1, scan_layers=True))
    with pytest.raises(ValueError, match="missing"):
        tnn.set_flat_params(scanned, {k: v for k, v in flat.items() if "layers" not in k})


def test_hidden_path_with_chunked_cross_entropy_matches_logits_path():
    from tjx.kernels import chunked_cross_entropy

    model = build(gpt2_tiny())
    toks = jnp.asarray(RS.randint(0, 64, (2, 8)), jnp.int32)
    labels = jnp.roll(toks, -1, axis=1).at[:, -1].set(-100)
    ref = tnn.cross_entropy_loss(model(toks), labels, z_loss=1e-3)
    out = chunked_cross_entropy(
        model(toks, return_hidden=True), model.unembedding(), labels, chunk_size=4, z_loss=1e-3
    )
    np.testing.assert_allclose(out.loss, ref, rtol=1e-5)
