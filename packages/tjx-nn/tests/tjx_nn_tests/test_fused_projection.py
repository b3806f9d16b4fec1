"""Fewer GPU launches in the backward (#51): the query/key/value projection's stacked backward and
the variadic column sums, each against float64 autodiff of the plain form on fresh inputs."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import nn as tnn
from tjx.nn.linear import column_sums, stacked_projection
from tjx.nn.norms import layer_norm


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _projection_inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 6))
    kernels = tuple(rng.standard_normal((6, 3, 4)) for _ in range(3))
    biases = tuple(rng.standard_normal((3, 4)) for _ in range(3))
    cotangents = tuple(rng.standard_normal((2, 5, 3, 4)) for _ in range(3))
    return x, kernels, biases, cotangents


def _plain_projection(x, kernels, biases):
    return tuple(jnp.tensordot(x, w, axes=1) + b for w, b in zip(kernels, biases, strict=True))


def test_stacked_projection_gradients_match_float64_autodiff_of_separate_projections():
    x, kernels, biases, cts = _projection_inputs(11)
    with jax.enable_x64(True):
        args = jax.tree.map(jnp.asarray, (x, kernels, biases))
        want_y, want_vjp = jax.vjp(_plain_projection, *args)
        want = want_vjp(jax.tree.map(jnp.asarray, cts))
        got_y, got_vjp = jax.vjp(stacked_projection, *args)
        got = got_vjp(jax.tree.map(jnp.asarray, cts))
        # the same sums in float64 (only their order differs): equal to rounding
        for a, b in zip(
            jax.tree.leaves((got_y, got)), jax.tree.leaves((want_y, want)), strict=True
        ):
            assert a.shape == b.shape and _rel(a, b) < 1e-12
    # in float32 each output and gradient is float64's to float32 rounding
    f32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (x, kernels, biases))
    y32, vjp32 = jax.vjp(stacked_projection, *f32)
    g32 = vjp32(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), cts))
    for a, b in zip(jax.tree.leaves((y32, g32)), jax.tree.leaves((want_y, want)), strict=True):
        assert a.dtype == jnp.float32 and _rel(a, b) < 1e-5


def test_stacked_projection_forward_is_each_projection_bitwise_in_bfloat16():
    x, kernels, biases, _ = _projection_inputs(12)
    args = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), (x, kernels, biases))
    for got, want in zip(stacked_projection(*args), _plain_projection(*args), strict=True):
        assert got.dtype == jnp.bfloat16 and np.array_equal(np.asarray(got), np.asarray(want))


def test_column_sums_are_each_arrays_sum_in_one_reduce():
    rng = np.random.default_rng(13)
    arrays = tuple(jnp.asarray(rng.standard_normal((4, 6, 5))) for _ in range(3))
    with jax.enable_x64(True):
        arrays64 = tuple(jnp.asarray(np.asarray(a, np.float64)) for a in arrays)
        for got, a in zip(column_sums(arrays64, (0, 1)), arrays64, strict=True):
            assert _rel(got, jnp.sum(a, (0, 1))) < 1e-12
    jaxpr = jax.make_jaxpr(lambda *a: column_sums(a, (0, 1)))(*arrays).jaxpr
    assert [e.primitive.name for e in jaxpr.eqns].count("reduce") == 1
    assert len(jaxpr.eqns[-1].outvars) == 3


def test_layer_norm_backward_sums_scale_and_bias_in_one_reduction():
    """The parameters' gradients of a norm with a bias come from one variadic reduce (XLA's GPU
    compiler: two kernels, against four for two sums)."""
    x = jnp.ones((2, 8, 16), jnp.float32)
    s = jnp.ones((16,), jnp.float32)
    bwd = jax.make_jaxpr(
        lambda x, s, b: jax.vjp(lambda *a: layer_norm(*a, 1e-5, jnp.float32), x, s, b)[1](x)
    )(x, s, s).jaxpr

    def row_sums(jaxpr):
        found = []
        for e in jaxpr.eqns:
            found += (
                [e]
                if e.primitive.name in ("reduce", "reduce_sum")
                and 0 in e.params.get("axes", e.params.get("dimensions", ()))
                else []
            )
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                found += row_sums(sub)
        return found

    sums = row_sums(bwd)
    assert len(sums) == 1 and len(sums[0].outvars) == 2


def _gpt2_attention():
    cfg = tnn.GPT2Config(vocab_size=8, max_seq_len=8, d_model=16, num_layers=1, num_heads=4)
    return tnn.Attention(cfg, rngs=nnx.Rngs(0), causal=True), cfg


def test_gpt2_attention_takes_the_stacked_projection_and_matches_separate_dense_calls(
    monkeypatch,
):
    attn, _ = _gpt2_attention()
    rng = np.random.default_rng(14)
    for p in (attn.query, attn.key, attn.value):  # non-zero biases: their gradients matter
        p.bias.set_value(jnp.asarray(rng.standard_normal(p.bias.shape), jnp.float32))
    x = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    graph, state = nnx.split(attn)

    def run(x, state):
        return nnx.merge(graph, state)(x)[0]

    assert attn._fused_qkv(x) is not None  # GPT-2's projections are alike: the stacked path
    y, vjp = jax.vjp(run, x, state)
    got = vjp(ct)
    monkeypatch.setattr(tnn.Attention, "_fused_qkv", lambda self, x: None)
    y_ref, vjp_ref = jax.vjp(run, x, state)
    want = vjp_ref(ct)
    assert np.array_equal(np.asarray(y), np.asarray(y_ref))  # the forward is the same arithmetic
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert _rel(a, b) < 1e-5  # float32 products summed in another order


def test_projections_that_differ_take_their_own_dense_calls():
    llama = tnn.LlamaConfig(vocab_size=8, max_seq_len=8, d_model=16, num_layers=1, num_heads=4,
                            num_kv_heads=2)  # fmt: skip
    gqa = tnn.Attention(llama, rngs=nnx.Rngs(0), causal=True)
    x = jnp.ones((1, 3, 16), jnp.float32)
    assert gqa._fused_qkv(x) is None  # grouped keys/values, no biases
    attn, _ = _gpt2_attention()
    tnn.add_lora(attn, tnn.LoraConfig(rank=2, targets=("q",)), rngs=nnx.Rngs(1))
    assert attn._fused_qkv(x) is None  # an adapter on the query only
