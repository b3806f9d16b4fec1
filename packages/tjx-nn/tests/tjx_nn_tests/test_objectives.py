"""Objectives (loss from a batch, evaluation logits) of every model against float64 references.

Every reference is NumPy float64 cross-entropy of the model's own float32 logits (or of
``hidden @ unembedding`` for the head losses) on fresh random inputs; the float32 results must
agree within ``rtol=1e-5`` (sums of a few dozen terms, each exact to ~1e-7), counts exactly.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx_nn_tests._helpers import build, gpt2_tiny, llama_tiny

RTOL = 1e-5


def _np_ce(logits, labels, z=0.0):
    """float64 (sum of CE, sum of CE + z·lse², count, argmax-correct) over labels != -100."""
    logits = np.asarray(logits, np.float64)
    labels = np.asarray(labels)
    keep = labels != -100
    top = logits.max(-1, keepdims=True)
    lse = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, np.where(keep, labels, 0)[..., None], -1)[..., 0]
    ce = (lse - picked)[keep]
    correct = int((logits.argmax(-1) == labels)[keep].sum())
    return ce.sum(), (ce + z * lse[keep] ** 2).sum(), int(keep.sum()), correct


def _check(out, logits, labels, z=0.0):
    total, with_z, count, correct = _np_ce(logits, labels, z)
    assert count > 0 and int(out.num_tokens) == count
    assert int(out.num_correct) == correct
    assert float(out.sum_loss) == pytest.approx(total, rel=RTOL)
    assert float(out.loss) == pytest.approx(with_z / count, rel=RTOL)


def _lm_batch(rng, vocab, b=3, s=10):
    tokens = rng.integers(0, vocab, (b, s + 1)).astype(np.int32)
    seg = np.ones((b, s), np.int32)
    seg[1, 6:] = 2
    seg[2, 8:] = 0  # padding: unscored
    targets = np.where(seg > 0, tokens[:, 1:], -100).astype(np.int32)
    positions = np.tile(np.arange(s, dtype=np.int32), (b, 1))
    positions[1, 6:] -= 6  # the second packed document restarts
    batch = {"inputs": tokens[:, :-1], "targets": targets, "segment_ids": seg}
    return {k: jnp.asarray(v) for k, v in {**batch, "positions": positions}.items()}


@pytest.mark.parametrize("z", [0.0, 1e-3])
def test_logits_cross_entropy_matches_float64_and_cross_entropy_loss(z):
    rng = np.random.default_rng(1)
    logits = jnp.asarray(rng.normal(size=(3, 7, 13)) * 3, jnp.float32)
    labels = rng.integers(0, 13, (3, 7)).astype(np.int32)
    labels[0, :4] = -100
    out = tnn.logits_cross_entropy(logits, jnp.asarray(labels), z_loss=z)
    _check(out, logits, labels, z)
    plain = tnn.cross_entropy_loss(logits, jnp.asarray(labels), z_loss=z)
    assert float(out.loss) == pytest.approx(float(plain), rel=1e-6)
    none = tnn.logits_cross_entropy(logits, jnp.full((3, 7), -100, jnp.int32))
    assert (float(none.loss), int(none.num_tokens), int(none.num_correct)) == (0.0, 0, 0)
    with pytest.raises(ValueError, match="z_loss"):
        tnn.logits_cross_entropy(logits, jnp.asarray(labels), z_loss=-1.0)


def test_ties_count_for_the_label_as_tjx_metrics_does():
    logits = jnp.zeros((2, 4), jnp.float32)  # every class ties
    out = tnn.logits_cross_entropy(logits, jnp.asarray([1, 3], jnp.int32))
    assert int(out.num_correct) == 2


@pytest.mark.parametrize("make", [gpt2_tiny, llama_tiny], ids=["tied", "untied"])
@pytest.mark.parametrize("z", [0.0, 1e-3])
def test_token_loss_chunked_and_plain_match_float64(make, z):
    model = build(make())
    rng = np.random.default_rng(2)
    hidden = jnp.asarray(rng.normal(size=(2, 8, 32)), jnp.float32)
    labels = rng.integers(0, 64, (2, 8)).astype(np.int32)
    labels[0, :3] = -100
    logits = np.asarray(hidden, np.float64) @ np.asarray(model.unembedding(), np.float64)
    for chunked in (True, False):
        out = tnn.token_loss(model, hidden, jnp.asarray(labels), chunked=chunked, z_loss=z)
        _check(out, logits, labels, z)
    small = tnn.token_loss(model, hidden, jnp.asarray(labels), chunk_size=4, z_loss=z)
    _check(small, logits, labels, z)


@pytest.mark.parametrize("chunked", [True, False])
def test_decoder_objective_is_next_token_cross_entropy(chunked):
    model = build(gpt2_tiny())
    batch = _lm_batch(np.random.default_rng(3), 64)
    out = tnn.objective_loss(model, batch, chunked=chunked, z_loss=1e-3)
    logits = model(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"])
    _check(out, logits, batch["targets"], 1e-3)
    got, labels = tnn.objective_logits(model, batch)
    np.testing.assert_array_equal(got, logits)
    np.testing.assert_array_equal(labels, batch["targets"])


def test_the_models_cross_entropy_impl_picks_the_fused_kernel():
    """``cross_entropy_impl="pallas"``: the fused kernel (Pallas' interpreter on CPU) scores the
    head, with the same float64-checked results as the chunked default."""
    model = build(gpt2_tiny(cross_entropy_impl="pallas"))
    batch = _lm_batch(np.random.default_rng(4), 64)
    out = tnn.objective_loss(model, batch, z_loss=1e-3)
    logits = model(batch["inputs"], positions=batch["positions"], segment_ids=batch["segment_ids"])
    _check(out, logits, batch["targets"], 1e-3)
    text = str(jax.make_jaxpr(lambda m, b: tnn.objective_loss(m, b).loss)(model, batch))
    assert "tjx_ce_fwd" in text
    with pytest.raises(ValueError, match="cross_entropy_impl"):
        gpt2_tiny(cross_entropy_impl="fused")


def test_masked_lm_objective_scores_the_masked_tokens():
    cfg = tnn.BertConfig(vocab_size=41, max_seq_len=16, d_model=16, num_layers=1, num_heads=2)
    model = build(cfg)
    rng = np.random.default_rng(4)
    batch = {
        "inputs": jnp.asarray(rng.integers(0, 40, (4, 12)), jnp.int32),
        "segment_ids": jnp.asarray([[1] * 12, [1] * 6 + [2] * 6, [1] * 9 + [0] * 3, [1] * 12]),
    }
    key = jax.random.key(11)
    out = tnn.objective_loss(model, batch, key=key, mask_prob=0.3, z_loss=1.0)  # no z-loss here
    inputs, labels = tnn.mlm_mask(
        batch["inputs"],
        key,
        mask_id=40,
        vocab_size=40,
        mask_prob=0.3,
        special_mask=batch["segment_ids"] <= 0,
    )
    logits = model(inputs, attention_mask=batch["segment_ids"])
    _check(out, logits, labels)
    # Evaluation: the fixed key of the run's seed masks the same positions every time.
    assert jax.random.key_data(tnn.eval_mask_key(4)).tolist() == (
        jax.random.key_data(jax.random.key(5)).tolist()
    )
    ev1, lab1 = tnn.objective_logits(model, batch, key=tnn.eval_mask_key(4), mask_prob=0.3)
    ev2, lab2 = tnn.objective_logits(model, batch, key=tnn.eval_mask_key(4), mask_prob=0.3)
    np.testing.assert_array_equal(lab1, lab2)
    np.testing.assert_array_equal(ev1, ev2)
    for fn in (tnn.objective_loss, tnn.objective_logits):
        with pytest.raises(ValueError, match="needs key="):
            fn(model, batch)


def test_classification_objective_scores_every_image():
    cfg = tnn.ViTConfig(d_model=16, num_layers=1, num_heads=2, image_size=8, patch_size=4)
    model = build(cfg)
    rng = np.random.default_rng(5)
    batch = {
        "images": jnp.asarray(rng.random((6, 8, 8, 3)), jnp.float32),
        "labels": jnp.asarray(rng.integers(0, 1000, (6,)), jnp.int32),
    }
    out = tnn.objective_loss(model, batch)
    logits, labels = tnn.objective_logits(model, batch)
    assert logits.dtype == jnp.float32 and logits.shape == (6, 1000)
    np.testing.assert_array_equal(labels, batch["labels"])
    _check(out, model(batch["images"]), batch["labels"])
    assert int(out.num_tokens) == 6


@pytest.mark.parametrize("chunked", [True, False])
def test_seq2seq_objective_continues_the_first_half(chunked):
    cfg = tnn.EncoderDecoderConfig(
        vocab_size=30, max_seq_len=16, d_model=16, num_layers=1, num_heads=2
    )
    model = build(cfg)
    batch = _lm_batch(np.random.default_rng(6), 30)
    del batch["positions"]
    out = tnn.objective_loss(model, batch, chunked=chunked, z_loss=1e-3)
    seg = batch["segment_ids"]
    logits = model(
        batch["inputs"][:, :5],
        batch["inputs"][:, 4:],
        src_segment_ids=seg[:, :5],
        tgt_segment_ids=seg[:, 4:],
    )
    _check(out, logits, batch["targets"][:, 4:], 1e-3)
    got, labels = tnn.objective_logits(model, batch)
    np.testing.assert_allclose(got, logits, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(labels, batch["targets"][:, 4:])


def test_a_model_without_an_objective_is_refused():
    mlp = tnn.MLP(8, 16, rngs=nnx.Rngs(0))
    for fn in (tnn.objective_loss, tnn.objective_logits):
        with pytest.raises(ValueError, match="no objective for a MLP; models: DecoderLM, BERT"):
            fn(mlp, {})


def _dots(jaxpr):
    """Every dot_general of a jaxpr, sub-jaxprs (scan, custom_vjp) included."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _dots(sub)


@pytest.mark.parametrize("make", [gpt2_tiny, llama_tiny], ids=["tied", "untied"])
def test_chunked_lm_head_products_run_in_the_compute_dtype_with_float32_accumulation(make):
    """All three head products (logits, d hidden, d table) take bf16 operands under bf16 compute
    (a float32 table would make them float32: TF32 on a GPU, twice the bytes) and accumulate in
    float32; the loss equals float64 cross-entropy of the bf16-rounded operands (rtol 1e-5)."""
    model = build(make(precision="bf16"))
    rng = np.random.default_rng(7)
    hidden = jnp.asarray(rng.normal(size=(2, 8, 32)), jnp.float32)
    labels = rng.integers(0, 64, (2, 8)).astype(np.int32)
    loss = lambda h: tnn.token_loss(model, h, jnp.asarray(labels), chunked=True, chunk_size=8).loss
    dots = list(_dots(jax.make_jaxpr(jax.grad(loss))(hidden).jaxpr))
    assert len(dots) >= 3
    for eqn in dots:
        assert [v.aval.dtype for v in eqn.invars] == [jnp.bfloat16, jnp.bfloat16], eqn
        assert eqn.params["preferred_element_type"] == jnp.float32, eqn
    bf16 = lambda x: np.asarray(jnp.asarray(x).astype(jnp.bfloat16), np.float64)
    logits = bf16(hidden) @ bf16(model.unembedding())
    _check(tnn.token_loss(model, hidden, jnp.asarray(labels), chunked=True), logits, labels)


def test_objective_logits_fn_is_objective_logits_as_a_pure_function_of_the_params():
    """The held-out step of a trainer and an evaluator: the same logits under jit as eagerly, and
    new parameters give the new model's logits (the graph is merged with what is passed)."""
    model, other = build(gpt2_tiny()), build(gpt2_tiny(), seed=1)
    batch = _lm_batch(np.random.default_rng(4), 32)
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)
    fn = jax.jit(tnn.objective_logits_fn(graphdef, rest))
    for m in (model, other):
        want, want_labels = tnn.objective_logits(m, batch)
        got, labels = fn(nnx.to_pure_dict(nnx.state(m, nnx.Param)), batch)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)  # jit vs eager: fp32 order
        np.testing.assert_array_equal(labels, want_labels)
