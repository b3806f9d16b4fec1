"""The fused backward passes of the norms and activations against float64 autodiff."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.nn.activations import fused_activation, gated_activation
from tjx.nn.norms import layer_norm, rms_norm


def _plain_layer_norm(x, scale, bias, eps):
    mean = jnp.mean(x, -1, keepdims=True)
    c = x - mean
    y = c * jax.lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + eps) * scale
    return y if bias is None else y + bias


def _plain_rms_norm(x, scale, eps):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * scale


def _plain(name, x):
    if name == "gelu":
        return 0.5 * x * (1 + jnp.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x * jax.nn.sigmoid(x)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _inputs(seed, shape):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * 2 + 0.5, rng.standard_normal(shape)


@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_gradients_match_float64_autodiff(bias):
    x, g = _inputs(1, (3, 5, 48))
    rng = np.random.default_rng(2)
    scale, b = rng.standard_normal(48), rng.standard_normal(48) if bias else None
    with jax.enable_x64(True):
        args = (jnp.asarray(x), jnp.asarray(scale), None if b is None else jnp.asarray(b))
        ref_y, ref_vjp = jax.vjp(lambda x, s, b: _plain_layer_norm(x, s, b, 1e-5), *args)
        ref = ref_vjp(jnp.asarray(g))
        # the closed form is exact: in float64 it agrees with autodiff to rounding
        _, vjp64 = jax.vjp(lambda x, s, b: layer_norm(x, s, b, 1e-5, jnp.float64), *args)
        for got, want in zip(vjp64(jnp.asarray(g)), ref, strict=True):
            if want is not None:
                assert _rel(got, want) < 1e-12
    f32 = [None if a is None else jnp.asarray(a, jnp.float32) for a in (x, scale, b)]
    y, vjp = jax.vjp(lambda x, s, b: layer_norm(x, s, b, 1e-5, jnp.float32), *f32)
    assert _rel(y, ref_y) < 1e-5
    grads = vjp(jnp.asarray(g, jnp.float32))
    for name, got, want in zip(("dx", "dscale", "dbias"), grads, ref, strict=True):
        if want is None:
            assert got is None
        else:
            assert got.dtype == jnp.float32 and _rel(got, want) < 1e-5, name


def test_rms_norm_gradients_match_float64_autodiff():
    x, g = _inputs(3, (4, 40))
    scale = np.random.default_rng(4).standard_normal(40)
    with jax.enable_x64(True):
        ref = jax.vjp(lambda x, s: _plain_rms_norm(x, s, 1e-6), jnp.asarray(x), jnp.asarray(scale))
        ref_y, ref_g = ref[0], ref[1](jnp.asarray(g))
    f32 = (jnp.asarray(x, jnp.float32), jnp.asarray(scale, jnp.float32))
    y, vjp = jax.vjp(lambda x, s: rms_norm(x, s, 1e-6, jnp.float32), *f32)
    assert _rel(y, ref_y) < 1e-5
    for got, want in zip(vjp(jnp.asarray(g, jnp.float32)), ref_g, strict=True):
        assert _rel(got, want) < 1e-5


def test_norm_residuals_are_the_input_and_two_numbers_per_row():
    """A bf16 input keeps only itself and [rows, 1] float32 statistics for the backward (autodiff
    of the formula keeps [rows, d] float32 arrays)."""
    x = jnp.ones((2, 8, 64), jnp.bfloat16)
    s = jnp.ones((64,), jnp.float32)
    for fn in (
        lambda x: layer_norm(x, s, s, 1e-5, jnp.bfloat16),
        lambda x: rms_norm(x, s, 1e-6, jnp.bfloat16),
    ):
        _, vjp = jax.vjp(fn, x)
        big = [a for a in jax.tree.leaves(vjp) if a.size >= x.size]
        assert [a.dtype for a in big] == [jnp.bfloat16], [a.shape for a in big]


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_activation_forward_is_jax_nn_and_gradient_matches_float64(name):
    x, g = _inputs(5, (6, 33))
    with jax.enable_x64(True):
        y64, vjp64 = jax.vjp(lambda x: _plain(name, x), jnp.asarray(x))
        ref = vjp64(jnp.asarray(g))[0]
    xf = jnp.asarray(x, jnp.float32)
    y, vjp = jax.vjp(lambda x: fused_activation(name, x), xf)
    plain = jax.nn.gelu(xf, approximate=True) if name == "gelu" else jax.nn.silu(xf)
    assert np.array_equal(np.asarray(y), np.asarray(plain))  # jax.nn's forward, bitwise
    assert _rel(y, y64) < 1e-5 and _rel(vjp(jnp.asarray(g, jnp.float32))[0], ref) < 1e-5
    xb = jnp.asarray(x, jnp.bfloat16)  # bf16 in, bf16 gradient out, computed in float32
    (db,) = jax.vjp(lambda x: fused_activation(name, x), xb)[1](jnp.asarray(g, jnp.bfloat16))
    assert db.dtype == jnp.bfloat16 and _rel(db, ref) < 2e-2


@pytest.mark.parametrize("name", ["gelu", "silu"])
def test_gated_activation_gradients_match_float64(name):
    gate, g = _inputs(7, (5, 24))
    up = np.random.default_rng(8).standard_normal((5, 24))
    with jax.enable_x64(True):
        f64 = lambda a, b: _plain(name, a) * b
        ref = jax.vjp(f64, jnp.asarray(gate), jnp.asarray(up))[1](jnp.asarray(g))
    args = (jnp.asarray(gate, jnp.float32), jnp.asarray(up, jnp.float32))
    got = jax.vjp(lambda a, b: gated_activation(name, a, b), *args)[1](jnp.asarray(g, jnp.float32))
    for a, b in zip(got, ref, strict=True):
        assert _rel(a, b) < 1e-5


@pytest.mark.parametrize("kind", ["rms", "layer"])
def test_a_plus_one_norm_through_the_fused_backward_matches_float64(kind):
    """Gemma's norms (``plus_one``) pass ``1 + w`` (float32) as the fused functions' scale: the
    output and the gradients of ``x`` and ``w`` are the float64 formula's with ``1 + w``."""
    from flax import nnx

    from tjx import nn as tnn

    x, g = _inputs(9, (3, 4, 32))
    w = np.random.default_rng(10).standard_normal(32) * 0.1
    with jax.enable_x64(True):

        def plain(x, w):
            if kind == "rms":
                return _plain_rms_norm(x, 1.0 + w, 1e-6)
            return _plain_layer_norm(x, 1.0 + w, None, 1e-6)

        ref_y, ref_vjp = jax.vjp(plain, jnp.asarray(x), jnp.asarray(w))
        ref = ref_vjp(jnp.asarray(g))
    precision = tnn.Precision(jnp.float32, jnp.float32)
    cls = tnn.RMSNorm if kind == "rms" else tnn.LayerNorm
    kw = {} if kind == "rms" else {"use_bias": False}
    norm = cls(32, rngs=nnx.Rngs(0), eps=1e-6, precision=precision, plus_one=True, **kw)
    assert not np.asarray(norm.scale[...]).any()  # starts at 0: acts as 1
    norm.scale.set_value(jnp.asarray(w, jnp.float32))
    graph, state = nnx.split(norm)
    y, vjp = jax.vjp(lambda x, s: nnx.merge(graph, s)(x), jnp.asarray(x, jnp.float32), state)
    dx, dstate = vjp(jnp.asarray(g, jnp.float32))
    dw = dstate["scale"][...]
    assert _rel(y, ref_y) < 1e-5 and _rel(dx, ref[0]) < 1e-5
    assert dw.dtype == jnp.float32 and _rel(dw, ref[1]) < 1e-5
