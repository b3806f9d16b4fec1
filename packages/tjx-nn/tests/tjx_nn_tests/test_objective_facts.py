"""Each model family's `Objective` against what its model actually does: the label positions
``objective_logits`` returns, which of them are scored, the [MASK] id beyond the tokenizer's, and
whether the model writes text. Fresh random tokens on tiny models; nothing is hard-coded but the
objective names."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests._helpers import build, gpt2_tiny, llama_tiny

V = 30  # the tokenizer's ids (BERT's model vocabulary adds its extra ids)
SMALL = dict(max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
# Jitted, as the trainer and evaluator run it (``objective_logits_fn``): one program per model
# and shape, where eagerly each of the model's ops was traced, lowered and looked up on its own.
_objective_logits = nnx.jit(
    lambda model, batch, key: tnn.objective_logits(model, batch, key=key, mask_prob=0.3)
)


def _configs():
    bert = tnn.BertConfig(vocab_size=V + tnn.OBJECTIVES["mlm"].extra_vocab, **SMALL)
    vit = tnn.ViTConfig(d_model=16, num_layers=1, num_heads=2, image_size=8, patch_size=4)
    return {
        "gpt2": gpt2_tiny(vocab_size=V),
        "llama": llama_tiny(vocab_size=V),
        "bert": bert,
        "vit": vit,
        "encdec": tnn.EncoderDecoderConfig(vocab_size=V, **SMALL),
    }


def _batch(config, rng, b, s):
    """An unpadded batch of fresh random ids (images for a ViT) in the objective's keys."""
    if isinstance(config, tnn.ViTConfig):
        size = config.image_size
        return {
            "images": jnp.asarray(rng.random((b, size, size, 3)), jnp.float32),
            "labels": jnp.asarray(rng.integers(0, config.num_classes, (b,)), jnp.int32),
        }
    tokens = jnp.asarray(rng.integers(0, V, (b, s + 1)), jnp.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": jnp.ones((b, s), jnp.int32),
    }


@pytest.mark.parametrize("kind", ["gpt2", "llama", "bert", "vit", "encdec"])
@pytest.mark.parametrize("seq_len", [7, 10])
def test_units_per_window_are_the_label_positions_the_objective_returns(kind, seq_len):
    config = _configs()[kind]
    model = build(config)
    objective = tnn.objective_of(model)
    assert tnn.objective_of(config) is objective is tnn.objective_of(type(config))
    assert objective is tnn.objective_of(tnn.MODEL_KINDS[kind])
    rng = np.random.default_rng(seq_len)
    batch = _batch(config, rng, 3, seq_len)
    _, labels = _objective_logits(model, batch, jax.random.key(seq_len))
    per_row = int(np.prod(labels.shape[1:], dtype=np.int64))
    assert labels.shape[0] == 3 and per_row == objective.units_per_window(seq_len)
    scored = int((np.asarray(labels) != -100).sum())
    # Every label position is scored unless the objective masks (BERT) or has no tokens (ViT).
    if objective.scores_every_token:
        assert objective.unit == "tokens" and scored == labels.size
    elif objective.unit == "tokens":
        assert 0 < scored < labels.size
    else:
        assert objective.unit == "images" and scored == labels.size == 3


@pytest.mark.parametrize("seq_len", [2, 3, 8, 9])
def test_the_seq2seq_window_is_continue_halves_cut(seq_len):
    model = build(tnn.EncoderDecoderConfig(vocab_size=V, **SMALL))
    rng = np.random.default_rng(seq_len)
    batch = _batch(model.config, rng, 2, seq_len)
    halves = nnx.jit(lambda m, inputs, targets: m.continue_halves(inputs, targets))  # as above
    out, labels = halves(model, batch["inputs"], batch["targets"])
    got = tnn.objective_of(model).units_per_window(seq_len)
    assert out.shape[1] == labels.shape[1] == got
    np.testing.assert_array_equal(labels, batch["targets"][:, seq_len - got :])


def test_bert_masks_with_the_id_after_the_tokenizers():
    """``extra_vocab``: the model is built with the tokenizer's ids plus [MASK], its last id."""
    config = _configs()["bert"]
    model = build(config)
    extra = tnn.objective_of(config).extra_vocab
    rng = np.random.default_rng(3)
    batch = {
        "inputs": jnp.asarray(rng.integers(0, V, (2, 12)), jnp.int32),
        "segment_ids": jnp.ones((2, 12), jnp.int32),
    }
    key = jax.random.key(5)
    logits, labels = _objective_logits(model, batch, key)
    masked, want_labels = tnn.mlm_mask(
        batch["inputs"],
        key,
        mask_id=V,
        vocab_size=V,
        mask_prob=0.3,
        special_mask=batch["segment_ids"] <= 0,
    )
    assert config.vocab_size == V + extra and (np.asarray(masked) == V).any()
    np.testing.assert_array_equal(labels, want_labels)
    np.testing.assert_allclose(
        logits, model(masked, attention_mask=batch["segment_ids"]), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize("kind", ["gpt2", "encdec"])
def test_decoding_models_write_text(kind):
    config = _configs()[kind]
    model = build(config)
    assert tnn.objective_of(config).decodes
    prompt = jnp.asarray(np.random.default_rng(4).integers(0, V, (1, 3)), jnp.int32)
    if tnn.objective_of(config).name == "seq2seq":
        out = tnn.generate_seq2seq(
            model, prompt, decoder_prompts=prompt[:, -1:], max_new_tokens=2, temperature=0.0
        )
    else:
        out = tnn.generate(model, prompt, max_new_tokens=2, temperature=0.0)
    assert np.asarray(out).shape[0] == 1 and np.asarray(out).shape[1] >= 2


def test_encoders_and_classifiers_do_not_decode():
    configs = _configs()
    assert not tnn.objective_of(configs["bert"]).decodes
    assert not tnn.objective_of(configs["vit"]).decodes
    assert {name for name, o in tnn.OBJECTIVES.items() if o.name == name} == set(tnn.OBJECTIVES)
    assert {tnn.objective_of(c).name for c in tnn.MODEL_KINDS.values()} == set(tnn.OBJECTIVES)
    assert tnn.objective_of(tnn.TransformerConfig).name == "lm"  # build_model's DecoderLM


def test_what_has_no_objective_is_refused():
    with pytest.raises(ValueError, match="no objective for a MLP; give a model"):
        tnn.objective_of(tnn.MLP(8, 16, rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match="no objective for a str"):
        tnn.objective_of("gpt2")
    for bad in (1, 0, True, 2.0):
        with pytest.raises(ValueError, match="seq_len: the seq2seq objective needs an int >= 2"):
            tnn.OBJECTIVES["seq2seq"].units_per_window(bad)
    with pytest.raises(ValueError, match="the lm objective needs an int >= 1; got 0"):
        tnn.OBJECTIVES["lm"].units_per_window(0)
    assert tnn.OBJECTIVES["classify"].units_per_window(0) == 1  # images: no window
