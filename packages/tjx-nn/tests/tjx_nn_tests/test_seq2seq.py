"""Encoder-decoder generation: the cached decode equals re-running the whole model."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn import generation as gen_mod
from tjx_nn_tests._helpers import TINY, build, gpt2_tiny

V = TINY["vocab_size"]


def _reference_greedy(model, src, src_lengths, prompts, prompt_lengths, max_new):
    """Greedy tokens from the full model (encoder included) re-run on the growing targets.

    Targets are right-padded to one fixed length (one compile); the decoder is causal, so the
    padding after a row's last token cannot change that token's logits.
    """
    b, total = src.shape[0], prompts.shape[1] + max_new
    src_ids = (np.arange(src.shape[1])[None] < src_lengths[:, None]).astype(np.int32)
    fwd = nnx.jit(lambda m, s, t, ids: m(s, t, src_segment_ids=ids))
    seqs = [list(prompts[r, : prompt_lengths[r]]) for r in range(b)]
    for _ in range(max_new):
        buf = np.zeros((b, total), np.int32)
        for r, seq in enumerate(seqs):
            buf[r, : len(seq)] = seq
        logits = np.asarray(fwd(model, jnp.asarray(src), jnp.asarray(buf), jnp.asarray(src_ids)))
        for r, seq in enumerate(seqs):
            seq.append(int(np.argmax(logits[r, len(seq) - 1])))
    return seqs


def _encdec(**kw):
    return tnn.make_config(tnn.EncoderDecoderConfig, {**{**TINY, **kw}})


# Between them: unrolled and scanned stacks, MHA/MLA/GQA self-attention caches, sinusoidal and
# rope positions, pre-/post-LN, tied and untied heads, different encoder and decoder depths.
UNROLLED = _encdec(
    num_layers=1,
    mla=tnn.MLAConfig(kv_latent_dim=8),
    norm=tnn.NormConfig(position="post"),
    attention=tnn.AttentionConfig(type="mla"),
)
SCANNED = _encdec(
    position=tnn.PositionConfig(kind="rope"),
    scan_layers=True,
    num_kv_heads=2,
    tie_embeddings=False,
    num_encoder_layers=1,
    num_decoder_layers=2,
)


@pytest.mark.parametrize("cfg", [UNROLLED, SCANNED], ids=["unrolled-mla-postln", "scan-rope-gqa"])
def test_cached_greedy_equals_full_model(cfg):
    model = build(cfg, seed=3)
    rs = np.random.RandomState(0)
    src = rs.randint(1, V, (3, 7)).astype(np.int32)
    src_lengths = np.array([7, 3, 5])
    prompts = rs.randint(1, V, (3, 3)).astype(np.int32)
    prompt_lengths = np.array([1, 3, 2])
    before = dict(gen_mod.TRACE_COUNTS)
    out = np.asarray(
        tnn.generate_seq2seq(
            model,
            src,
            max_new_tokens=5,
            src_lengths=src_lengths,
            decoder_prompts=prompts,
            prompt_lengths=prompt_lengths,
        )
    )
    # One prefill (encoder + decoder prompt) and one decode-step trace for the whole call.
    assert gen_mod.TRACE_COUNTS["prefill"] - before["prefill"] == 1
    assert gen_mod.TRACE_COUNTS["decode"] - before["decode"] == 1
    assert out.shape == (3, 8) and out.dtype == np.int32
    ref = _reference_greedy(model, src, src_lengths, prompts, prompt_lengths, 5)
    for r in range(3):
        assert out[r, : prompt_lengths[r] + 5].tolist() == ref[r]
        assert (out[r, prompt_lengths[r] + 5 :] == 0).all()
    # Source padding is ignored: other tokens there give the same output.
    noisy = src.copy()
    noisy[1, 3:] = rs.randint(1, V, 4)
    after = dict(gen_mod.TRACE_COUNTS)
    again = tnn.generate_seq2seq(
        model,
        noisy,
        max_new_tokens=5,
        src_lengths=src_lengths,
        decoder_prompts=prompts,
        prompt_lengths=prompt_lengths,
    )
    np.testing.assert_array_equal(again, out)
    assert after == gen_mod.TRACE_COUNTS  # same shapes: no retrace


def test_start_token_eos_and_sampling():
    model = build(_encdec(num_layers=1), seed=4)
    src = np.random.RandomState(1).randint(1, V, (2, 6)).astype(np.int32)
    greedy = np.asarray(tnn.generate_seq2seq(model, src, max_new_tokens=6, decoder_start_id=5))
    assert greedy.shape == (2, 7) and (greedy[:, 0] == 5).all()
    eos = int(greedy[0, 2])  # row 0's second new token
    stop = 1 + int(np.argmax(greedy[0, 1:] == eos))  # its first appearance
    out = np.asarray(
        tnn.generate_seq2seq(
            model, src, max_new_tokens=6, decoder_start_id=5, eos_id=eos, pad_id=V - 1
        )
    )
    assert out[0, : stop + 1].tolist() == greedy[0, : stop + 1].tolist()
    assert (out[0, stop + 1 :] == V - 1).all()
    # The same sampling options as generate: seeded and really sampling; top_k=1 is greedy.
    kw = dict(max_new_tokens=6, decoder_start_id=5, temperature=1.0)
    draws = [np.asarray(tnn.generate_seq2seq(model, src, top_p=0.9, seed=s, **kw)) for s in (0, 1)]
    np.testing.assert_array_equal(
        draws[0], tnn.generate_seq2seq(model, src, top_p=0.9, key=jax.random.key(0), **kw)
    )
    assert any(not np.array_equal(d, greedy) for d in draws)
    np.testing.assert_array_equal(tnn.generate_seq2seq(model, src, top_k=1, seed=2, **kw), greedy)
    with pytest.raises(ValueError, match="needs seed= or key="):
        tnn.generate_seq2seq(model, src, **kw)


def test_start_cache_projects_cross_keys_values_once():
    model = build(SCANNED, seed=5)
    src = jnp.asarray(np.random.RandomState(2).randint(1, V, (2, 4)), jnp.int32)
    state = nnx.jit(lambda m, s: m.start_cache(s, m.init_cache(2, 6)))(model, src)
    assert state["self"]["k"].shape == (2, 2, 6, 2, 8)
    assert state["cross"]["k"].shape == (2, 2, 4, 2, 8)
    memory = model.encode(src)
    layer1 = tnn.get_flat_params(model)["decoder.layers.1.cross_attn.key.kernel"]
    np.testing.assert_allclose(
        state["cross"]["k"][1],
        jnp.einsum("bsd,dhk->bshk", memory, layer1)
        + tnn.get_flat_params(model)["decoder.layers.1.cross_attn.key.bias"],
        rtol=1e-5,
        atol=1e-5,
    )


def test_seq2seq_errors():
    model = build(_encdec(num_layers=1))
    src = np.ones((2, 4), np.int32)
    with pytest.raises(ValueError, match="src must"):
        tnn.generate_seq2seq(model, np.ones((4,), np.int32), max_new_tokens=1)
    with pytest.raises(ValueError, match="src_lengths"):
        tnn.generate_seq2seq(model, src, max_new_tokens=1, src_lengths=[4, 5])
    with pytest.raises(ValueError, match="src length 17"):
        tnn.generate_seq2seq(model, np.ones((1, 17), np.int32), max_new_tokens=1)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        tnn.generate_seq2seq(model, src, max_new_tokens=16)
    with pytest.raises(ValueError, match="decoder_prompts"):
        tnn.generate_seq2seq(model, src, max_new_tokens=1, decoder_prompts=np.ones((3, 1)))
    with pytest.raises(ValueError, match="decoder_start_id"):
        tnn.generate_seq2seq(
            model, src, max_new_tokens=1, decoder_start_id=1, decoder_prompts=np.ones((2, 1))
        )
    with pytest.raises(ValueError, match="prompt_lengths"):
        tnn.generate_seq2seq(
            model, src, max_new_tokens=1, decoder_prompts=np.ones((2, 2)), prompt_lengths=[0, 1]
        )
    with pytest.raises(ValueError, match="max_new_tokens"):
        tnn.generate_seq2seq(model, src, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        tnn.generate_seq2seq(model, src, max_new_tokens=1, top_p=0.0)
    with pytest.raises(ValueError, match="model must be an EncoderDecoder"):
        tnn.generate_seq2seq(build(gpt2_tiny(num_layers=1)), src, max_new_tokens=1)
    with pytest.raises(ValueError, match="model: generate serves decoder LMs"):
        tnn.generate(model, src, max_new_tokens=1)
    with pytest.raises(ValueError, match="cross=True"):
        build(gpt2_tiny(num_layers=1)).stack.project_context(jnp.ones((1, 2, 32)))


def test_continue_halves_encodes_the_first_half_and_predicts_the_second():
    """Against the windows cut by hand: source t[:h], decoder input t[h-1:s], labels t[h:]."""
    model = build(_encdec(), seed=6)
    s, h = 9, 4
    window = np.random.default_rng(3).integers(0, V, size=(2, s + 1)).astype(np.int32)
    seg = np.ones((2, s), np.int32)
    seg[1, 6:] = 2  # a second packed document in row 1: its tokens see only their own source
    inputs, targets = jnp.asarray(window[:, :s]), jnp.asarray(window[:, 1:])
    logits, labels = model.continue_halves(inputs, targets, segment_ids=jnp.asarray(seg))
    want = model(
        jnp.asarray(window[:, :h]),
        jnp.asarray(window[:, h - 1 : s]),
        src_segment_ids=jnp.asarray(seg[:, :h]),
        tgt_segment_ids=jnp.asarray(seg[:, h - 1 :]),
    )
    np.testing.assert_allclose(np.asarray(logits), np.asarray(want), rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(labels), window[:, h:])
    hidden, _ = model.continue_halves(inputs, targets, return_hidden=True)
    assert hidden.shape == (2, s - h + 1, TINY["d_model"])
    with pytest.raises(ValueError, match="windows of >= 2 tokens"):
        model.continue_halves(inputs[:, :1], targets[:, :1])
