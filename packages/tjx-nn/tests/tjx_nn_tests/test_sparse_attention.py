"""DeepSeek Sparse Attention (DeepSeek-V3.2's lightning indexer, ``mla.index_*``): the top-k
selection against a NumPy reference on fresh random scores, the cached decode against the full
forward (greedy tokens), a packed batch's segments kept apart, the fused kernels refused by name,
and the settings' refusals (tests-integration's test_hf_families.py compares with transformers)."""

import re
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.families.deepseek_v32.indexer import Indexer, Selection, index_loss
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
        (dict(index_loss="kl"), "index_loss: 'kl' is not one of sparse, dense"),
        (dict(index_loss_weight=-1.0), "index_loss_weight: -1.0 must be >= 0"),
        (dict(index_loss_weight=float("nan")), "index_loss_weight: nan must be >= 0"),
    ],
)
def test_bad_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        replace(SPARSE, **changes)
    assert re.search(message, str(info.value)), info.value


@pytest.mark.parametrize(
    ("sparse", "lacks"),
    [
        (False, "no sparse-attention indexer (mla.index_* unset)"),
        (True, "no MoE layers (moe.num_experts=0), whose statistics carry the indexer's loss"),
    ],
)
def test_the_index_loss_on_a_model_that_cannot_train_it_is_refused(sparse, lacks):
    """Refused as the model is built (a checkpoint's start sets the weight on a config whose
    architecture comes later): without an indexer, or without MoE statistics to carry it."""
    config = _config(index_loss_weight=1.0)
    if not sparse:
        config = config.replace(mla=replace(config.mla, index_topk=None, index_n_heads=None,
                                            index_head_dim=None))  # fmt: skip
    with pytest.raises(ValueError, match=r"^[^\n]*$") as info:
        tnn.Llama(config, rngs=nnx.Rngs(0))
    assert str(info.value) == (
        f"LlamaConfig.mla.index_loss_weight: 1.0 trains a sparse attention's indexer and this "
        f"model has {lacks}"
        + (" to the training loss" if sparse else "")
        + "; set mla.index_loss_weight to 0"
    )


def _reference_index_loss(q, k, scores, visible, topk, scale, form):
    """float64 NumPy: Σ_t KL(p_t ‖ softmax(I_t)) over the queries that see a key, and their
    count; p_t the heads' softmax of ``scale · q·k`` summed over heads and L1-normalised, both
    over the ``topk`` visible keys of highest score (sparse) or every visible key (dense)."""
    q, k, scores = (np.asarray(a, np.float64) for a in (q, k, scores))
    total, queries = 0.0, 0
    for b in range(q.shape[0]):
        for t in range(q.shape[1]):
            seen = np.flatnonzero(visible[b, t])
            if not seen.size:
                continue
            keys = seen[np.argsort(-scores[b, t, seen])][:topk] if form == "sparse" else seen
            logits = np.einsum("hd,thd->ht", q[b, t], k[b, keys]) * scale
            heads = np.exp(logits - logits.max(-1, keepdims=True))
            heads /= heads.sum(-1, keepdims=True)
            p = heads.sum(0) / heads.sum()
            i = np.exp(scores[b, t, keys] - scores[b, t, keys].max())
            total += float(np.sum(p * np.log(p / (i / i.sum()))))
            queries += 1
    return total, queries


@pytest.mark.parametrize("form", ["sparse", "dense"])
def test_the_index_loss_is_the_reports_kl(form):
    """The indexer loss against float64 NumPy on fresh random queries, keys and scores (two
    documents packed in one row, padding in the other), within 1e-5 relative: float32."""
    seed = np.random.SeedSequence().entropy
    rng = np.random.default_rng(seed)
    b, s, h, width, scale = 2, 7, 3, 5, 0.7
    q, k = (rng.normal(size=(b, s, h, width)).astype(np.float32) for _ in range(2))
    scores = rng.normal(size=(b, s, s)).astype(np.float32)
    seg = np.asarray([[1, 1, 1, 2, 2, 2, 2], [1, 1, 1, 1, 1, 0, 0]])
    visible = np.tril(np.ones((s, s), bool))[None] & (seg[:, :, None] == seg[:, None, :])
    visible &= seg[:, None, :] != 0
    indexer = Indexer(_config(), rngs=nnx.Rngs(0))  # index_topk=3
    bias = indexer.bias(jnp.asarray(scores), jnp.asarray(visible))
    keys = jnp.zeros((b, s, 8))
    selection = Selection(bias, keys, jnp.asarray(scores), jnp.asarray(visible))
    got, count = index_loss(selection, jnp.asarray(q), jnp.asarray(k), scale, form)
    want, queries = _reference_index_loss(q, k, scores, visible, 3, scale, form)
    assert int(count) == queries == 12, seed  # the two padding queries see no key
    np.testing.assert_allclose(float(got), want, rtol=1e-5, err_msg=f"seed {seed}")
    assert want > 0, seed


def _loss_config(weight, **changes):
    """A tiny DeepSeek-V3.2 with a dense first layer, scanned (a dense segment, then MoE)."""
    moe = tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=8, first_dense=1)
    fields = {**SIZES, "num_layers": 3, "scan_layers": True, "moe": moe, **changes}
    return tnn.make_config(
        tnn.LlamaConfig, {**fields, "mla": replace(SPARSE, index_loss_weight=weight)}
    )


def _grads(weight, batch):
    """The objective's gradient and, from the same call, that of ``weight`` × the indexer loss
    alone (each layer's mean over its queries, summed): one compile."""
    model = tnn.Llama(_loss_config(weight), rngs=nnx.Rngs(3))
    graph, params = nnx.split(model, nnx.Param)

    def both(p, batch):  # the random batch an argument: the same program every run, cached
        def total(p):
            out = tnn.objective_loss(nnx.merge(graph, p), batch)
            return out.loss, out.moe

        def kl(p):
            stats = tnn.objective_loss(nnx.merge(graph, p), batch).moe
            if stats.index_loss_sum is None:  # weight 0: no loss reported
                return jnp.zeros(()), stats
            return weight * jnp.sum(stats.index_loss_sum / stats.index_queries), stats

        (g, stats), g_kl = jax.grad(total, has_aux=True)(p), jax.grad(kl, has_aux=True)(p)[0]
        return g, g_kl, stats

    g, g_kl, stats = jax.jit(both)(params, batch)
    return _flat(g), _flat(g_kl), stats


def _flat(tree):
    return {"/".join(map(str, k)): np.asarray(v[...]) for k, v in nnx.to_flat_state(tree)}


def test_the_index_loss_trains_the_indexer_alone():
    """Weight 0: no indexer gradient, the main model's as before; weight 0.5: the main model's
    gradients bit for bit the same (the indexer's inputs detached, ``p`` a constant) and the
    indexer's those of 0.5 × its KL, in every layer (the dense first one too)."""
    rng = np.random.default_rng()
    batch = {
        "inputs": jnp.asarray(rng.integers(0, 48, size=(2, 8))),
        "targets": jnp.asarray(rng.integers(0, 48, size=(2, 8))),
        "segment_ids": jnp.asarray([[1] * 5 + [2] * 3, [1] * 6 + [0] * 2]),
    }
    off, _, stats_off = _grads(0.0, batch)
    on, kl, stats = _grads(0.5, batch)
    assert stats_off.index_loss_sum is None and stats.index_loss_sum.shape == (3,)
    assert stats.expert_tokens.shape == (2, 4)  # the MoE rows: layers 1 and 2
    np.testing.assert_array_equal(np.asarray(stats.index_queries), [14.0] * 3)  # no padding
    indexer = [name for name in on if "/indexer/" in name]
    assert len(indexer) == 10  # scanned: each weight stacked in the dense and the MoE segment
    for name in on:
        if name in indexer:
            assert not np.any(off[name]), name
            np.testing.assert_allclose(on[name], kl[name], rtol=1e-6, atol=1e-12, err_msg=name)
            layers = on[name].reshape(on[name].shape[0], -1)  # every layer's is trained
            assert np.all(np.abs(layers).max(-1) > 0), name
        else:
            np.testing.assert_array_equal(on[name], off[name], err_msg=name)
            assert not np.any(kl[name]), name


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
