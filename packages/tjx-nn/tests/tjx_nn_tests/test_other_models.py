"""BERT, ViT and the encoder-decoder: shapes, masks, hidden states, gradients."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests._helpers import build

SMALL = dict(vocab_size=64, max_seq_len=16, d_model=32, num_layers=2, num_heads=4)
# The models run jitted, one program per model, call and shape: eagerly, each of a model's ops
# was traced, lowered and looked up in the compilation cache on its own (most of the time here).
_call = nnx.jit(lambda model, *args, **kw: model(*args, **kw), static_argnames=("return_hidden",))


def test_bert_mlm_padding_token_types_and_classifier():
    model = build(tnn.BertConfig(**SMALL, num_labels=3))
    toks = jnp.asarray(np.random.RandomState(0).randint(1, 64, (2, 8)), jnp.int32)
    logits = _call(model, toks)
    assert logits.shape == (2, 8, 64) and logits.dtype == jnp.float32
    hidden = _call(model, toks, return_hidden=True)
    np.testing.assert_allclose(
        logits,
        model.mlm_hidden(hidden) @ model.unembedding() + model.mlm_bias.get_value(),
        rtol=1e-4,
        atol=1e-5,
    )
    # Bidirectional: changing the last token changes the first position's output.
    assert not np.allclose(_call(model, toks.at[0, 7].set(3))[0, 0], logits[0, 0])
    # Padding: masked positions never influence real ones.
    mask = jnp.asarray([[1] * 5 + [0] * 3] * 2, jnp.int32)
    a = _call(model, toks, attention_mask=mask)
    b = _call(model, toks.at[:, 6].set(9), attention_mask=mask)
    np.testing.assert_allclose(a[:, :5], b[:, :5], rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(jnp.isfinite(a)))
    # Packed documents: segment ids as the attention mask keep documents apart.
    packed = jnp.asarray([[1] * 5 + [2] * 3], jnp.int32)
    pos = jnp.asarray([list(range(5)) + list(range(3))], jnp.int32)
    out = _call(model, toks[:1], attention_mask=packed, positions=pos)
    np.testing.assert_allclose(out[:, :5], _call(model, toks[:1, :5]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], _call(model, toks[:1, 5:]), rtol=1e-5, atol=1e-5)
    types = jnp.ones_like(toks)
    assert not np.allclose(_call(model, toks, token_types=types), logits)
    assert model.classify(toks, attention_mask=mask).shape == (2, 3)
    no_head = build(tnn.BertConfig(**{**SMALL, "num_layers": 1}))
    with pytest.raises(ValueError, match="num_labels"):
        no_head.classify(toks)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        model(jnp.zeros((1, 17), jnp.int32))


def test_bert_masked_lm_masks_real_tokens_and_predicts_them():
    import jax

    model = build(tnn.BertConfig(**SMALL))
    rng = np.random.RandomState(1)
    toks = jnp.asarray(rng.randint(1, 63, (2, 16)), jnp.int32)
    segments = jnp.asarray([[1] * 10 + [2] * 4 + [0] * 2, [1] * 16], jnp.int32)
    key = jax.random.key(7)
    logits, labels = model.masked_lm(toks, key, segment_ids=segments, mask_prob=0.5)
    # Reference: the same masking by hand, then the plain forward pass.
    inputs, want = tnn.mlm_mask(
        toks, key, mask_id=63, vocab_size=63, mask_prob=0.5, special_mask=segments <= 0
    )
    np.testing.assert_array_equal(labels, want)
    ref = _call(model, inputs, attention_mask=segments)
    np.testing.assert_allclose(logits, ref, rtol=1e-5, atol=1e-6)
    chosen = np.asarray(labels) != -100
    assert chosen.any() and not chosen[0, 14:].any()  # padding is never masked
    np.testing.assert_array_equal(np.asarray(labels)[chosen], np.asarray(toks)[chosen])
    # The same key masks the same positions (a fixed evaluation key gives stable metrics).
    again = model.masked_lm(toks, key, segment_ids=segments, mask_prob=0.5)[1]
    np.testing.assert_array_equal(again, labels)


def test_vit_classifier_and_hidden():
    cfg = tnn.ViTConfig(
        d_model=32,
        num_layers=2,
        num_heads=4,
        image_size=8,
        patch_size=4,
        num_channels=3,
        num_classes=5,
    )
    assert cfg.num_patches == 4 and cfg.max_seq_len == 5
    model = build(cfg)
    images = jnp.asarray(np.random.RandomState(0).randn(2, 8, 8, 3), jnp.float32)
    logits = _call(model, images)
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert _call(model, images, return_hidden=True).shape == (2, 5, 32)
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(images) ** 2)))(model)
    assert np.any(np.asarray(grads["cls_token"].get_value()) != 0)
    with pytest.raises(ValueError, match="images must be"):
        model(jnp.zeros((2, 9, 8, 3)))
    sin = build(cfg.replace(**{"position.kind": "sinusoidal"}, num_layers=1))
    assert _call(sin, images).shape == (2, 5)


def test_encoder_decoder_causal_decoder_and_source_padding():
    cfg = tnn.EncoderDecoderConfig(**{**SMALL, "num_layers": 1}, num_decoder_layers=2)
    model = build(cfg)
    rs = np.random.RandomState(0)
    src = jnp.asarray(rs.randint(1, 64, (2, 6)), jnp.int32)
    tgt = jnp.asarray(rs.randint(1, 64, (2, 5)), jnp.int32)
    logits = _call(model, src, tgt)
    assert logits.shape == (2, 5, 64) and logits.dtype == jnp.float32
    hidden = _call(model, src, tgt, return_hidden=True)
    np.testing.assert_allclose(logits, hidden @ model.unembedding(), rtol=1e-4, atol=1e-5)
    # Decoder is causal; every target position sees the whole source.
    changed = _call(model, src, tgt.at[:, 3].set(1))
    np.testing.assert_allclose(changed[:, :3], logits[:, :3], rtol=1e-5, atol=1e-6)
    assert not np.allclose(_call(model, src.at[:, 5].set(2), tgt)[:, 0], logits[:, 0])
    # Source padding is invisible to the decoder.
    seg = jnp.asarray([[1] * 4 + [0] * 2] * 2, jnp.int32)
    a = _call(model, src, tgt, src_segment_ids=seg)
    b = _call(model, src.at[:, 5].set(2), tgt, src_segment_ids=seg)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    untied = build(
        cfg.replace(tie_embeddings=False, scan_layers=True, **{"position.kind": "learned"})
    )
    assert _call(untied, src, tgt).shape == (2, 5, 64) and untied.unembedding().shape == (32, 64)


@pytest.mark.parametrize(
    ("model", "wanted"),
    [
        (tnn.BERT, "BERT needs a BertConfig; got GPT2Config"),
        (tnn.ViT, "ViT needs a ViTConfig; got GPT2Config"),
        (tnn.EncoderDecoder, "EncoderDecoder needs an EncoderDecoderConfig; got GPT2Config"),
        (tnn.Llama, "Llama needs a LlamaConfig; got GPT2Config"),
    ],
)
def test_a_model_built_from_another_models_config_is_refused_naming_both(model, wanted):
    with pytest.raises(ValueError) as info:
        model(tnn.GPT2Config(**SMALL), rngs=nnx.Rngs(0))
    assert str(info.value) == wanted
