"""MoE decoders: the config's checks and layer patterns, scanned = unrolled, the objective's
router losses, KV-cache generation, active-parameter FLOPs."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.layer_runs import Segment, segments
from tjx_nn_tests._helpers import build

MOE = dict(
    vocab_size=64,
    max_seq_len=16,
    d_model=16,
    num_layers=4,
    num_heads=2,
    num_kv_heads=1,
    mlp=tnn.MLPConfig(dim=24),
    moe=tnn.MoEConfig(num_experts=4, experts_per_token=2, expert_mlp_dim=12),
)
#: The `MoEConfig` fields (a change to one is a change to `MOE`'s ``moe`` section).
MOE_FIELDS = {f.name for f in dataclasses.fields(tnn.MoEConfig)}


def _config(**changes):
    """`MOE` with ``changes``: to its ``moe`` section where they name its fields."""
    moe = {k: changes.pop(k) for k in list(changes) if k in MOE_FIELDS}
    return tnn.LlamaConfig(**{**MOE, **changes, "moe": dataclasses.replace(MOE["moe"], **moe)})


@pytest.mark.parametrize(
    "kwargs, field, words",
    [
        (dict(experts_per_token=5), "experts_per_token", "more than the 4 experts"),
        (dict(capacity_factor=0.0), "capacity_factor", "must be > 0"),
        (dict(capacity_factor=-1.5), "capacity_factor", "must be > 0"),
        (dict(num_experts=-1), "num_experts", "non-negative int"),
        (dict(router="hash"), "router", "one of ('softmax', 'sigmoid', 'sigmoid_plain')"),
        (dict(router_dtype="int8"), "router_dtype", "one of"),
        (dict(router_aux_loss=-0.1), "router_aux_loss", ">= 0"),
        (dict(first_dense=4), "first_dense", "none of the 4 layers is MoE"),
        (dict(layer_step=0), "layer_step", "positive int"),
        (dict(shared_expert_gate=True), "shared_expert_gate", "only shared experts"),
        (dict(router_bias_rate=0.1), "router_bias_rate", "has none"),
        (
            dict(num_experts=0, expert_mlp_dim=None, capacity_factor=1.0),
            "capacity_factor",
            "only MoE models",
        ),
        (
            dict(num_experts=0, expert_mlp_dim=None, experts_per_token=1),
            "experts_per_token",
            "only MoE models",
        ),
    ],
)
def test_bad_moe_settings_raise_naming_the_field(kwargs, field, words):
    """The section's own checks name ``MoEConfig.<field>``; the one that needs the stack's depth
    the section's path in the model config."""
    where = "LlamaConfig.moe" if field == "first_dense" else "MoEConfig"
    with pytest.raises(ValueError, match="^" + re.escape(f"{where}.{field}")) as err:
        _config(**kwargs)
    assert words in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("config_class", [tnn.BertConfig, tnn.ViTConfig, tnn.EncoderDecoderConfig])
def test_families_without_moe_layers_refuse_moe_settings(config_class):
    base = dict(d_model=16, num_layers=1, num_heads=2)
    if config_class is tnn.ViTConfig:
        base |= dict(image_size=8, patch_size=4)
    with pytest.raises(ValueError, match=r"\.moe: only decoders \(gpt2, llama\)"):
        config_class(**base, moe=tnn.MoEConfig(num_experts=4))


@pytest.mark.parametrize(
    "extra, kinds",
    [
        ({}, "MMMM"),
        (dict(first_dense=1), "DMMM"),
        (dict(layer_step=2), "DMDM"),
        (dict(layer_step=2, first_dense=2), "DDDM"),
        (dict(num_experts=0, experts_per_token=2, expert_mlp_dim=None), "DDDD"),
    ],
)
def test_which_layers_are_moe(extra, kinds):
    cfg = _config(**extra)
    assert "".join("M" if k else "D" for k in tnn.moe_layers(cfg)) == kinds


def test_segments_cut_a_stack_into_repeating_units():
    d, m = False, True
    assert segments((d, d, d), 1) == (Segment(0, (d,), 3),)
    assert segments((d, m, m, m), 1) == (Segment(0, (d,), 1), Segment(1, (m,), 3))
    assert segments((d, m, d, m, d), 2) == (Segment(0, (d, m), 2), Segment(4, (d,), 1))
    assert segments((d, d, d, m, d, m), 2) == (
        Segment(0, (d,), 2),
        Segment(2, (d, m), 2),
    )


@pytest.mark.parametrize(
    "extra",
    [
        # segments: (dense, MoE) x 2 then a dense layer; DeepSeek's balancing-bias router
        dict(layer_step=2, num_layers=5, router="sigmoid"),
        dict(num_shared_experts=1, capacity_factor=1.0),
    ],
    ids=["every-other-layer-sigmoid", "all-moe-shared-capacity"],
)
def test_scanned_and_unrolled_moe_decoders_agree_with_canonical_names(extra):
    cfg = _config(**extra)
    unrolled, scanned = build(cfg), build(cfg.replace(scan_layers=True), seed=5)
    flat = tnn.get_flat_params(unrolled)
    assert set(flat) == set(tnn.get_flat_params(scanned))
    assert "stack.layers.1.moe.experts.fc_in.kernel" in flat
    tnn.set_flat_params(scanned, flat)
    toks = jax.random.randint(jax.random.key(0), (2, 10), 0, 64)
    batch = {"inputs": toks, "targets": jnp.roll(toks, -1, axis=1)}

    def loss(model):
        out = tnn.objective_loss(model, batch)
        return out.loss, out

    # One compile per model (an eager MoE step is hundreds of small ops): the objective's output
    # and the gradients from one program (its forward is the loss's; compiled apart it was twice).
    both = [nnx.jit(nnx.value_and_grad(loss, has_aux=True))(m) for m in (unrolled, scanned)]
    outs = [out for (_, out), _ in both]
    np.testing.assert_allclose(outs[0].loss, outs[1].loss, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(outs[0].moe), jax.tree.leaves(outs[1].moe), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)  # the fields it has (no indexer loss: None)
    g = [tnn.get_flat_params(m) for m in (unrolled, scanned)]
    grads = [grad for _, grad in both]
    for model, grad, into in zip((unrolled, scanned), grads, g, strict=True):
        nnx.update(model, grad)
        into.update(tnn.get_flat_params(model))
    for key in g[0]:
        np.testing.assert_allclose(g[0][key], g[1][key], rtol=2e-4, atol=1e-6, err_msg=key)


def test_the_objective_adds_the_router_losses_and_returns_the_statistics():
    cfg = _config(router_aux_loss=0.5, router_z_loss=0.1)
    model = build(cfg)
    toks = jax.random.randint(jax.random.key(1), (2, 8), 0, 64)
    batch = {"inputs": toks, "targets": jnp.roll(toks, -1, axis=1).at[:, -1].set(-100)}
    # One compile of both (an eager MoE forward is hundreds of small ops, each compiled).
    out, (_, stats) = nnx.jit(lambda m: (tnn.objective_loss(m, batch), m.forward(toks)))(model)
    assert out.moe.expert_tokens.shape == (4, 4) and int(out.moe.expert_tokens.sum()) == 4 * 32
    ce = out.sum_loss / out.num_tokens
    penalty = float(jnp.sum((0.5 * stats.balance_loss_sum + 0.1 * stats.z_loss_sum) / 16))
    np.testing.assert_allclose(out.loss, ce + penalty, rtol=1e-5)
    dense_cfg = tnn.LlamaConfig(**{**MOE, "moe": tnn.MoEConfig()})
    dense = tnn.objective_loss(build(dense_cfg), batch)
    assert dense.moe is None
    with pytest.raises(ValueError, match="MoE layers are not pipelined"):
        tnn.decoder_stages(build(cfg.replace(scan_layers=True)))


@pytest.mark.parametrize("extra", [dict(first_dense=1), dict(capacity_factor=8.0)])
def test_kv_cache_generation_with_moe_layers_equals_the_full_model(extra):
    cfg = _config(**extra, scan_layers=True)
    model = build(cfg, seed=2)
    prompts = np.random.RandomState(0).randint(0, 64, (2, 4)).astype(np.int32)
    out = np.asarray(tnn.generate(model, prompts, max_new_tokens=5))
    # The whole model re-run on the growing sequence, in a buffer of the final width: causal
    # attention never reads the zeros after it, and capacity 8 drops no token (each expert has a
    # slot for every token), so one jitted program serves every length (called eagerly, each
    # length compiled the model's ops again).
    forward = nnx.jit(lambda m, ids: m(ids))
    seq = prompts
    for _ in range(5):
        buffer = np.zeros((2, 4 + 5), np.int32)
        buffer[:, : seq.shape[1]] = seq
        logits = forward(model, jnp.asarray(buffer))[:, seq.shape[1] - 1]
        seq = np.concatenate([seq, np.asarray(jnp.argmax(logits, -1))[:, None]], 1)
    np.testing.assert_array_equal(out, seq)


def test_flops_count_active_parameters_only():
    cfg = _config(first_dense=1, num_shared_experts=1, shared_expert_gate=True)
    abstract = nnx.eval_shape(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0)))
    active = 0
    for path, var in nnx.to_flat_state(nnx.state(abstract, nnx.Param)):
        names = [str(p) for p in path]
        if names[-1] not in ("kernel", "embedding") or names[0] == "embed":
            continue  # untied: the token table is a lookup, the head a kernel
        size = int(np.prod(var.get_value().shape))
        active += size * 2 // 4 if "experts" in names else size  # k=2 of E=4 experts
    assert tnn.matmul_param_count(cfg) == active
    total = tnn.config_param_count(cfg)
    assert total > active  # the idle experts are parameters, not FLOPs
    s = 8
    # PaLM's count (attention whole), and the default with causal attention at half.
    want = (6 * active * s + 12 * cfg.num_layers * 2 * 8 * s * s) / s
    assert tnn.flops_per_token(cfg, s, causal_half=False) == want
    assert tnn.flops_per_token(cfg, s) == (6 * active * s + 6 * cfg.num_layers * 2 * 8 * s * s) / s
