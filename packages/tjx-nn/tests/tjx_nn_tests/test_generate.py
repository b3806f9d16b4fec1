"""KV-cache generation equals re-running the full model; sampling; MLA and top-k decode."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.kernels import AttentionMask
from tjx.nn import generation as gen_mod
from tjx_nn_tests._helpers import build, gpt2_tiny, llama_tiny


def _reference_greedy(model, prompts, lengths, max_new):
    """Greedy tokens from the full model re-run on the growing sequence (one compile: the
    sequence is right-padded to a fixed length and causality makes the padding irrelevant)."""
    total = prompts.shape[1] + max_new
    fwd = nnx.jit(lambda m, t: m(t))
    rows = []
    for r in range(prompts.shape[0]):
        seq = list(prompts[r, : lengths[r]])
        for _ in range(max_new):
            buf = np.zeros((1, total), np.int32)
            buf[0, : len(seq)] = seq
            logits = fwd(model, jnp.asarray(buf))
            seq.append(int(jnp.argmax(logits[0, len(seq) - 1])))
        rows.append(seq)
    return rows


@pytest.mark.parametrize(
    "cfg",
    [
        gpt2_tiny(),
        llama_tiny(scan_layers=True),
        llama_tiny(mla=tnn.MLAConfig(kv_latent_dim=8), attention=tnn.AttentionConfig(type="mla")),
        gpt2_tiny(position=tnn.PositionConfig(kind="alibi"), num_layers=1),
    ],
    ids=["gpt2", "llama-gqa-scan", "llama-mla", "alibi"],
)
def test_greedy_generation_equals_full_model(cfg):
    model = build(cfg, seed=1)
    prompts = np.random.RandomState(0).randint(0, 64, (3, 5)).astype(np.int32)
    lengths = np.array([5, 2, 3])
    before = dict(gen_mod.TRACE_COUNTS)
    out = np.asarray(tnn.generate(model, prompts, max_new_tokens=6, prompt_lengths=lengths))
    # One prefill and one decode trace for the whole call (no per-token recompilation) ...
    assert gen_mod.TRACE_COUNTS["prefill"] - before["prefill"] == 1
    assert gen_mod.TRACE_COUNTS["decode"] - before["decode"] == 1
    assert out.shape == (3, 11) and out.dtype == np.int32
    ref = _reference_greedy(model, prompts, lengths, 6)
    for r in range(3):
        assert out[r, : lengths[r] + 6].tolist() == ref[r]
        assert (out[r, lengths[r] + 6 :] == 0).all()
    # ... and none at all for a second call with the same shapes.
    after = dict(gen_mod.TRACE_COUNTS)
    again = tnn.generate(model, prompts, max_new_tokens=6, prompt_lengths=lengths)
    assert after == gen_mod.TRACE_COUNTS
    np.testing.assert_array_equal(again, out)


def test_eos_stops_rows_and_sampling_is_seeded():
    model = build(gpt2_tiny(), seed=1)
    prompts = np.random.RandomState(1).randint(0, 64, (2, 4)).astype(np.int32)
    greedy = np.asarray(tnn.generate(model, prompts, max_new_tokens=5))
    eos = int(greedy[0, 5])  # row 0's second new token
    stop = 4 + int(np.argmax(greedy[0, 4:] == eos))  # its first appearance
    out = np.asarray(tnn.generate(model, prompts, max_new_tokens=5, eos_id=eos, pad_id=63))
    assert out[0, : stop + 1].tolist() == greedy[0, : stop + 1].tolist()
    assert (out[0, stop + 1 :] == 63).all()
    s1 = tnn.generate(model, prompts, max_new_tokens=5, temperature=1.0, top_k=8, seed=3)
    s2 = tnn.generate(model, prompts, max_new_tokens=5, temperature=1.0, top_k=8, seed=3)
    np.testing.assert_array_equal(s1, s2)
    s3 = tnn.generate(model, prompts, max_new_tokens=5, temperature=1.0, top_p=0.9, seed=4)
    assert np.asarray(s3).shape == (2, 9)
    np.testing.assert_array_equal(np.asarray(s3)[:, :4], prompts)


def test_sample_logits_top_k_top_p():
    logits = jnp.log(jnp.asarray([[0.5, 0.3, 0.15, 0.05]] * 2000))
    keys = jax.random.split(jax.random.key(0), 1)[0]
    assert tnn.sample_logits(logits[:1], keys).tolist() == [0]
    k2 = np.asarray(tnn.sample_logits(logits, keys, temperature=1.0, top_k=2))
    assert set(np.unique(k2)) == {0, 1}
    assert 0.55 < (k2 == 0).mean() < 0.7  # 0.5 / 0.8 renormalised
    p = np.asarray(tnn.sample_logits(logits, keys, temperature=1.0, top_p=0.7))
    assert set(np.unique(p)) == {0, 1}  # 0.5 < 0.7 so token 1 is needed; 0.8 >= 0.7 stops
    p1 = np.asarray(tnn.sample_logits(logits, keys, temperature=1.0, top_p=0.4))
    assert set(np.unique(p1)) == {0}


def test_generation_errors():
    model = build(gpt2_tiny(num_layers=1))
    prompts = np.zeros((1, 10), np.int32)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        tnn.generate(model, prompts, max_new_tokens=7)
    with pytest.raises(ValueError, match="prompt_lengths"):
        tnn.generate(model, prompts, max_new_tokens=2, prompt_lengths=[11])
    with pytest.raises(ValueError, match="max_new_tokens"):
        tnn.generate(model, prompts, max_new_tokens=0)
    with pytest.raises(ValueError, match="top_p"):
        tnn.generate(model, prompts, max_new_tokens=1, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        tnn.generate(model, prompts, max_new_tokens=1, top_k=0)
    with pytest.raises(ValueError, match="temperature"):
        tnn.generate(model, prompts, max_new_tokens=1, temperature=-1.0)
    with pytest.raises(ValueError, match="prompts"):
        tnn.generate(model, np.zeros((3,), np.int32), max_new_tokens=1)
    with pytest.raises(ValueError, match="cache length"):
        model.init_cache(1, 17)


def test_topk_decode_attention_matches_numpy():
    rs = np.random.RandomState(0)
    q = rs.randn(2, 1, 4, 8).astype(np.float32)
    k = rs.randn(2, 10, 2, 8).astype(np.float32)
    v = rs.randn(2, 10, 2, 8).astype(np.float32)
    lengths = np.array([10, 6])
    out = np.asarray(
        tnn.topk_decode_attention(
            jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), kv_lengths=jnp.asarray(lengths), topk=3
        )
    )
    for b in range(2):
        for h in range(4):
            kv = h // 2
            s = k[b, : lengths[b], kv] @ q[b, 0, h] / np.sqrt(8)
            top = np.argsort(s)[-3:]
            p = np.exp(s[top] - s[top].max())
            p /= p.sum()
            np.testing.assert_allclose(out[b, 0, h], p @ v[b, top, kv], rtol=1e-4, atol=1e-5)
    # topk >= the number of valid keys is dense attention.
    dense = tnn.topk_decode_attention(
        jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), kv_lengths=jnp.asarray(lengths), topk=10
    )
    from tjx.kernels import reference_attention

    ref = reference_attention(
        jnp.asarray(q),
        jnp.asarray(k),
        jnp.asarray(v),
        mask=AttentionMask(kv_lengths=jnp.asarray(lengths)),
    )
    np.testing.assert_allclose(dense, ref, rtol=1e-4, atol=1e-5)


def test_topk_sparse_decode_in_model_runs_and_equals_dense_when_k_large():
    dense = build(llama_tiny(), seed=2)
    sparse = build(llama_tiny(attention=tnn.AttentionConfig(decode_topk=16)), seed=2)
    few = build(llama_tiny(attention=tnn.AttentionConfig(decode_topk=2)), seed=2)
    prompts = np.random.RandomState(2).randint(0, 64, (2, 4)).astype(np.int32)
    a = tnn.generate(dense, prompts, max_new_tokens=4)
    b = tnn.generate(sparse, prompts, max_new_tokens=4)
    c = tnn.generate(few, prompts, max_new_tokens=4)
    np.testing.assert_array_equal(a, b)
    assert np.asarray(c).shape == (2, 8)


def test_kv_cache_bytes_mla_saves_memory():
    base = tnn.LlamaConfig(d_model=512, num_heads=8, num_kv_heads=8, num_layers=4)
    mla = base.replace(mla=tnn.MLAConfig(kv_latent_dim=64), **{"attention.type": "mla"})
    full = tnn.kv_cache_bytes(base, batch=2, seq_len=100)
    small = tnn.kv_cache_bytes(mla, batch=2, seq_len=100)
    assert full == 4 * 2 * 100 * 2 * 8 * 64 * 2
    assert small == 4 * 2 * 100 * 64 * 2
    assert full / small == 16
    cache = tnn.init_cache(mla, 2, 10)
    assert set(cache) == {"latent"} and cache["latent"].shape == (4, 2, 10, 64)
