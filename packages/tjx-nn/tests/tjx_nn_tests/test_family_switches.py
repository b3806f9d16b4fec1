"""The families' switches (Gemma 2/3, Qwen3, OLMo 2; ``family_config``) against a float64 NumPy
decoder written independently (``_family_reference``), in decoding, the loss and the config
checks."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import kernels
from tjx import nn as tnn
from tjx.nn.kv_cache import topk_decode_attention

from ._family_reference import reference_logits

# The models run jitted, one program per config and shape: run eagerly, each of a model's ops was
# traced, lowered and looked up in the compilation cache on its own (most of these tests' time).
_forward = nnx.jit(lambda model, tokens: model(tokens))
_forward_cached = nnx.jit(
    lambda model, tokens, cache, pos: model.forward_cached(tokens, cache, pos)
)

BASE = dict(vocab_size=40, max_seq_len=32, d_model=24, num_layers=2, num_heads=4, num_kv_heads=2)
FAMILIES = {
    # Gemma 2: sandwich norms (1 + w), scaled embeddings, GeGLU, query scale, both soft caps.
    "gemma2": dict(
        norm=tnn.NormConfig(position="sandwich", plus_one=True),
        scale_embeddings=True,
        mlp=tnn.MLPConfig(activation="geglu"),
        **{"attention.query_pre_attn_scalar": 9},
        **{"attention.logit_softcap": 2.0},
        final_logit_softcap=3.0,
        tie_embeddings=True,
        head_dim=8,
    ),
    # Gemma 3: Gemma 2 without caps, with per-head q/k norms (1 + w).
    "gemma3": dict(
        norm=tnn.NormConfig(position="sandwich", plus_one=True),
        scale_embeddings=True,
        mlp=tnn.MLPConfig(activation="geglu"),
        **{"attention.query_pre_attn_scalar": 16},
        **{"attention.qk_norm": True},
        tie_embeddings=True,
    ),
    # Gemma 2's local/global pattern: a window of 4 (the sequences are 9-11 long) in layer 0.
    "gemma2-local": dict(
        **{"attention.sliding_window": 4}, **{"attention.window_pattern": ("local", "global")}
    ),
    # Gemma 3's: local layers 0 and 2 rotate at their own base (100, against 10,000), layer 1
    # is global; three layers so that a scan carries a pattern that is not uniform.
    "gemma3-local": dict(
        **{"attention.sliding_window": 3},
        **{"attention.window_pattern": ("local", "global")},
        position=tnn.PositionConfig(rope_local_theta=100.0),
        num_layers=3,
    ),
    "qwen3": dict(**{"attention.qk_norm": True}, head_dim=10),
    "olmo2": dict(
        norm=tnn.NormConfig(position="output"),
        **{"attention.qk_norm": True},
        **{"attention.qk_norm_scope": "projection"},
    ),
    # gpt-oss: attention sinks, biases on every projection, the clamped SwiGLU, alternating
    # windows (its MoE layers: moe/test_layer.py).
    "gptoss": dict(
        **{"attention.sinks": True},
        use_bias=True,
        mlp=tnn.MLPConfig(activation="swiglu_clamped"),
        **{"attention.sliding_window": 4},
        **{"attention.window_pattern": ("local", "global")},
    ),
    # GLM-4.5: RoPE on each head's first 4 of 10 dims (int(10 · 0.4)), q/k norms, q/k/v biases.
    "glm": dict(
        **{"position.rope_fraction": 0.4},
        **{"attention.qk_norm": True},
        **{"attention.qkv_bias": True},
        head_dim=10,
    ),
}


def _switches(family):
    """A case's fields: a ``-local`` case is its Gemma with a window pattern on top."""
    name, _, local = family.partition("-")
    return {**BASE, **FAMILIES[name], **(FAMILIES[family] if local else {})}


def _model(family, seed=0, **kw):
    config = tnn.make_config(tnn.LlamaConfig, {**_switches(family), **kw})
    model = tnn.Llama(config, rngs=nnx.Rngs(seed))
    # Random norms (init makes them 0 or 1): a misplaced or mis-scaled norm changes the logits;
    # weights large enough that the soft caps bend the logits (without saturating them).
    rs = np.random.RandomState(seed)
    flat = tnn.get_flat_params(model)
    new = {k: v + 0.3 * rs.randn(*v.shape) for k, v in flat.items()}
    tnn.set_flat_params(model, new)
    return model, config


def _tokens(s=11, seed=1):
    return np.random.RandomState(seed).randint(0, 40, (2, s))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_each_family_matches_a_float64_reference(family):
    with jax.enable_x64(True):
        model, config = _model(family, precision=tnn.Precision(jnp.float64, jnp.float64))
        tokens = _tokens()
        got = np.asarray(_forward(model, jnp.asarray(tokens)))
        want = reference_logits(tnn.get_flat_params(model), config, tokens)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    if config.final_logit_softcap is not None:
        assert np.abs(want).max() < config.final_logit_softcap
        assert np.abs(want).max() > 0.5 * config.final_logit_softcap  # the cap bent them


def test_each_switch_changes_the_logits():
    """Every switch of the Gemma 2 case matters (a switch the model ignored would pass above only
    if the reference ignored it too): turning it off moves the logits."""
    tokens = jnp.asarray(_tokens())
    model, config = _model("gemma2")
    base = np.asarray(_forward(model, tokens))
    flat = tnn.get_flat_params(model)
    for change in (
        dict(scale_embeddings=False),
        dict(**{"attention.query_pre_attn_scalar": None}),
        dict(**{"attention.logit_softcap": None}),
        dict(final_logit_softcap=None),
    ):
        other = tnn.Llama(config.replace(**change), rngs=nnx.Rngs(0))
        tnn.set_flat_params(other, flat)
        assert np.abs(np.asarray(_forward(other, tokens)) - base).max() > 1e-3, change


def test_local_layers_rotate_at_their_own_base_and_see_only_their_window():
    """Both of Gemma 3's local-layer switches move the logits (the reference above agrees with
    each): the local base, and the window."""
    tokens = jnp.asarray(_tokens())
    model, config = _model("gemma3-local")
    base = np.asarray(_forward(model, tokens))
    flat = tnn.get_flat_params(model)
    no_window = {
        "position.rope_local_theta": None,
        "attention.sliding_window": None,
        "attention.window_pattern": None,
    }
    for change in ({"position.rope_local_theta": None}, no_window):
        other = tnn.Llama(config.replace(**change), rngs=nnx.Rngs(0))
        tnn.set_flat_params(other, flat)
        assert np.abs(np.asarray(_forward(other, tokens)) - base).max() > 1e-3, change


@pytest.mark.parametrize("family", ["gemma2", "olmo2", "gemma3-local", "gptoss"])
def test_scanned_and_remat_stacks_compute_the_same(family):
    model, config = _model(family)
    tokens = jnp.asarray(_tokens())
    scanned = tnn.Llama(config.replace(scan_layers=True, remat="full"), rngs=nnx.Rngs(1))
    tnn.set_flat_params(scanned, tnn.get_flat_params(model))
    np.testing.assert_allclose(
        _forward(scanned, tokens), _forward(model, tokens), rtol=2e-5, atol=2e-5
    )


@pytest.mark.parametrize(
    "family", ["gemma2", "olmo2", "olmo2-mla", "gemma3-local", "gemma3-mla", "gptoss", "glm"]
)
def test_cached_decoding_matches_the_full_forward(family):
    # MLA: the key norm acts on keys up-projected from the cached latent at every step; with
    # Gemma 3's windows (gemma3-mla) those keys are re-rotated at the local base.
    mla = dict(**{"attention.type": "mla"}, mla=tnn.MLAConfig(kv_latent_dim=8))
    mla = mla if family.endswith("mla") else {}
    name = "gemma3-local" if family == "gemma3-mla" else family.removesuffix("-mla")
    model, _ = _model(name, **mla)
    tokens = jnp.asarray(_tokens(9))
    full = np.asarray(_forward(model, tokens))
    cache = model.init_cache(2, 16)
    logits, cache = _forward_cached(model, tokens[:, :6], cache, jnp.zeros((2,), jnp.int32))
    steps = [np.asarray(logits)]
    for i in range(6, 9):
        logits, cache = _forward_cached(model, tokens[:, i : i + 1], cache, jnp.full((2,), i))
        steps.append(np.asarray(logits))
    np.testing.assert_allclose(np.concatenate(steps, 1), full, rtol=1e-4, atol=1e-4)


def test_top_k_decode_attention_takes_the_scale_and_the_soft_cap():
    rs = np.random.RandomState(0)
    q = jnp.asarray(rs.randn(2, 1, 4, 8) * 3, jnp.float32)
    k = jnp.asarray(rs.randn(2, 7, 2, 8) * 3, jnp.float32)
    v = jnp.asarray(rs.randn(2, 7, 2, 8), jnp.float32)
    lengths = jnp.asarray([7, 4], jnp.int32)
    got = topk_decode_attention(q, k, v, kv_lengths=lengths, topk=7, scale=0.3, softcap=2.0)
    want = kernels.reference_attention(
        q, k, v, mask=kernels.AttentionMask(kv_lengths=lengths), scale=0.3, softcap=2.0
    )
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("chunked", [True, False])
def test_the_loss_is_that_of_the_soft_capped_logits(chunked):
    model, _ = _model("gemma2")
    tokens = jnp.asarray(_tokens(12))
    batch = {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
    got = tnn.objective_loss(model, batch, chunked=chunked)
    logits = model(tokens[:, :-1])  # capped
    want = tnn.logits_cross_entropy(logits, tokens[:, 1:])
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-5)
    uncapped = tnn.Llama(model.config.replace(final_logit_softcap=None), rngs=nnx.Rngs(0))
    tnn.set_flat_params(uncapped, tnn.get_flat_params(model))
    assert abs(float(tnn.objective_loss(uncapped, batch).loss) - float(want.loss)) > 0.1


def test_gemma_norms_start_at_zero_and_act_as_one():
    model, _ = _model("gemma3")
    fresh = tnn.Llama(model.config, rngs=nnx.Rngs(3))
    flat = tnn.get_flat_params(fresh)
    norms = [k for k in flat if k.endswith(".scale")]
    assert "stack.layers.0.attn_post_norm.scale" in norms and "final_norm.scale" in norms
    assert "stack.layers.0.attn.q_norm.scale" in norms
    assert all(not flat[k].any() for k in norms)
    x = jnp.asarray(np.random.RandomState(0).randn(3, 24), jnp.float32)
    norm = tnn.RMSNorm(24, rngs=nnx.Rngs(0), plus_one=True)
    plain = tnn.RMSNorm(24, rngs=nnx.Rngs(0))
    np.testing.assert_allclose(norm(x), plain(x), rtol=1e-6)


def test_a_layer_norm_with_plus_one_scales_by_one_plus_its_weight():
    x = jnp.asarray(np.random.RandomState(1).randn(3, 8), jnp.float32)
    norm = tnn.LayerNorm(8, rngs=nnx.Rngs(0), plus_one=True)
    assert not np.asarray(norm.scale[...]).any()
    norm.scale.set_value(jnp.full((8,), 0.5))
    plain = tnn.LayerNorm(8, rngs=nnx.Rngs(0))
    plain.scale.set_value(jnp.full((8,), 1.5))
    np.testing.assert_allclose(norm(x), plain(x), rtol=1e-6)


def test_a_cross_attention_block_refuses_the_decoder_only_norm_positions():
    config = tnn.TransformerConfig(**BASE, norm=tnn.NormConfig(position="sandwich"))
    with pytest.raises(ValueError, match="cross-attention blocks take norm.position pre or post"):
        tnn.Block(config, rngs=nnx.Rngs(0), num_layers=1, causal=True, cross=True)


def test_the_embedding_scale_is_rounded_as_transformers_rounds_it():
    """sqrt(d) to float32, then to the compute dtype (bf16: sqrt(3072) = 55.43 -> 55.5)."""
    config = tnn.make_config(
        tnn.LlamaConfig,
        {
            **{**BASE, "d_model": 3072, "num_heads": 24, "num_kv_heads": 24, "num_layers": 1},
            "scale_embeddings": True,
            "precision": "pure_bf16",
        },
    )
    model = nnx.eval_shape(lambda: tnn.Llama(config, rngs=nnx.Rngs(0)))
    model.embed.embedding.set_value(jnp.ones((40, 3072), jnp.bfloat16))
    x = model.embed_tokens(jnp.zeros((1, 1), jnp.int32), jnp.zeros((1, 1), jnp.int32))
    assert x.dtype == jnp.bfloat16 and float(x[0, 0, 0]) == 55.5 != math.sqrt(3072)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(**{"attention.qk_norm_scope": "projection"}), "qk_norm_scope: only qk_norm uses it"),
        (
            dict(**{"attention.qk_norm": True}, **{"attention.qk_norm_scope": "heads"}),
            "qk_norm_scope must be one of",
        ),
        (
            dict(**{"attention.logit_softcap": 0.0}),
            "AttentionConfig.logit_softcap must be a positive number",
        ),
        (dict(final_logit_softcap=True), "final_logit_softcap must be a positive number"),
        (
            dict(**{"attention.query_pre_attn_scalar": -4}),
            "query_pre_attn_scalar must be a positive number",
        ),
        (
            dict(**{"attention.logit_softcap": 50.0}, attention_impl="cudnn"),
            "attention_impl 'cudnn' cannot soft-cap",
        ),
        (
            dict(final_logit_softcap=30.0, cross_entropy_impl="pallas"),
            "cross_entropy_impl 'pallas' cannot soft-cap the output logits",
        ),
        (
            {"position.rope_local_theta": 1e4},
            "rope_local_theta: only windowed RoPE layers use it",
        ),
        (
            {
                "position.rope_local_theta": 1e4,
                "position.kind": "alibi",
                "attention.sliding_window": 8,
            },
            "rope_local_theta: only windowed RoPE layers",
        ),
        (
            {"position.rope_local_theta": 0, "attention.sliding_window": 8},
            "rope_local_theta must be a positive",
        ),
        (
            dict(**{"attention.sinks": True}, attention_impl="pallas"),
            "'pallas' cannot add attention",
        ),
        (dict(**{"attention.sinks": True}, attention_impl="cudnn"), "'cudnn' cannot add attention"),
        (
            dict(**{"attention.sinks": True}, attention_impl="tokamax"),
            "'tokamax' cannot add attention",
        ),
        (
            dict(**{"attention.sinks": True}, **{"attention.decode_topk": 4}),
            "attention sinks need full decoding .*got decode_topk 4",
        ),
        (
            dict(
                **{"attention.sinks": True},
                **{"attention.type": "mla"},
                mla=tnn.MLAConfig(kv_latent_dim=8),
            ),
            "attention sinks need full decoding .*type 'mla'",
        ),
        (
            {"position.rope_fraction": 0.0},
            "rope_fraction must be a number in \\(0, 1\\]",
        ),
        ({"position.rope_fraction": 1.5}, "rope_fraction must be a number in"),
        (
            dict(position=tnn.PositionConfig(rope_fraction=0.3)),
            "rotates int\\(head_dim 6 x 0.3\\) = 1 dims",
        ),
        (
            dict(position=tnn.PositionConfig(rope_fraction=0.5, kind="alibi")),
            "rope_fraction 0.5 needs position.kind 'rope'",
        ),
        (
            dict(
                head_dim=8,
                position=tnn.PositionConfig(
                    rope_fraction=0.5,
                    rope_scaling=dict(
                        type="longrope",
                        factor=2.0,
                        original_max_position_embeddings=8,
                        short_factor=[1.0] * 4,
                        long_factor=[1.0] * 4,
                    ),
                ),
            ),
            "with a longrope rope_scaling is not supported",
        ),
    ],
)
def test_bad_switches_raise_naming_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tnn.make_config(tnn.LlamaConfig, {**BASE, **kwargs})


def test_the_sinks_the_clamp_and_the_partial_rope_each_change_the_logits():
    """gpt-oss's and GLM's switches matter (the reference above computes each): turning one off
    (the same weights otherwise) moves the logits."""
    tokens = jnp.asarray(_tokens())
    for family, change in (
        ("gptoss", dict(**{"attention.sinks": False})),
        ("gptoss", dict(mlp=tnn.MLPConfig(activation="swiglu"))),
        ("glm", dict(position=tnn.PositionConfig(rope_fraction=1.0))),
    ):
        model, config = _model(family, init=tnn.InitConfig(std=1.0))
        flat = tnn.get_flat_params(model)
        other = tnn.Llama(config.replace(**change), rngs=nnx.Rngs(0))
        names = set(tnn.get_flat_params(other))  # the same, but the sinks when they are off
        tnn.set_flat_params(other, {k: v for k, v in flat.items() if k in names})
        moved = np.asarray(_forward(other, tokens)) - np.asarray(_forward(model, tokens))
        assert np.abs(moved).max() > 1e-3, change


def test_a_model_with_sinks_resolves_the_xla_kernel():
    resolved = tnn.resolve_attention(
        tnn.make_config(tnn.LlamaConfig, {**BASE, "attention": tnn.AttentionConfig(sinks=True)})
    )
    assert resolved.kernel("causal") == kernels.AttentionKernel.XLA


def test_non_decoders_refuse_the_decoder_only_switches():
    with pytest.raises(ValueError, match="BertConfig.scale_embeddings: only decoders"):
        tnn.BertConfig(scale_embeddings=True)
    with pytest.raises(ValueError, match="norm.position 'sandwich' is implemented by decoders"):
        tnn.BertConfig(norm=tnn.NormConfig(position="sandwich"))
    with pytest.raises(ValueError, match="EncoderDecoderConfig.final_logit_softcap"):
        tnn.EncoderDecoderConfig(final_logit_softcap=30.0)
    with pytest.raises(ValueError, match="BertConfig.attention.sinks: only decoders"):
        tnn.BertConfig(attention=tnn.AttentionConfig(sinks=True))
    assert tnn.GPT2Config(norm=tnn.NormConfig(position="output")).norm.position == "output"
    assert (
        tnn.LlamaConfig(
            attention=tnn.AttentionConfig(query_pre_attn_scalar=256)
        ).attention.query_pre_attn_scalar
        == 256.0
    )
