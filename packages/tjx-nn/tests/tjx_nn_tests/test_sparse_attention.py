"""DeepSeek Sparse Attention (DeepSeek-V3.2's lightning indexer, ``mla.index_*``): the top-k
selection against a NumPy reference on fresh random scores, the cached decode against the full
forward (greedy tokens), a packed batch's segments kept apart, the fused kernels refused by name,
and the settings' refusals (tests-integration's test_hf_families.py compares with transformers)."""

from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.families.deepseek_v32.indexer import Indexer
from tjx.nn.kernel_choice import resolve_attention
from tjx.nn.kv_cache import init_cache, kv_cache_bytes

SPARSE = tnn.MLAConfig(
    kv_latent_dim=16, q_lora_rank=12, qk_rope_head_dim=4, v_head_dim=6, index_topk=3,
    index_n_heads=4, index_head_dim=8,
)  # fmt: skip
SIZES = dict(
    vocab_size=48, max_seq_len=32, d_model=32, num_layers=1, num_heads=4, num_kv_heads=4,
    head_dim=12, mlp=tnn.MLPConfig(dim=40), attention_impl="xla", **{"attention.type": "mla"},
)  # fmt: skip


@nnx.jit
def _logits(model, tokens, positions=None, segment_ids=None):
    """The model's logits, one compile per shape (eager ops are slow on a busy CPU)."""
    return model(tokens, positions=positions, segment_ids=segment_ids)


def _config(**mla):
    return tnn.make_config(tnn.LlamaConfig, {**SIZES, "mla": replace(SPARSE, **mla)})


@pytest.fixture(scope="module")
def model():
    return tnn.Llama(_config(), rngs=nnx.Rngs(3))


def test_the_bias_keeps_each_querys_top_k_visible_keys():
    """0 at the ``index_topk`` highest visible scores of each query (NumPy's order), -inf
    elsewhere; a query that sees fewer keeps them all."""
    indexer = Indexer(_config(), rngs=nnx.Rngs(0))
    scores = np.random.default_rng(7).normal(size=(2, 6, 6)).astype(np.float32)
    visible = np.tril(np.ones((6, 6), bool))[None].repeat(2, 0)
    bias = np.asarray(indexer.bias(jnp.asarray(scores), jnp.asarray(visible)))
    assert bias.shape == (2, 1, 6, 6)
    for b in range(2):
        for s in range(6):
            seen = np.flatnonzero(visible[b, s])
            top = seen[np.argsort(-scores[b, s, seen])][:3]
            assert set(np.flatnonzero(bias[b, 0, s] == 0)) == set(top)
            assert np.all(np.isneginf(np.delete(bias[b, 0, s], top)))


def test_cached_decode_selects_as_the_full_forward(model):
    """Greedy tokens from the KV cache (the indexer's keys cached) are the full forward's argmax
    at each position (teacher-forced on them)."""
    prompt = jnp.asarray(np.random.default_rng(2).integers(0, 48, size=(2, 4)))
    out = np.asarray(tnn.generate(model, prompt, max_new_tokens=8, temperature=0))
    full = np.asarray(_logits(model, jnp.asarray(out)))
    np.testing.assert_array_equal(full[:, 3:-1].argmax(-1), out[:, 4:])


def test_a_packed_row_selects_within_each_segment(model):
    """Two documents packed in one row attend (and select) only within their own segment: each
    document's logits are its own row's."""
    rng = np.random.default_rng(4)
    a, b = rng.integers(0, 48, size=6), rng.integers(0, 48, size=5)
    packed = jnp.asarray(np.concatenate([a, b])[None])
    segments = jnp.asarray([[1] * 6 + [2] * 5])
    positions = jnp.asarray([list(range(6)) + list(range(5))])
    out = np.asarray(_logits(model, packed, positions, segments))
    alone = np.asarray(_logits(model, jnp.asarray([np.concatenate([b, a])])))
    np.testing.assert_allclose(out[0, 6:], alone[0, :5], atol=1e-5)  # b first: its own keys
    ones = np.asarray(_logits(model, packed))  # unsegmented: b's queries see a's keys
    assert np.abs(ones[0, 6:] - alone[0, :5]).max() > 1e-3


def test_the_cache_holds_the_indexer_keys():
    config = _config()
    cache = init_cache(config, batch=2, max_len=16, dtype=jnp.float32)
    assert cache["index_key"].shape == (1, 2, 16, 8)
    plain = config.replace(mla=replace(SPARSE, index_topk=None, index_n_heads=None,
                                       index_head_dim=None))  # fmt: skip
    assert (
        kv_cache_bytes(config, batch=1, seq_len=16) - kv_cache_bytes(plain, batch=1, seq_len=16)
        == 1 * 16 * 8 * 2
    )  # layers x tokens x index_head_dim x bf16


@pytest.mark.parametrize("impl", ["pallas", "cudnn", "tokamax"])
def test_a_fused_kernel_is_refused_by_name(impl):
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        resolve_attention(_config().replace(attention_impl=impl))
    assert f"attention_impl {impl!r} cannot run DeepSeek Sparse Attention" in str(info.value)


def test_auto_runs_xla():
    kernel = resolve_attention(_config().replace(attention_impl="auto")).kernel("causal")
    assert kernel == "xla"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (dict(index_n_heads=None), "index_n_heads: DeepSeek Sparse Attention sets"),
        (dict(index_topk=0), "index_topk"),
        (dict(q_lora_rank=None), "reads DeepSeek's low-rank query"),
        (dict(index_head_dim=2), "narrower than the 4 dims its RoPE turns"),
    ],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        replace(SPARSE, **changes)


def test_the_main_loss_sends_the_indexer_no_gradient(model):
    """As transformers' ``torch.no_grad`` indexer: the selection is a constant of the step."""
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, 48, size=(1, 8)))

    def loss(m):
        return m(tokens).astype(jnp.float32).mean()

    grads = nnx.jit(nnx.grad(loss))(model)
    indexer = grads.stack.layers[0].attn.indexer
    assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree.leaves(indexer))
    assert float(jnp.abs(grads.stack.layers[0].attn.query.kernel[...]).max()) > 0


def _v32_config():
    """A tiny DeepSeek-V3.2 config (DeepSeek's MoE: its export needs experts)."""
    moe = tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=8, num_shared_experts=1,
                        router="sigmoid", router_norm_topk=True, router_scale=2.5)  # fmt: skip
    fields = {**SIZES, "mla": SPARSE, "moe": moe, "use_bias": False, "norm.eps": 1e-6}
    return tnn.make_config(tnn.LlamaConfig, fields)


def test_config_json_round_trips_and_refuses_what_it_cannot_say():
    from tjx.nn.families.deepseek_v32 import hf

    config = _v32_config()
    out = hf.deepseek_v32_config_to_hf(config)
    assert (out["model_type"], out["index_topk"], out["index_n_heads"]) == ("deepseek_v32", 3, 4)
    assert "rope_interleave" not in out
    assert hf.deepseek_v32_config_from_hf(out, attention_impl="xla") == config
    assert hf.is_deepseek_v32(config, None)
    with pytest.raises(ValueError, match="saves as model_type 'deepseek_v32'; got 'deepseek_v3'"):
        hf.is_deepseek_v32(config, "deepseek_v3")
    plain = config.replace(mla=replace(SPARSE, index_topk=None, index_n_heads=None,
                                       index_head_dim=None))  # fmt: skip
    with pytest.raises(ValueError, match="needs DeepSeek Sparse Attention"):
        hf.is_deepseek_v32(plain, "deepseek_v32")
    with pytest.raises(ValueError, match="mlp_layer_types"):
        hf.deepseek_v32_config_from_hf(out | {"mlp_layer_types": ["dense"]})
    with pytest.raises(ValueError, match="always interleaves"):
        hf.deepseek_v32_config_from_hf(out | {"rope_interleave": False})
    with pytest.raises(ValueError, match="layer_types"):
        hf.deepseek_v32_config_from_hf(out | {"layer_types": ["full_attention"]})
    names = hf.deepseek_v32_mapping(config).shapes
    assert names["model.layers.0.self_attn.indexer.wq_b.weight"] == (4 * 8, 12)
    assert names["model.layers.0.self_attn.indexer.weights_proj.weight"] == (4, 32)
