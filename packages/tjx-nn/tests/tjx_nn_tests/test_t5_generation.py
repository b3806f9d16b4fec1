"""KV-cache decoding with the T5 relative bias equals recomputing the whole sequence.

In a decode step the stack builds the bias of the new query against every cache slot; the cached
greedy tokens can only equal the naive loop's if that row equals the full-sequence bias row.
"""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn import generation as gen_mod
from tjx_nn_tests._helpers import TINY, build, gpt2_tiny, llama_tiny
from tjx_nn_tests._t5_reference import randomize

V = TINY["vocab_size"]
# Dotted keys (the helpers' make_config): each sets one setting of the position section.
T5 = {"position.kind": "t5"}
SMALL = {"position.relative_buckets": 8, "position.relative_max_distance": 10}  # log, clipped


def _recompute(fwd, b, prompts, lengths, max_new):
    """Greedy tokens by re-running the full model on right-padded growing targets (causal: the
    padding after a row's last token cannot change its logits)."""
    total = prompts.shape[1] + max_new
    seqs = [list(prompts[r, : lengths[r]]) for r in range(b)]
    for _ in range(max_new):
        buf = np.zeros((b, total), np.int32)
        for r, seq in enumerate(seqs):
            buf[r, : len(seq)] = seq
        logits = np.asarray(fwd(jnp.asarray(buf)))
        for r, seq in enumerate(seqs):
            seq.append(int(np.argmax(logits[r, len(seq) - 1])))
    return seqs


@pytest.mark.parametrize(
    "cfg",
    [
        llama_tiny(**T5, scan_layers=True, **SMALL),
        llama_tiny(
            **T5,
            mla=tnn.MLAConfig(kv_latent_dim=8),
            **SMALL,
            attention=tnn.AttentionConfig(type="mla"),
        ),
        gpt2_tiny(**T5, num_layers=1),
    ],
    ids=["llama-gqa-scan-small-table", "llama-mla-cache", "gpt2-unrolled-default-table"],
)
def test_cached_greedy_equals_recompute_decoder(cfg):
    model = build(cfg, seed=1)
    randomize(model, 1)
    prompts = np.random.RandomState(0).randint(0, V, (3, 5)).astype(np.int32)
    lengths = np.array([5, 1, 3])
    before = dict(gen_mod.TRACE_COUNTS)
    out = np.asarray(tnn.generate(model, prompts, max_new_tokens=9, prompt_lengths=lengths))
    assert gen_mod.TRACE_COUNTS["decode"] - before["decode"] == 1  # no per-token retrace
    fwd = nnx.jit(lambda m, t: m(t))
    want = _recompute(lambda t: fwd(model, t), 3, prompts, lengths, 9)
    for r in range(3):
        assert out[r, : lengths[r] + 9].tolist() == want[r]


@pytest.mark.parametrize(
    "kw",
    [
        dict(scan_layers=True, num_kv_heads=2, **SMALL),
        dict(num_layers=1, norm=tnn.NormConfig(position="post"), tie_embeddings=False),
    ],
    ids=["scan-gqa-small-table", "unrolled-postln-default-table"],
)
def test_cached_greedy_equals_recompute_seq2seq(kw):
    model = build(
        tnn.make_config(tnn.EncoderDecoderConfig, {**TINY, "position.kind": "t5", **kw}), seed=2
    )
    randomize(model, 2)
    rs = np.random.RandomState(3)
    src = rs.randint(1, V, (3, 9)).astype(np.int32)
    src_lengths = np.array([9, 4, 6])
    prompts = rs.randint(1, V, (3, 3)).astype(np.int32)
    prompt_lengths = np.array([1, 3, 2])
    out = np.asarray(
        tnn.generate_seq2seq(
            model,
            src,
            max_new_tokens=8,
            src_lengths=src_lengths,
            decoder_prompts=prompts,
            prompt_lengths=prompt_lengths,
        )
    )
    src_ids = jnp.asarray((np.arange(9)[None] < src_lengths[:, None]).astype(np.int32))
    fwd = nnx.jit(lambda m, t: m(jnp.asarray(src), t, src_segment_ids=src_ids))
    want = _recompute(lambda t: fwd(model, t), 3, prompts, prompt_lengths, 8)
    for r in range(3):
        assert out[r, : prompt_lengths[r] + 8].tolist() == want[r]
