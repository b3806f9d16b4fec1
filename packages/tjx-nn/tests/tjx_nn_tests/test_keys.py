"""PRNG keys: no public function draws twice from one key, and sampling names its randomness.

Every dropout site of a model reports the key it was given (through a debug callback, so eager
calls, ``jit`` and ``nnx.scan`` alike); a key passed to two sites, two layers or two sub-layers
fails the tests. Sampling is checked statistically where the outcome is random: each threshold
is stated with the odds of crossing it when the keys are independent.
"""

from itertools import combinations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import tjx.kernels
from tjx import nn as tnn
from tjx.nn import bert as bert_mod
from tjx.nn import block as block_mod
from tjx.nn import decoder as decoder_mod
from tjx.nn import encdec as encdec_mod
from tjx_nn_tests._helpers import TINY, build, gpt2_tiny, llama_tiny

V = TINY["vocab_size"]


def _record_dropout_keys(monkeypatch):
    """Patch every dropout site; return the list that fills with (site, key bits, keep mask)."""
    draws = []

    def report(site, rng, mask):
        def append(bits, keep):
            draws.append((site, tuple(np.asarray(bits).ravel().tolist()), np.asarray(keep)))

        jax.debug.callback(append, jax.random.key_data(rng), mask)

    def wrap_dropout(module, site):
        original = module.dropout

        def dropout(x, rate, rng, *, deterministic):
            if rng is not None and not deterministic and rate > 0:
                report(site, rng, original(jnp.ones_like(x), rate, rng, deterministic=False) != 0)
            return original(x, rate, rng, deterministic=deterministic)

        monkeypatch.setattr(module, "dropout", dropout)

    for module, site in [
        (block_mod, "residual"),
        (decoder_mod, "embed"),
        (encdec_mod, "embed"),
        (bert_mod, "embed"),
    ]:
        wrap_dropout(module, site)
    original_attention = tjx.kernels.attention

    def attention(q, k, v, **kw):
        if kw.get("dropout_rate", 0.0) > 0:
            report("attention", kw["dropout_rng"], jnp.zeros((), bool))
        return original_attention(q, k, v, **kw)

    monkeypatch.setattr(tjx.kernels, "attention", attention)
    return draws


CASES = {
    # name: (config, number of draws per training call)
    "gpt2-unrolled": (gpt2_tiny(num_layers=3), 1 + 3 * 3),  # embed + 3 x (2 residual + attn)
    "llama-scanned": (llama_tiny(num_layers=3, scan_layers=True), 1 + 3 * 3),
    "encoder-decoder": (
        tnn.make_config(
            tnn.EncoderDecoderConfig, {**{**TINY, "num_layers": 2}, "num_decoder_layers": 2}
        ),
        2 + 2 * 3 + 2 * 5,  # 2 embeds; encoder 2 + 1, decoder 3 + 2 (cross) per layer
    ),
    "bert": (tnn.make_config(tnn.BertConfig, TINY), 1 + 2 * 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_dropout_site_gets_its_own_key(monkeypatch, name):
    cfg, expected = CASES[name]
    model = build(cfg.replace(dropout=0.5, **{"attention.dropout": 0.5}), seed=3)
    draws = _record_dropout_keys(monkeypatch)
    toks = jnp.asarray(np.random.RandomState(4).randint(0, V, (2, 6)), jnp.int32)
    args = (toks, toks[:, :5]) if name == "encoder-decoder" else (toks,)
    model(*args, deterministic=False)
    jax.effects_barrier()
    assert len(draws) == expected, [site for site, _, _ in draws]
    keys = [bits for _, bits, _ in draws]
    assert len(set(keys)) == len(keys), "a key was given to two dropout sites"
    # The same shows in the masks: no two residual dropouts (same shape) drop the same units.
    masks = [m for site, _, m in draws if site == "residual"]
    for a, b in combinations(masks, 2):
        if a.shape == b.shape:
            assert not np.array_equal(a, b)
    # A second call draws new keys (the model's stream advances), none of them seen before.
    model(*args, deterministic=False)
    jax.effects_barrier()
    assert len({bits for _, bits, _ in draws}) == 2 * expected


def test_training_steps_draw_new_dropout_keys():
    model = build(gpt2_tiny(num_layers=1, dropout=0.5), seed=5)
    toks = jnp.asarray(np.random.RandomState(5).randint(0, V, (2, 8)), jnp.int32)
    assert not np.allclose(model(toks, deterministic=False), model(toks, deterministic=False))
    step = nnx.jit(lambda m, t: m(t, deterministic=False))
    assert not np.allclose(step(model, toks), step(model, toks))
    # The documented remedy for a plain jax.jit over split/merge: a key folded with the step.
    graphdef, state = nnx.split(model)

    @jax.jit
    def pure(state, t, key):
        return nnx.merge(graphdef, state)(t, deterministic=False, rngs=nnx.Rngs(dropout=key))

    base = jax.random.key(9)
    first, second = (pure(state, toks, jax.random.fold_in(base, i)) for i in range(2))
    assert not np.allclose(first, second)
    np.testing.assert_array_equal(first, pure(state, toks, jax.random.fold_in(base, 0)))


def test_a_model_with_dropout_needs_a_dropout_stream():
    with pytest.raises(ValueError, match="dropout.*nnx.Rngs"):
        tnn.GPT2(gpt2_tiny(num_layers=1, dropout=0.1), rngs=nnx.Rngs(params=0))
    tnn.GPT2(gpt2_tiny(num_layers=1), rngs=nnx.Rngs(params=0))  # no dropout: none needed


def _uniform_model():
    """A GPT-2 whose weights are all zero: every step's logits are all zero, so each sampled
    token is uniform over the vocabulary and only shared keys could tie two tokens together."""
    model = build(gpt2_tiny(num_layers=1), seed=6)
    nnx.update(model, jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param)))
    return model


def test_generate_samples_each_step_and_row_with_its_own_key():
    model = _uniform_model()
    rows, steps = 16, 15
    out = np.asarray(
        tnn.generate(
            model, np.zeros((rows, 1), np.int32), max_new_tokens=steps, temperature=1.0, seed=11
        )
    )[:, 1:]
    chex.assert_shape(out, (rows, steps))
    # Consecutive steps of a row: 16 x 14 = 224 pairs, each equal with probability 1/64
    # (mean 3.5). Reusing one key per step would make all 224 equal. P(>= 16) < 1e-6.
    assert int((out[:, 1:] == out[:, :-1]).sum()) < 16
    # Rows at one step: 120 row pairs x 15 steps = 1800 pairs, mean 28.1 equal. One key per
    # step shared by the rows would make all 1800 equal. P(>= 60) < 1e-7.
    same = sum(int((out[i] == out[j]).sum()) for i, j in combinations(range(rows), 2))
    assert same < 60


def test_generate_sampling_needs_a_seed_or_a_key():
    model = build(gpt2_tiny(num_layers=1), seed=7)
    prompts = np.random.RandomState(7).randint(0, V, (2, 3)).astype(np.int32)
    kw = dict(max_new_tokens=4, temperature=1.0)
    by_seed = np.asarray(tnn.generate(model, prompts, seed=5, **kw))
    np.testing.assert_array_equal(
        by_seed, tnn.generate(model, prompts, key=jax.random.key(5), **kw)
    )
    legacy = jax.random.PRNGKey(5)  # a raw uint32[2] key is the same key
    np.testing.assert_array_equal(by_seed, tnn.generate(model, prompts, key=legacy, **kw))
    assert not np.array_equal(by_seed, tnn.generate(model, prompts, seed=6, **kw))
    with pytest.raises(ValueError, match="needs seed= or key="):
        tnn.generate(model, prompts, **kw)
    with pytest.raises(ValueError, match="not both"):
        tnn.generate(model, prompts, seed=1, key=jax.random.key(1), **kw)
    with pytest.raises(ValueError, match="one PRNG key"):
        tnn.generate(model, prompts, key=jax.random.split(jax.random.key(1), 2), **kw)
    # Greedy decoding reads no key, so it needs none and ignores one.
    greedy = np.asarray(tnn.generate(model, prompts, max_new_tokens=4))
    np.testing.assert_array_equal(greedy, tnn.generate(model, prompts, max_new_tokens=4, seed=3))


def test_mlm_mask_selection_and_replacement_kind_are_independent():
    rs = np.random.RandomState(8)
    tokens = jnp.asarray(rs.randint(0, 100, (256, 256)), jnp.int32)
    inputs, labels = tnn.mlm_mask(tokens, jax.random.key(8), mask_id=100, vocab_size=100)
    inputs, labels, tokens = map(np.asarray, (inputs, labels, tokens))
    sel = labels != -100
    n = int(sel.sum())  # about 9,830
    # Were the selection's uniform draw reused for the kind, every selected token (u < 0.15)
    # would be masked. Independent: 80 % masked (sd 0.4 %), 10 % kept plus the random ones
    # that hit their own token (10.1 %), 9.9 % replaced. Bounds at 5 sd.
    masked = (inputs[sel] == 100).mean()
    kept = (inputs[sel] == tokens[sel]).mean()
    assert abs(masked - 0.8) < 5 * np.sqrt(0.8 * 0.2 / n)
    assert abs(kept - 0.101) < 5 * np.sqrt(0.1 * 0.9 / n)
    # Replacement tokens are uniform over the vocabulary: chi-square over 100 bins (99 dof;
    # P(> 160) < 1e-4).
    replaced = inputs[sel & (inputs != 100) & (inputs != tokens)]
    counts = np.bincount(replaced, minlength=100)
    expected = len(replaced) / 100
    assert ((counts - expected) ** 2 / expected).sum() < 160


def test_masked_lm_key_masks_and_dropout_comes_from_the_model_stream():
    model = build(tnn.make_config(tnn.BertConfig, {**TINY, "dropout": 0.3}), seed=9)
    toks = jnp.asarray(np.random.RandomState(9).randint(1, V - 1, (2, 12)), jnp.int32)
    segs = jnp.ones_like(toks)
    key = jax.random.key(1)
    a_logits, a_labels = model.masked_lm(toks, key, segment_ids=segs, deterministic=False)
    b_logits, b_labels = model.masked_lm(toks, key, segment_ids=segs, deterministic=False)
    np.testing.assert_array_equal(a_labels, b_labels)  # the same key masks the same positions
    assert not np.allclose(a_logits, b_logits)  # while dropout draws new keys per call
    c_labels = model.masked_lm(toks, jax.random.fold_in(key, 1), segment_ids=segs)[1]
    assert not np.array_equal(a_labels, c_labels)
