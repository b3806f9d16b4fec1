"""Zero-length sequences through every model: empty results of the right shape, zero gradients.

An empty batch has nothing to learn from, so its gradients must equal those of a real batch in
which no token counts (every label ignored): exactly zero, never NaN. An empty source for the
encoder-decoder means "nothing to attend to", which is what an all-padding source means too.
"""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.kernels import chunked_cross_entropy
from tjx_nn_tests._helpers import TINY, build, gpt2_tiny, llama_tiny

V, D = TINY["vocab_size"], TINY["d_model"]

MODELS = {
    "gpt2": lambda: gpt2_tiny(dropout=0.1, attention=tnn.AttentionConfig(dropout=0.1)),
    "llama-scan-remat": lambda: llama_tiny(scan_layers=True, remat="full"),
    "llama-mla": lambda: llama_tiny(
        mla=tnn.MLAConfig(kv_latent_dim=8), num_layers=1, attention=tnn.AttentionConfig(type="mla")
    ),
    "alibi": lambda: gpt2_tiny(**{"position.kind": "alibi"}, num_layers=1),
    "t5-decoder": lambda: tnn.make_config(
        tnn.TransformerConfig, {**{**TINY, "num_layers": 1}, "position.kind": "t5"}
    ),
    "bert": lambda: tnn.make_config(tnn.BertConfig, {**TINY, "dropout": 0.1}),
}
#: Gradients are checked on these (between them: dropout, scan + remat, an additive bias, BERT).
WITH_GRADS = ("gpt2", "llama-scan-remat", "t5-decoder", "bert")


def _toks(shape, seed):
    return jnp.asarray(np.random.RandomState(seed).randint(0, V, shape), jnp.int32)


def _grads(model, loss_fn):
    """Flat name → gradient of ``loss_fn(model)`` (one jitted program: eager autodiff of a
    whole model dispatches hundreds of ops one by one)."""
    grads = nnx.jit(nnx.grad(loss_fn))(model)
    return {".".join(map(str, p)): np.asarray(v.get_value()) for p, v in nnx.to_flat_state(grads)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_empty_sequence_gives_empty_logits(name):
    model = build(MODELS[name](), seed=sorted(MODELS).index(name))
    empty = jnp.zeros((3, 0), jnp.int32)
    logits = model(empty)
    chex.assert_shape(logits, (3, 0, V))
    chex.assert_type(logits, jnp.float32)
    chex.assert_shape(model(empty, return_hidden=True), (3, 0, D))
    ids = {"attention_mask" if name == "bert" else "segment_ids": empty}
    chex.assert_shape(model(empty, **ids), (3, 0, V))
    if name in ("gpt2", "bert"):  # dropout draws over empty arrays too
        chex.assert_shape(model(empty, deterministic=False), (3, 0, V))


@pytest.mark.parametrize("name", WITH_GRADS)
def test_gradients_through_an_empty_batch_are_zeros(name):
    seed = sorted(MODELS).index(name)
    model = build(MODELS[name](), seed=seed)
    empty = jnp.zeros((3, 0), jnp.int32)
    # A loss that reads the (empty) logits, with fresh random weights, and the chunked loss.
    w = jnp.asarray(np.random.RandomState(seed).randn(3, 0, V), jnp.float32)
    grads = _grads(model, lambda m: jnp.sum(m(empty, deterministic=False) * w))

    def chunked(m):
        hidden = m(empty, return_hidden=True)
        return chunked_cross_entropy(hidden, m.unembedding(), empty, chunk_size=8).loss

    chunked_grads = _grads(model, chunked)
    # The reference: a real random batch in which no label counts.
    toks = _toks((3, 5), seed)
    ignored = jnp.full(toks.shape, -100, jnp.int32)
    want = _grads(model, lambda m: tnn.cross_entropy_loss(m(toks), ignored))
    assert set(grads) == set(want) == set(chunked_grads)
    for path, g in want.items():
        assert not g.any(), path  # the reference itself: nothing counts, nothing moves
        np.testing.assert_array_equal(grads[path], g, err_msg=path)
        np.testing.assert_array_equal(chunked_grads[path], g, err_msg=path)


def test_decoder_forward_cached_with_no_tokens_leaves_the_cache():
    model = build(llama_tiny(), seed=3)
    cache = model.init_cache(2, 8)
    rs = np.random.RandomState(1)
    cache = jax.tree.map(lambda a: jnp.asarray(rs.randn(*a.shape), a.dtype), cache)
    start = jnp.zeros((2,), jnp.int32)
    logits, new = model.forward_cached(jnp.zeros((2, 0), jnp.int32), cache, start)
    chex.assert_shape(logits, (2, 0, V))
    chex.assert_trees_all_equal(new, cache)


@pytest.mark.parametrize("position", ["sinusoidal", "t5"])
def test_encoder_decoder_empty_source_equals_all_padding_source(position):
    cfg = tnn.make_config(
        tnn.EncoderDecoderConfig, {**{**TINY, "num_layers": 1}, "position.kind": position}
    )
    model = build(cfg, seed=6)
    src, tgt = _toks((2, 5), 7), _toks((2, 4), 8)
    got = model(src[:, :0], tgt)
    want = model(src, tgt, src_segment_ids=jnp.zeros((2, 5), jnp.int32))
    chex.assert_shape(got, (2, 4, V))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # Empty targets: empty logits, and the loss over them moves no parameter.
    chex.assert_shape(model(src, tgt[:, :0]), (2, 0, V))
    chex.assert_shape(model(src[:, :0], tgt[:, :0]), (2, 0, V))
    grads = _grads(model, lambda m: jnp.sum(m(src, tgt[:, :0])))
    assert all(np.isfinite(g).all() and not g.any() for g in grads.values())


def test_bert_masked_lm_and_classify_at_length_zero():
    model = build(tnn.make_config(tnn.BertConfig, {**TINY, "num_labels": 3}), seed=2)
    empty = jnp.zeros((2, 0), jnp.int32)
    logits, labels = model.masked_lm(empty, jax.random.key(0), segment_ids=empty)
    chex.assert_shape(logits, (2, 0, V))
    chex.assert_type([logits, labels], [jnp.float32, jnp.int32])
    chex.assert_shape(labels, (2, 0))
    assert float(tnn.masked_lm_loss(logits, labels)) == 0.0
    with pytest.raises(ValueError, match=r"\[CLS\]"):
        model.classify(empty)


def test_generation_needs_a_prompt_token_and_serves_zero_rows():
    model = build(gpt2_tiny(num_layers=1), seed=4)
    with pytest.raises(ValueError, match="prompts has length 0.*BOS"):
        tnn.generate(model, np.zeros((2, 0), np.int32), max_new_tokens=2)
    with pytest.raises(ValueError, match="prompt_lengths.*BOS"):
        tnn.generate(model, np.ones((2, 3), np.int32), max_new_tokens=2, prompt_lengths=[3, 0])
    out = tnn.generate(model, np.zeros((0, 3), np.int32), max_new_tokens=2)
    chex.assert_shape(out, (0, 5))
    chex.assert_type(out, jnp.int32)
    encdec = build(tnn.make_config(tnn.EncoderDecoderConfig, {**{**TINY, "num_layers": 1}}), seed=5)
    with pytest.raises(ValueError, match="src has length 0.*source token"):
        tnn.generate_seq2seq(encdec, np.zeros((2, 0), np.int32), max_new_tokens=2)
    with pytest.raises(ValueError, match="decoder_prompts has length 0.*decoder_start_id"):
        tnn.generate_seq2seq(
            encdec, np.ones((2, 3), np.int32), max_new_tokens=2, decoder_prompts=np.ones((2, 0))
        )
