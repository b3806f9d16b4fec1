"""Phi-3's LongRoPE in and out of Hugging Face configs without transformers (transformers itself:
tests-integration's ``test_hf_families.py``, case ``phi3-longrope``): the published forms, the
defaults transformers fills in, the round trip, the refusals, and generation across the
pretraining length (every token as a forward over its whole prefix computes it)."""

import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.hf.families import family_config_from_hf, family_config_to_hf

rng = np.random.default_rng(0)
SHORT = [float(v) for v in 1.0 + rng.random(48)]
LONG = [float(v) for v in 1.0 + 40 * rng.random(48)]
# Shaped like Phi-3-mini-128k-instruct's config.json (its first revision said "su").
MINI_128K = dict(
    architectures=["Phi3ForCausalLM"], attention_bias=False, attention_dropout=0.0,
    bos_token_id=1, embd_pdrop=0.0, eos_token_id=32000, hidden_act="silu", hidden_size=3072,
    initializer_range=0.02, intermediate_size=8192, max_position_embeddings=131072,
    model_type="phi3", num_attention_heads=32, num_hidden_layers=32, num_key_value_heads=32,
    original_max_position_embeddings=4096, pad_token_id=32000, resid_pdrop=0.0,
    rms_norm_eps=1e-5,
    rope_scaling={"long_factor": LONG, "short_factor": SHORT, "type": "longrope"},
    rope_theta=10000.0, sliding_window=262144, tie_word_embeddings=False,
    torch_dtype="bfloat16", use_cache=True, vocab_size=32064,
)  # fmt: skip
TINY = dict(vocab_size=48, max_seq_len=32, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2)
TINY_SCALING = tnn.RopeScaling(
    type="longrope",
    factor=4.0,
    original_max_position_embeddings=8,
    short_factor=[1.0, 1.3, 1.7, 2.5],
    long_factor=[1.0, 2.0, 5.0, 9.0],
)


@pytest.mark.parametrize("kind", ["longrope", "su", "yarn"])
def test_published_128k_config_reads_as_longrope_with_transformers_factors(kind):
    hf = {**MINI_128K, "rope_scaling": {**MINI_128K["rope_scaling"], "type": kind}}
    config = family_config_from_hf(hf)
    s = config.position.rope_scaling
    assert (s.type, s.original_max_position_embeddings, s.factor) == ("longrope", 4096, 32.0)
    assert s.short_factor == tuple(SHORT) and s.long_factor == tuple(LONG)
    assert (config.max_seq_len, config.attention.sliding_window) == (131072, 262144)
    inv = 1.0 / 10000.0 ** (np.arange(48) * 2 / 96)
    short, attention = tnn.rope_parameters(96, 10000.0, s, 4096)
    long, _ = tnn.rope_parameters(96, 10000.0, s, 4097)
    np.testing.assert_allclose(short, inv / np.asarray(SHORT), rtol=1e-15)
    np.testing.assert_allclose(long, inv / np.asarray(LONG), rtol=1e-15)
    assert attention == pytest.approx(math.sqrt(1 + math.log(32) / math.log(4096)), rel=1e-15)


def test_the_top_level_pretraining_length_wins_and_defaults_to_4096():
    """As transformers' ``Phi3Config``: its ``original_max_position_embeddings`` over the one in
    ``rope_scaling``, 4096 when absent; ``factor`` from ``max_position_embeddings`` unless set."""
    inner = {**MINI_128K["rope_scaling"], "original_max_position_embeddings": 2048}
    both = family_config_from_hf({**MINI_128K, "rope_scaling": inner})
    assert both.position.rope_scaling.original_max_position_embeddings == 4096
    absent = {k: v for k, v in MINI_128K.items() if k != "original_max_position_embeddings"}
    assert (
        family_config_from_hf(absent).position.rope_scaling.original_max_position_embeddings == 4096
    )
    given = {**MINI_128K["rope_scaling"], "factor": 16.0, "attention_factor": 1.1}
    s = family_config_from_hf({**MINI_128K, "rope_scaling": given}).position.rope_scaling
    assert (s.factor, s.attention_factor) == (16.0, 1.1)


def test_v5_rope_parameters_read_as_the_legacy_rope_scaling():
    legacy = family_config_from_hf(MINI_128K)
    params = {**MINI_128K["rope_scaling"], "rope_type": "longrope", "rope_theta": 10000.0}
    del params["type"]
    hf = {k: v for k, v in MINI_128K.items() if k not in ("rope_scaling", "rope_theta")}
    assert family_config_from_hf({**hf, "rope_parameters": params}) == legacy


@pytest.mark.parametrize(
    "scaling",
    [
        TINY_SCALING,
        # factor and attention factor not what transformers derives: written out.
        tnn.RopeScaling(**{**TINY_SCALING.as_dict(), "factor": 2.0, "attention_factor": 1.2}),
    ],
)
def test_longrope_config_json_round_trips_in_the_published_form(scaling):
    config = tnn.LlamaConfig(**TINY, position=tnn.PositionConfig(rope_scaling=scaling))
    hf = family_config_to_hf(config, "phi3")
    assert hf["original_max_position_embeddings"] == 8
    assert hf["rope_scaling"]["type"] == "longrope"
    derived = scaling.factor == 32 / 8 and scaling.attention_factor is None
    assert ("factor" in hf["rope_scaling"]) != derived
    assert family_config_from_hf(json.loads(json.dumps(hf))) == config


def test_saved_longrope_phi3_loads_back_with_the_same_logits(tmp_path):
    model = tnn.Llama(
        tnn.LlamaConfig(**TINY, position=tnn.PositionConfig(rope_scaling=TINY_SCALING)),
        rngs=nnx.Rngs(3),
    )
    tnn.save_hf(model, tmp_path / "ck", model_type="phi3")
    back, config = tnn.load_hf(tmp_path / "ck")
    assert config.position.rope_scaling == TINY_SCALING
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 48, (2, 12)))
    np.testing.assert_array_equal(np.asarray(back(tokens)), np.asarray(model(tokens)))


@pytest.mark.parametrize(
    ("scaling", "needle"),
    [
        ({"type": "linear", "factor": 2.0}, "type 'linear' is not one transformers' Phi-3"),
        ({"type": "su", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4, "beta_fast": 32},
         "beta_fast: type 'longrope' does not use it"),
        ({"type": "longrope", "short_factor": [1.0] * 4}, "long_factor: type 'longrope' needs it"),
        ({"type": "longrope", "short_factor": [1.0] * 4, "long_factor": [1.0] * 4,
          "partial_rotary_factor": 0.75}, "partial_rotary_factor 0.75"),
        ({"type": "longrope", "short_factor": [1.0] * 3, "long_factor": [1.0] * 3},
         "needs head_dim // 2 = 4 numbers"),
    ],
)  # fmt: skip
def test_a_phi3_scaling_tjx_cannot_honour_is_refused_in_one_line(scaling, needle):
    hf = family_config_to_hf(tnn.make_config(tnn.LlamaConfig, TINY), "phi3") | {
        "rope_scaling": scaling
    }
    with pytest.raises(ValueError, match="^[^\n]*$") as info:
        family_config_from_hf(hf)
    assert needle in str(info.value)


def test_a_phi3_export_writes_longrope_only():
    config = tnn.LlamaConfig(
        **TINY, position=tnn.PositionConfig(rope_scaling=tnn.RopeScaling(type="linear", factor=2.0))
    )
    with pytest.raises(ValueError, match="rope_scaling=RopeScaling"):
        family_config_to_hf(config, "phi3")


@pytest.mark.parametrize("prompt", [4, 10])
def test_greedy_tokens_are_what_a_forward_over_each_prefix_picks(prompt):
    """Past the pretraining length (8) LongRoPE turns to its long factors for the whole call: a
    generation that crosses it re-reads the sequence (as transformers' Phi-3 does), so each
    greedy token is the argmax of a full forward over the tokens before it; one that starts past
    it decodes on its cache. (Causal, so two forwards hold every prefix's last logits: one of
    the first 8 tokens, short like the prefixes within 8, one of all, long like those past it.)
    """
    config = tnn.LlamaConfig(
        **TINY,
        position=tnn.PositionConfig(rope_scaling=TINY_SCALING),
        init=tnn.InitConfig(std=0.3),
    )
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 48, (1, prompt)))
    out = np.asarray(tnn.generate(model, tokens, max_new_tokens=12, temperature=0.0))
    cut = TINY_SCALING.original_max_position_embeddings
    short = np.asarray(model(jnp.asarray(out[:, :cut])))[0]
    long = np.asarray(model(jnp.asarray(out[:, :-1])))[0]
    for t in range(prompt, out.shape[1]):
        logits = short[t - 1] if t <= cut else long[t - 1]
        assert out[0, t] == logits.argmax(), t
