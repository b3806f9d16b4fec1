"""Sliding-window attention as a model setting: per-layer patterns, scanned and unrolled stacks,
rolling KV caches, FLOPs and the settings' errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn

from ._helpers import build, llama_tiny

WIN = dict(max_seq_len=32, **{"attention.sliding_window": 4})


def _toks(b=2, s=12, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, 64, (b, s)), jnp.int32)


def test_a_window_pattern_repeats_over_the_layers():
    gemma2 = llama_tiny(
        num_layers=5,
        attention=tnn.AttentionConfig(sliding_window=8, window_pattern=["local", "global"]),
    )
    assert gemma2.layer_windows() == (8, None, 8, None, 8)
    gemma3 = llama_tiny(
        num_layers=8,
        attention=tnn.AttentionConfig(sliding_window=8, window_pattern=["local"] * 5 + ["global"]),
    )
    assert gemma3.layer_windows() == (8,) * 5 + (None, 8, 8)
    assert llama_tiny(attention=tnn.AttentionConfig(sliding_window=8)).layer_windows() == (8, 8)
    assert llama_tiny().layer_windows() == (None, None)


def test_a_windowed_model_ignores_tokens_further_back_than_its_layers_reach():
    """Two layers of window 4 see at most 2·3 = 6 tokens back: changing token 0 moves logits
    up to position 6 and no further; without a window it moves all of them."""
    toks = _toks(1, 12)
    other = toks.at[0, 0].set((toks[0, 0] + 1) % 64)
    windowed = build(llama_tiny(**WIN))
    diff = jnp.abs(windowed(toks) - windowed(other)).max(-1)[0]
    assert (diff[:7] > 1e-6).all() and (diff[7:] == 0).all()
    full = build(llama_tiny(max_seq_len=32))
    assert (jnp.abs(full(toks) - full(other)).max(-1)[0] > 1e-6).all()


def test_scanned_mixed_patterns_match_unrolled_ones():
    """Scanned, a mixed pattern picks each layer's window under lax.cond; unrolled, statically:
    the same numbers either way (and remat keeps them)."""
    toks = _toks()
    kw = dict(
        num_layers=3,
        **{"attention.sliding_window": 3},
        **{"attention.window_pattern": ["local", "global"]},
        max_seq_len=32,
    )
    ref = build(llama_tiny(**kw))
    want = ref(toks)
    for extra in (dict(scan_layers=True), dict(scan_layers=True, remat="full"), dict(remat="full")):
        model = build(llama_tiny(**kw, **extra), seed=5)
        tnn.set_flat_params(model, tnn.get_flat_params(ref))
        np.testing.assert_allclose(model(toks), want, rtol=1e-5, atol=1e-5, err_msg=str(extra))
    # and the pattern matters: all-local differs
    local = build(llama_tiny(**{**kw, "attention.window_pattern": None}))
    tnn.set_flat_params(local, tnn.get_flat_params(ref))
    assert np.abs(np.asarray(local(toks) - want)).max() > 1e-4


def _greedy_checked_by_one_forward(model, out, lengths, new):
    """Greedy decoding is right iff each new token is the argmax of a full forward (no cache)
    over the sequence before it: one causal forward over the whole output checks them all."""
    logits = model(jnp.asarray(out))
    for r, length in enumerate(lengths):
        seq = np.asarray(out[r, : length + new])
        picks = np.asarray(jnp.argmax(logits[r, length - 1 : length + new - 1], -1))
        np.testing.assert_array_equal(picks, seq[length:], err_msg=f"row {r}")


@pytest.mark.parametrize(
    "kw",
    [
        dict(),  # every layer local: a rolling cache of 4 slots
        dict(
            **{"attention.type": "mla"}, mla=tnn.MLAConfig(kv_latent_dim=8)
        ),  # rolling latent cache
        dict(
            **{"attention.window_pattern": ["global", "local"]}, scan_layers=True
        ),  # full cache, window masks
    ],
    ids=["rolling", "rolling-mla", "mixed-scanned"],
)
def test_cached_generation_equals_recomputing_each_sequence(kw):
    model = build(llama_tiny(**WIN, **kw))
    prompts = _toks(2, 7, seed=3)
    lengths = np.asarray([7, 3])  # right padded; row 0's prompt is longer than the window
    out = tnn.generate(model, prompts, max_new_tokens=6, prompt_lengths=lengths)
    _greedy_checked_by_one_forward(model, out, lengths, 6)
    expected = 4 if "attention.window_pattern" not in kw else 13
    assert jax.tree.leaves(model.init_cache(2, 13))[0].shape[2] == expected


def test_a_rolling_cache_holds_the_window_and_counts_its_bytes():
    cfg = llama_tiny(**WIN)
    assert tnn.cache_slots(cfg, 30) == 4 and tnn.cache_slots(cfg, 3) == 3
    full = tnn.kv_cache_bytes(llama_tiny(max_seq_len=32), batch=1, seq_len=30)
    assert tnn.kv_cache_bytes(cfg, batch=1, seq_len=30) * 30 == full * 4


def test_windows_cut_the_attention_flops():
    cfg, s, w = llama_tiny(max_seq_len=64), 64, 16
    windowed = llama_tiny(max_seq_len=64, attention=tnn.AttentionConfig(sliding_window=w))
    area = cfg.num_layers * cfg.num_heads * cfg.head_dim  # L · A
    # PaLM's count (the whole score matrix): per token and layer 12 · A · s_k, with s_k = s
    # without the window and w with it
    palm = [tnn.flops_per_token(c, s, causal_half=False) for c in (cfg, windowed)]
    assert palm[0] - palm[1] == pytest.approx(12 * area * (s - w))
    # Causal at half: s·s/2 pairs without the window; s·w - w²/2 with it (the first w queries
    # see fewer than w keys), per token 6·A·s and 12·A·w - 6·A·w²/s
    half = [tnn.flops_per_token(c, s) for c in (cfg, windowed)]
    assert half[0] - half[1] == pytest.approx(area * (6 * s - (12 * w - 6 * w * w / s)))


@pytest.mark.parametrize(
    "kw,match",
    [
        (
            dict(**{"attention.sliding_window": 0}),
            "AttentionConfig.sliding_window must be a positive int; got 0",
        ),
        (
            dict(**{"attention.sliding_window": -2}),
            "AttentionConfig.sliding_window must be a positive int",
        ),
        (
            dict(**{"attention.window_pattern": ["local"]}),
            "AttentionConfig.window_pattern: it says which layers",
        ),
        (
            dict(**{"attention.sliding_window": 4}, **{"attention.window_pattern": []}),
            "window_pattern must be a non-empty list",
        ),
        (
            dict(**{"attention.sliding_window": 4}, **{"attention.window_pattern": ["near"]}),
            "window_pattern must be one of",
        ),
        (
            {"attention.sliding_window": 4, "position.kind": "t5"},
            "sliding_window: position 't5' is not",
        ),
    ],
)
def test_bad_window_settings_are_refused_by_name(kw, match):
    with pytest.raises(ValueError, match=match):
        llama_tiny(**kw)


def test_a_kernel_that_cannot_apply_the_window_is_refused_by_name():
    with pytest.raises(ValueError, match="BertConfig.attention_impl: 'cudnn' cannot apply a bidi"):
        tnn.BertConfig(attention_impl="cudnn", attention=tnn.AttentionConfig(sliding_window=4))
    assert (
        llama_tiny(
            attention_impl="cudnn", attention=tnn.AttentionConfig(sliding_window=4)
        ).attention.sliding_window
        == 4
    )  # causal


def test_a_pipeline_refuses_a_mixed_pattern():
    model = build(
        llama_tiny(
            scan_layers=True,
            attention=tnn.AttentionConfig(sliding_window=4, window_pattern=["local", "global"]),
        )
    )
    with pytest.raises(ValueError, match="window_pattern that mixes local and global"):
        tnn.decoder_stages(model)


def test_window_settings_round_trip_through_config_dicts():
    cfg = llama_tiny(
        attention=tnn.AttentionConfig(sliding_window=4, window_pattern=["local", "global"])
    )
    back = tnn.config_from_dict(tnn.config_to_dict(cfg))
    assert back == cfg and back.attention.window_pattern == ("local", "global")


def test_a_bidirectional_window_in_an_encoder():
    """BERT with a window: position i's output ignores tokens 4 or more away, both ways."""
    cfg = tnn.BertConfig(
        vocab_size=64,
        max_seq_len=16,
        d_model=32,
        num_layers=1,
        num_heads=4,
        attention=tnn.AttentionConfig(sliding_window=4),
    )
    model = tnn.BERT(cfg, rngs=nnx.Rngs(0))
    toks = _toks(1, 12)
    other = toks.at[0, 0].set((toks[0, 0] + 1) % 64)
    diff = jnp.abs(model(toks) - model(other)).max(-1)[0]
    assert (diff[:4] > 1e-6).all() and (diff[4:] == 0).all()
