"""GRPO's rollouts: groups of sampled completions laid out as the batch the loss scores."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.grpo import greedy_completions, rollout_batch, sample_groups
from tjx_nn_tests._helpers import build, llama_tiny


def test_targets_are_each_completions_tokens_through_its_end_and_nothing_else():
    rng = np.random.default_rng()
    rows, p, t, eos = 5, 4, 6, 7
    lengths_p = rng.integers(1, p + 1, rows)
    seq = rng.integers(8, 50, (rows, p + t))
    n = rng.integers(1, t + 1, rows)  # each completion's tokens, its end token included
    ended = rng.uniform(size=rows) < 0.7
    for r in range(rows):
        if ended[r]:
            seq[r, lengths_p[r] + n[r] - 1] = eos
        else:
            n[r] = t  # never ended: the whole budget
    out = rollout_batch(seq, lengths_p, max_new_tokens=t, eos_id=eos)
    np.testing.assert_array_equal(out.lengths, n)
    targets = np.asarray(out.batch["targets"])
    for r in range(rows):
        scored = [(i + 1, tok) for i, tok in enumerate(targets[r]) if tok != -100]
        want = [(j, seq[r, j]) for j in range(lengths_p[r], lengths_p[r] + n[r])]
        assert scored == want, r
        np.testing.assert_array_equal(
            out.completions[r, : n[r]], seq[r, lengths_p[r] : lengths_p[r] + n[r]]
        )
        assert np.all(out.completions[r, n[r] :] == 0)
    np.testing.assert_array_equal(np.asarray(out.mask), (targets != -100).astype(np.float32))
    np.testing.assert_array_equal(np.asarray(out.batch["inputs"]), seq[:, :-1])
    np.testing.assert_array_equal(out.truncated, ~ended)
    # mask_truncated (TRL's mask_truncated_completions): a completion that never ended is out of
    # the loss (its mask row 0), the rest as before; its tokens and length are still reported.
    cut = rollout_batch(seq, lengths_p, max_new_tokens=t, eos_id=eos, mask_truncated=True)
    want = np.asarray(out.mask) * ended[:, None]
    np.testing.assert_array_equal(np.asarray(cut.mask), want)
    np.testing.assert_array_equal(np.asarray(cut.batch["targets"]), targets)
    np.testing.assert_array_equal(cut.lengths, n)
    with pytest.raises(ValueError, match="mask_truncated needs eos_id"):
        rollout_batch(seq, lengths_p, max_new_tokens=t, eos_id=None, mask_truncated=True)


def test_groups_repeat_each_prompt_and_sample_their_own_completions():
    model = build(llama_tiny())
    rng = np.random.default_rng()
    prompts = rng.integers(1, model.config.vocab_size, (2, 4)).astype(np.int32)
    lengths = np.array([4, 2])
    key = jax.random.key(int(rng.integers(1 << 30)))
    kw = dict(group=4, max_new_tokens=5, temperature=2.0, eos_id=3, pad_id=0)
    out = sample_groups(model, prompts, lengths, key=key, **kw)
    inputs = np.asarray(out.batch["inputs"])
    assert inputs.shape == (8, 4 + 5 - 1)
    for r in range(8):  # row r is prompt r // 4's
        np.testing.assert_array_equal(
            inputs[r, : lengths[r // 4]], prompts[r // 4, : lengths[r // 4]]
        )
    assert len({tuple(c) for c in out.completions}) > 2  # sampled, not four copies of one
    again = sample_groups(model, prompts, lengths, key=key, **kw)
    np.testing.assert_array_equal(again.completions, out.completions)  # the key decides
    # The batch scores what was sampled: its log-probabilities are finite on the completions.
    logps = np.asarray(tnn.token_logprobs(model, out.batch))
    assert np.all(np.isfinite(logps)) and np.all(logps[np.asarray(out.mask) == 0] == 0)
    assert np.all(logps[np.asarray(out.mask) == 1] < 0)
    with pytest.raises(ValueError, match="temperature > 0"):
        sample_groups(model, prompts, lengths, key=key, **{**kw, "temperature": 0.0})


def test_groups_sampled_with_their_rows_split_over_a_mesh_are_the_same_completions():
    # An overlapped run's sampler (the trainer's grpo.overlap) splits the rows over its devices:
    # each array the loop makes is placed so, the weights replicated; the tokens are the
    # one-device call's (the sampling's random bits do not depend on the split).
    model = build(llama_tiny())
    rng = np.random.default_rng()
    prompts = rng.integers(1, model.config.vocab_size, (2, 4)).astype(np.int32)
    lengths = np.array([3, 4])
    key = jax.random.key(int(rng.integers(1 << 30)))
    kw = dict(group=4, max_new_tokens=5, temperature=1.5, eos_id=3, pad_id=0)
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:4]), ("rows",))
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("rows"))
    whole = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    by_layer = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(None, "rows"))
    placed: list[jax.Array] = []
    cached: list[jax.Array] = []

    def place(x):
        placed.append(jax.device_put(x, split if np.ndim(x) and np.shape(x)[0] == 8 else whole))
        return placed[-1]

    def place_cache(x):  # [layers, rows, ...]
        cached.append(jax.device_put(x, by_layer))
        return cached[-1]

    graphdef, state = nnx.split(model)
    replicated = nnx.merge(graphdef, jax.device_put(state, whole))
    got = sample_groups(
        replicated, prompts, lengths, key=key, place=place, place_cache=place_cache, **kw
    )
    want = sample_groups(model, prompts, lengths, key=key, **kw)
    np.testing.assert_array_equal(got.completions, want.completions)
    np.testing.assert_array_equal(got.lengths, want.lengths)
    rows = [x for x in placed if x.ndim and x.shape[0] == 8]  # prompts, lengths, tokens
    assert len(rows) > 3 and all(x.sharding == split for x in rows)
    assert cached and all(x.shape[1] == 8 for x in cached)  # the cache: its rows split
    assert all({s.data.shape[1] for s in x.addressable_shards} == {2} for x in cached)


def test_the_decodes_log_probabilities_are_a_full_forwards_in_float64():
    """GRPO's π_old from the sampler's own decode (``logprobs``): each completion token's
    log-probability, scored by the prefill (the first token) and the decode steps from the
    logits they sampled it from, equals a float64 log-softmax of one full forward pass over the
    sequence (the logits over the temperature, the whole vocabulary: top-p only picks the
    token) within 2e-5: the cache's path and the forward's round float32 differently. Nothing
    outside the completions is scored; without ``logprobs`` there are none."""
    model = build(llama_tiny())
    rng = np.random.default_rng()
    prompts = rng.integers(4, model.config.vocab_size, (2, 5)).astype(np.int32)
    lengths = np.array([5, 3])
    key = jax.random.key(int(rng.integers(1 << 30)))
    kw = dict(group=3, max_new_tokens=6, temperature=0.7, top_p=0.9, eos_id=3, pad_id=0)
    out = sample_groups(model, prompts, lengths, key=key, logprobs=True, **kw)
    assert out.logps is not None
    targets = np.asarray(out.batch["targets"])
    logits = np.asarray(model(out.batch["inputs"], deterministic=True), np.float64) / 0.7
    top = logits.max(-1, keepdims=True)
    logz = np.log(np.exp(logits - top).sum(-1)) + top[..., 0]
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], -1)[..., 0]
    want = np.where(targets >= 0, picked - logz, 0.0)
    got = np.asarray(out.logps)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5)
    assert np.all(got[targets >= 0] < 0) and np.all(got[targets < 0] == 0)
    plain = rollout_batch(np.zeros((1, 3), int), np.ones(1, int), max_new_tokens=2, eos_id=None)
    assert plain.logps is None


def test_a_temperature_divides_the_logits_before_the_log_softmax_and_the_entropy():
    model = build(llama_tiny())
    rng = np.random.default_rng()
    ids = jnp.asarray(rng.integers(0, model.config.vocab_size, (2, 6)), jnp.int32)
    batch = {"inputs": ids[:, :-1], "targets": ids[:, 1:]}
    logits = np.asarray(model(batch["inputs"], deterministic=True), np.float64) / 0.7
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    want = np.take_along_axis(logits, np.asarray(ids[:, 1:])[..., None], -1)[..., 0] - logz
    got = np.asarray(tnn.token_logprobs(model, batch, temperature=0.7))
    np.testing.assert_allclose(got, want, atol=2e-5)
    # The entropies (TRL's) of the same tempered distributions; 0 where the target is -100.
    batch["targets"] = batch["targets"].at[0, :2].set(-100)
    logps, ent = tnn.token_logprobs_and_entropies(model, batch, temperature=0.7)
    logp_all = logits - logz[..., None]
    entropy = -(np.exp(logp_all) * logp_all).sum(-1)
    entropy[0, :2] = 0.0
    np.testing.assert_allclose(np.asarray(ent), entropy, atol=2e-5)
    want[0, :2] = 0.0
    np.testing.assert_allclose(np.asarray(logps), want, atol=2e-5)


def test_greedy_completions_are_each_rows_argmax_continuation_up_to_its_end():
    """Against a plain reference: each prompt alone, the full forward pass over the prefix, the
    argmax token appended, until the end token or the budget. (The prefix sits in a buffer of
    one width, zeros after it: causal attention never reads them, and one program serves all.)"""
    model = build(llama_tiny())
    rng = np.random.default_rng()
    prompts = rng.integers(4, model.config.vocab_size, (3, 5)).astype(np.int32)
    lengths = np.array([5, 2, 3])
    forward = jax.jit(lambda ids: model(ids))

    def next_token(seq: list[int]) -> int:
        buffer = np.zeros((1, 5 + 4), np.int32)
        buffer[0, : len(seq)] = seq
        return int(np.argmax(np.asarray(forward(jnp.asarray(buffer)))[0, len(seq) - 1]))

    eos = next_token(list(prompts[1, :2]))  # row 1 ends at its first token
    out = greedy_completions(model, prompts, lengths, max_new_tokens=4, eos_id=eos, pad_id=0)
    for r in range(3):
        seq, want = list(prompts[r, : lengths[r]]), []
        while len(want) < 4:
            tok = next_token(seq)
            want.append(tok)
            seq.append(tok)
            if tok == eos:
                break
        assert out.lengths[r] == len(want), r
        np.testing.assert_array_equal(out.completions[r, : len(want)], want)
        assert np.all(out.completions[r, len(want) :] == 0)
    assert out.lengths[1] == 1


def test_lowered_generation_programs_compute_what_generate_does():
    """`lower_generation`'s prefill, compiled and run here, samples generate's first token."""
    model = build(llama_tiny())
    rng = np.random.default_rng()
    prompts = rng.integers(1, model.config.vocab_size, (2, 4)).astype(np.int32)
    lengths = np.array([4, 3], np.int32)
    programs = tnn.lower_generation(model, 2, 4, max_new_tokens=3, temperature=0.0)
    prefill, decode = programs.prefill.compile(), programs.decode.compile()
    from flax import nnx

    _, state = nnx.split(model)
    cache = model.init_cache(2, 7)
    _, first = prefill(state, jnp.asarray(prompts), jnp.asarray(lengths), cache, jax.random.key(0))
    want = np.asarray(tnn.generate(model, prompts, max_new_tokens=1, temperature=0.0,
                                   prompt_lengths=lengths))  # fmt: skip
    np.testing.assert_array_equal(np.asarray(first), want[np.arange(2), lengths])
    assert decode.memory_analysis() is not None
    with pytest.raises(ValueError, match="exceeds the model's max_seq_len"):
        tnn.lower_generation(model, 2, model.config.max_seq_len, max_new_tokens=1)
