"""The MoE block against a per-token float64 reference (forward and gradients, dropless and
capacity paths), its statistics, the capacity's drop order and the balancing-bias rule."""

import typing
from dataclasses import replace

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.moe import MoE, dispatch, layer
from tjx_nn_tests._moe_reference import choices, moe_reference

F64 = tnn.Precision(jnp.float64, jnp.float64)
BASE = dict(
    vocab_size=16,
    max_seq_len=16,
    d_model=8,
    num_layers=1,
    num_heads=2,
    init=tnn.InitConfig(std=0.5),
)
EXPERTS = tnn.MoEConfig(
    num_experts=4, experts_per_token=2, expert_mlp_dim=6, router_aux_loss=0.3, router_z_loss=0.05
)
BASE = dict(BASE, moe=EXPERTS)


def _with(moe=None, cls=tnn.LlamaConfig, **fields):
    """A config class ``cls`` of ``fields`` whose ``moe`` section is `EXPERTS` with ``moe``."""
    return lambda **kw: cls(**{**kw, **fields, "moe": replace(EXPERTS, **(moe or {}))})


CASES = {
    "mixtral-dropless": tnn.LlamaConfig,
    "capacity-drops": _with(dict(capacity_factor=0.5)),
    "qwen-no-renorm-shared-gate": _with(
        dict(
            router_norm_topk=False,
            num_shared_experts=1,
            shared_expert_mlp_dim=5,
            shared_expert_gate=True,
        )
    ),
    "deepseek-sigmoid-bias": _with(
        dict(experts_per_token=3, router="sigmoid", num_shared_experts=2)
    ),
    "gpt2-biases-top1-capacity": _with(
        dict(experts_per_token=1, capacity_factor=1.0), cls=tnn.GPT2Config
    ),
    # gpt-oss: biased experts with the clamped SwiGLU, a learned router logit bias; weights
    # large enough (init 3: pre-activations of std ~8) that the clamp at 7 bites.
    "gpt-oss-clamped-logit-bias": _with(
        dict(router_logit_bias=True),
        init=tnn.InitConfig(std=3.0),
        use_bias=True,
        mlp=tnn.MLPConfig(activation="swiglu_clamped"),
    ),
}


def _flat(module):
    return {
        ".".join(map(str, k)): v.get_value()
        for k, v in nnx.to_flat_state(nnx.state(module, nnx.Param))
    }


@pytest.fixture
def x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


@pytest.mark.parametrize("name", list(CASES))
def test_the_block_equals_a_per_token_float64_reference_forward_and_gradients(x64, name):
    cfg = CASES[name](**BASE, precision=F64)
    moe = MoE(cfg, rngs=nnx.Rngs(3), out_std=0.5)
    if moe.router.bias is not None:  # a bias large enough to change some choices
        moe.router.bias.set_value(jnp.asarray(np.random.RandomState(1).randn(4) * 0.3))
    if moe.router.logit_bias is not None:  # likewise (it starts at zero)
        moe.router.logit_bias.set_value(jnp.asarray(np.random.RandomState(5).randn(4) * 3.0))
    if cfg.use_bias:  # the experts' biases start at zero: random, so that a misplaced one shows
        for part in (moe.experts.fc_in, moe.experts.fc_gate, moe.experts.fc_out):
            if part is not None and part.bias is not None:
                shape = part.bias.get_value().shape
                part.bias.set_value(jnp.asarray(np.random.RandomState(6).randn(*shape)))
    graphdef, params = nnx.split(moe, nnx.Param)
    x = jnp.asarray(np.random.RandomState(2).randn(2, 6, 8))
    probe = jnp.asarray(np.random.RandomState(4).randn(2, 6, 8))
    flat = _flat(moe)
    experts, keep = choices(flat, x, cfg)

    def loss(p, x):
        y, stats = nnx.merge(graphdef, p)(x)
        return jnp.sum(jnp.sin(y) * probe) + tnn.router_penalty(stats, cfg), (y, stats)

    def ref_loss(p, x):
        y, penalty = moe_reference(p, x, cfg, experts, keep)
        return jnp.sum(jnp.sin(y) * probe) + penalty, y

    # Both compiled: run op by op, the per-token reference's hundreds of small ops (and their
    # gradients) cost more in dispatch than one compile.
    grad = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))
    (value, (y, stats)), (g_params, g_x) = grad(params, x)
    ref_grad = jax.jit(jax.value_and_grad(ref_loss, (0, 1), has_aux=True))
    (ref_value, y_ref), (g_ref, g_x_ref) = ref_grad(flat, x)
    assert y.dtype == jnp.float64
    np.testing.assert_allclose(y, y_ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(value, ref_value, rtol=1e-10)
    np.testing.assert_allclose(g_x, g_x_ref, rtol=1e-9, atol=1e-12)
    grads = {".".join(map(str, k)): v.get_value() for k, v in nnx.to_flat_state(g_params)}
    assert set(grads) == set(g_ref)
    for key in grads:
        np.testing.assert_allclose(grads[key], g_ref[key], rtol=1e-9, atol=1e-12, err_msg=key)
    counts = np.bincount(experts.reshape(-1), minlength=4)
    np.testing.assert_array_equal(stats.expert_tokens, counts)
    assert int(stats.dropped_tokens) == int((~keep).sum())
    assert int(stats.tokens) == 12
    if name == "capacity-drops":
        assert int(stats.dropped_tokens) > 0  # the case really drops
    if cfg.mlp.activation == "swiglu_clamped":  # the clamp at 7 bites on both inputs
        for part in ("fc_gate", "fc_in"):
            pre = np.einsum("bsd,edf->bsef", x, flat[f"experts.{part}.kernel"])
            assert np.abs(pre + flat[f"experts.{part}.bias"]).max() > 7.0


def test_the_balancing_bias_gets_no_gradient(x64):
    cfg = _with(dict(router="sigmoid"))(**BASE, precision=F64)
    moe = MoE(cfg, rngs=nnx.Rngs(0), out_std=0.5)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 5, 8))
    # Jitted: one compile (an eager MoE block is hundreds of small ops, each compiled).
    grads = nnx.jit(nnx.grad(lambda m: jnp.sum(m(x)[0] ** 2) + tnn.router_penalty(m(x)[1], cfg)))(
        moe
    )
    assert float(jnp.abs(grads["router"]["bias"].get_value()).max()) == 0.0


def _fixed(t, k, e):
    """Routing of ``t`` tokens whose choices are given: ``e`` [t, k] (global ids)."""
    return jnp.asarray(e, jnp.int32).reshape(1, t, k), jnp.ones((1, t, k), jnp.float32) / k


def test_capacity_keeps_first_choices_in_token_order_then_second_choices():
    d, f, num = 4, 3, 3
    rng = np.random.RandomState(0)
    w = dispatch.ExpertWeights(
        jnp.asarray(rng.randn(num, d, f), jnp.float32),
        None,
        jnp.asarray(rng.randn(num, f, d), jnp.float32),
        None,
        None,
        None,
    )
    ffn = dispatch.FFN(jax.nn.relu, False, jnp.float32)
    x = jnp.asarray(rng.randn(1, 4, d), jnp.float32)
    # Every token's first choice is expert 0, second choices 1, 0, 2, 0; two slots each.
    experts, weights = _fixed(4, 2, [[0, 1], [0, 0 + 1], [0, 2], [0, 2]])
    experts = experts.at[0, 1, 1].set(2).at[0, 3, 1].set(1)
    y, dropped = dispatch.capacity(x, experts, weights, w, ffn, slots=2)
    # Kept: first choices of tokens 0, 1 (expert 0 full after them), every second choice
    # (expert 1: tokens 0, 3; expert 2: tokens 1, 2). Dropped: first choices of tokens 2, 3.
    assert int(dropped) == 2

    def mlp(xt, e):
        return jax.nn.relu(xt @ w.fc_in[e]) @ w.fc_out[e]

    want = [
        0.5 * (mlp(x[0, 0], 0) + mlp(x[0, 0], 1)),
        0.5 * (mlp(x[0, 1], 0) + mlp(x[0, 1], 2)),
        0.5 * mlp(x[0, 2], 2),
        0.5 * mlp(x[0, 3], 1),
    ]
    np.testing.assert_allclose(y[0], jnp.stack(want), rtol=1e-5, atol=1e-6)
    y_free, none = dispatch.capacity(x, experts, weights, w, ffn, slots=4)
    y_dropless = dispatch.dropless(x[0], experts[0], weights[0], w, ffn)
    assert int(none) == 0
    np.testing.assert_allclose(y_free[0], y_dropless, rtol=1e-5, atol=1e-6)


def test_statistics_count_every_assignment_and_a_balanced_router_scores_one():
    cfg = tnn.LlamaConfig(**{**BASE, "init": tnn.InitConfig(std=0.02)})
    moe = MoE(cfg, rngs=nnx.Rngs(0), out_std=0.02)
    moe.router.kernel.set_value(jnp.zeros_like(moe.router.kernel[...]))  # uniform probs
    x = jnp.asarray(np.random.RandomState(0).randn(3, 8, 8), jnp.float32)
    _, stats = moe(x)
    assert int(stats.expert_tokens.sum()) == 3 * 8 * 2
    # Uniform probabilities: P_e = 1/E whatever the choices, so E·Σ f_e·P_e = Σ f_e = 1.
    np.testing.assert_allclose(stats.balance_loss_sum / stats.tokens, 1.0, rtol=1e-6)
    np.testing.assert_allclose(stats.z_loss_sum / stats.tokens, np.log(4) ** 2, rtol=1e-6)


def test_update_router_bias_moves_overloaded_experts_down_by_the_rate():
    moe = dict(router="sigmoid", router_bias_rate=0.01, first_dense=1)
    cfg = _with(moe)(**{**BASE, "num_layers": 3})
    for scan in (False, True):
        model = tnn.build_model(cfg.replace(scan_layers=scan), rngs=nnx.Rngs(0))
        load = jnp.asarray([[9, 1, 3, 3], [2, 2, 2, 10]])
        model.update_router_bias(load)
        flat = tnn.get_flat_params(model)
        bias = [flat[f"stack.layers.{i}.moe.router.bias"] for i in (1, 2)]
        np.testing.assert_allclose(bias[0], [-0.01, 0.01, 0.01, 0.01])
        np.testing.assert_allclose(bias[1], [0.01, 0.01, 0.01, -0.01])
    softmax = tnn.build_model(tnn.LlamaConfig(**BASE), rngs=nnx.Rngs(0))
    before = tnn.get_flat_params(softmax)
    softmax.update_router_bias(jnp.ones((1, 4), jnp.int32))  # no bias: nothing moves
    after = tnn.get_flat_params(softmax)
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_the_layer_imports_the_model_config_it_is_built_from():
    # A plain import (no type-checking-only one, no circle): its annotations resolve at run time.
    assert layer.TransformerConfig is tnn.TransformerConfig
    for fn in (MoE.__init__, layer.Experts.__init__, layer.router_penalty):
        assert typing.get_type_hints(fn)["config"] is tnn.TransformerConfig
