"""Float8 products (#54): the scaling policy against a NumPy reference (ml_dtypes' float8 casts,
float64 sums) on fresh random inputs."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest

from tjx.nn import fp8

E4M3_MAX, E5M2_MAX = 448.0, 57344.0
# Unit roundoff of round-to-nearest with 3 (e4m3) and 2 (e5m2) stored mantissa bits.
U_E4M3, U_E5M2 = 2.0**-4, 2.0**-3


def _np_quantize(x, dtype, scale):
    """The reference cast: divide, clip to the finite range, round (ml_dtypes), back to float64."""
    top = E4M3_MAX if dtype == fp8.E4M3 else E5M2_MAX
    q = np.clip(np.asarray(x, np.float64) / scale, -top, top)
    npdt = ml_dtypes.float8_e4m3fn if dtype == fp8.E4M3 else ml_dtypes.float8_e5m2
    return q.astype(np.float32).astype(npdt).astype(np.float64)


def _np_scale(x, dtype, axes=None):
    top = E4M3_MAX if dtype == fp8.E4M3 else E5M2_MAX
    a = np.max(np.abs(np.asarray(x, np.float64)), axis=axes, keepdims=axes is not None)
    return np.where(a > 0, a / top, 1.0)


def test_amax_and_current_scale_match_numpy_whole_tensor_and_per_row():
    x = np.random.default_rng(0).standard_normal((6, 8)) * 3.0
    x[2] = 0.0  # an all-zero row keeps the scale 1 (flax's compute_scale), not 0 / inf
    xj = jnp.asarray(x, jnp.float32)
    np.testing.assert_allclose(fp8.amax(xj), np.max(np.abs(x)), rtol=1e-6)
    np.testing.assert_allclose(fp8.amax(xj, (1,)), np.max(np.abs(x), 1, keepdims=True), rtol=1e-6)
    for dtype in (fp8.E4M3, fp8.E5M2):
        np.testing.assert_allclose(fp8.current_scale(xj, dtype), _np_scale(x, dtype), rtol=1e-6)
        rows = fp8.current_scale(xj, dtype, (1,))
        assert rows.shape == (6, 1)
        np.testing.assert_allclose(rows, _np_scale(x, dtype, 1), rtol=1e-6)
        assert float(rows[2, 0]) == 1.0


def test_quantize_matches_numpy_and_saturates_beyond_e4m3_max_instead_of_nan():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(64) * 100.0
    x[:4] = [500.0, -1e6, 449.0, -448.0]
    q = fp8.quantize(jnp.asarray(x, jnp.float32), fp8.E4M3, jnp.float32(1.0))
    assert q.dtype == jnp.float8_e4m3fn
    got = np.asarray(q.astype(jnp.float32), np.float64)
    assert np.all(np.isfinite(got))  # a plain cast would give NaN (e4m3fn has no inf)
    np.testing.assert_array_equal(got[:4], [448.0, -448.0, 448.0, -448.0])
    np.testing.assert_array_equal(got, _np_quantize(x, fp8.E4M3, 1.0))
    # e5m2 with a scale: the same reference, the gradient's format.
    s = 0.37
    g = fp8.quantize(jnp.asarray(x, jnp.float32), fp8.E5M2, jnp.float32(s)).astype(jnp.float32)
    np.testing.assert_array_equal(np.asarray(g, np.float64), _np_quantize(x, fp8.E5M2, s))


def test_delayed_scale_takes_the_history_maximum_and_the_history_keeps_the_last_amaxes():
    rng = np.random.default_rng(2)
    history = np.abs(rng.standard_normal(5)).astype(np.float32)
    x = rng.standard_normal((3, 4)).astype(np.float32) * 7.0
    new = np.asarray(fp8.update_amax_history(jnp.asarray(history), jnp.asarray(x)))
    np.testing.assert_allclose(new[0], np.max(np.abs(x)), rtol=1e-6)
    # flax's ring order: the newest at 0, the one before it last; the oldest (at 1) drops out.
    np.testing.assert_array_equal(new[1:], [*history[2:], history[0]])
    scale = fp8.delayed_scale(jnp.asarray(new), fp8.E4M3)
    np.testing.assert_allclose(scale, np.max(new) / E4M3_MAX, rtol=1e-6)
    # The first step's empty (zero) history keeps the previous scale.
    assert float(fp8.delayed_scale(jnp.zeros(5), fp8.E4M3, jnp.float32(0.25))) == 0.25


def _operands(seed, lead=(2, 5), d=16, out=(3, 4)):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, d))
    w = rng.standard_normal((d, *out)) * 0.2
    g = rng.standard_normal((*lead, *out))
    return x, w, g


@pytest.mark.parametrize("scaling", ["tensorwise", "rowwise"])
def test_fp8_product_stays_within_its_float64_error_bound(scaling):
    x, w, _ = _operands(3)
    x[0, 1] *= 1e-3  # a small row: rowwise scaling keeps its digits, tensorwise may not
    y = fp8.fp8_dot(
        jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), 1, fp8.Fp8Policy(scaling)
    )
    y = np.asarray(y, np.float64)
    exact = np.tensordot(x, w, 1)
    # Each operand's cast errs by at most u·|v| (normal range) or half e4m3's subnormal spacing
    # 2⁻¹⁰ times its scale; the product of two such errors, float32 accumulation (16 terms)
    # and the float32 output add at most 1e-5 relative beyond the first-order terms.
    sx = _np_scale(x, fp8.E4M3, -1 if scaling == "rowwise" else None)
    sw = _np_scale(w, fp8.E4M3, 0 if scaling == "rowwise" else None)
    ex = np.maximum(U_E4M3 * np.abs(x), sx * 2.0**-10)
    ew = np.maximum(U_E4M3 * np.abs(w), sw * 2.0**-10)
    bound = (
        np.tensordot(np.abs(x), ew, 1)
        + np.tensordot(ex, np.abs(w), 1)
        + np.tensordot(ex, ew, 1)
        + 1e-5 * np.tensordot(np.abs(x), np.abs(w), 1)
    )
    assert np.all(np.abs(y - exact) <= bound)
    # The bound is not vacuous: the float8 product is off the exact one (else it was not cast).
    assert np.max(np.abs(y - exact)) > 1e-4


@pytest.mark.parametrize("scaling", ["tensorwise", "rowwise"])
def test_fp8_gradients_are_the_float8_products_of_the_cast_operands(scaling):
    x, w, g = _operands(4)
    xj, wj, gj = (jnp.asarray(a, jnp.float32) for a in (x, w, g))
    policy = fp8.Fp8Policy(scaling)
    _, vjp = jax.vjp(lambda a, b: fp8.fp8_dot(a, b, 1, policy), xj, wj)
    dx, dw = (np.asarray(t, np.float64) for t in vjp(gj))
    rw = scaling == "rowwise"
    lead = (0, 1)
    # dx = g · wᵀ: g (e5m2) per row, w (e4m3) per input row when rowwise.
    sg, sw = _np_scale(g, fp8.E5M2, (2, 3) if rw else None), _np_scale(
        w, fp8.E4M3, (1, 2) if rw else None
    )
    gq, wq = _np_quantize(g, fp8.E5M2, sg) * sg, _np_quantize(w, fp8.E4M3, sw) * sw
    ref_dx = np.tensordot(gq, wq, ((2, 3), (1, 2)))
    # dw = xᵀ · g: x (e4m3) and g (e5m2) per column when rowwise.
    sx, sg = _np_scale(x, fp8.E4M3, lead if rw else None), _np_scale(
        g, fp8.E5M2, lead if rw else None
    )
    xq, gq = _np_quantize(x, fp8.E4M3, sx) * sx, _np_quantize(g, fp8.E5M2, sg) * sg
    ref_dw = np.tensordot(xq, gq, (lead, lead))
    # The same float8 values: only float32 accumulation and scale rounding differ.
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref_dx)))
    np.testing.assert_allclose(dw, ref_dw, rtol=1e-5, atol=1e-5 * np.max(np.abs(ref_dw)))
    # And near the exact gradients: e5m2's 2⁻³ roundoff is ~7 % rms per element, averaged down
    # by the sums; 0.1 relative norm error leaves room for 16- and 10-term sums.
    for got, exact in (
        (dx, np.tensordot(g, w, ((2, 3), (1, 2)))),
        (dw, np.tensordot(x, g, (lead, lead))),
    ):
        assert np.linalg.norm(got - exact) / np.linalg.norm(exact) < 0.1


def test_fp8_product_contracts_several_axes_and_keeps_the_compute_dtype():
    # The attention output projection's shape: [b, s, heads, head_dim] · [heads, head_dim, d].
    rng = np.random.default_rng(5)
    x = jnp.asarray(rng.standard_normal((2, 3, 4, 5)), jnp.bfloat16)
    w = jnp.asarray(rng.standard_normal((4, 5, 6)) * 0.2, jnp.bfloat16)
    for scaling in fp8.SCALINGS:
        policy = fp8.Fp8Policy(scaling)
        y, vjp = jax.vjp(lambda a, b, p=policy: fp8.fp8_dot(a, b, 2, p), x, w)
        assert y.dtype == jnp.bfloat16 and y.shape == (2, 3, 6)
        exact = np.tensordot(np.asarray(x, np.float64), np.asarray(w, np.float64), 2)
        assert np.linalg.norm(np.asarray(y, np.float64) - exact) / np.linalg.norm(exact) < 0.08
        dx, dw = vjp(jnp.ones_like(y))
        assert dx.dtype == dw.dtype == jnp.bfloat16 and dx.shape == x.shape and dw.shape == w.shape
    with pytest.raises(ValueError, match="scaling must be one of"):
        fp8.Fp8Policy("blockwise")
