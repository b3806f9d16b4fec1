"""LayerNorm and RMSNorm with float32 statistics whatever the compute dtype, and a fused backward.

Both are ``jax.custom_vjp`` functions (`layer_norm`, `rms_norm`) whose forward is the plain
formula and whose backward is the closed form

    dx = rstd · (dŷ − mean(dŷ) − x̂ · mean(dŷ · x̂)),   dŷ = dy · scale,   x̂ = (x − mean) · rstd

(RMSNorm: without the centring terms), with ``dscale = Σ dy · x̂`` and ``dbias = Σ dy`` over the
tokens. The residuals are the input (compute dtype) and two float32 numbers per row — autodiff
of the formula saves the centred float32 input and more ([tokens, d] float32 each), and its
backward is a chain of separate reductions. Measured on the deviceless H100 compile of
gpt2_small's step (BENCHMARKS.md).

``plus_one`` (Gemma's norms) multiplies by ``1 + scale`` instead of ``scale``, the scale starting
at 0; the sum is taken in float32, as transformers' Gemma does (``1 + w`` in bfloat16 would lose
the small weights' low bits). The modules pass ``1 + w`` as the fused functions' scale, so the
gradient of the add carries ``dscale`` to ``w`` unchanged.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.linear import column_sums
from tjx.nn.params import make_param, ones, zeros
from tjx.nn.precision import Precision

Array = jax.Array


def stats_dtype(x: Array) -> jnp.dtype:
    """float32, or wider when the input already is (float64 in x64 tests)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _layer_norm_stats(x: Array, eps: float) -> tuple[Array, Array, Array]:
    x32 = x.astype(stats_dtype(x))
    mean = jnp.mean(x32, axis=-1, keepdims=True)
    centred = x32 - mean
    # Variance from the centred values (not E[x²]−E[x]²) stays exact for near-constant input.
    var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
    return centred, mean, jax.lax.rsqrt(var + eps)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def layer_norm(
    x: Array, scale: Array, bias: Array | None, eps: float, out_dtype: jnp.dtype
) -> Array:
    """LayerNorm of ``x`` [..., d] with float32 statistics, in ``out_dtype`` (fused backward).

    Parameters
    ----------
    x : Array
        Input ``[..., d]``.
    scale, bias : Array
        ``[d]`` (``bias`` may be None).
    eps : float
        Added to the variance.
    out_dtype : dtype
        Output dtype (the compute dtype).

    Returns
    -------
    Array
        ``(x − mean) · rsqrt(var + eps) · scale + bias`` in ``out_dtype``.
    """
    return _layer_norm_fwd(x, scale, bias, eps, out_dtype)[0]


def _layer_norm_fwd(
    x: Array, scale: Array, bias: Array | None, eps: float, out_dtype: jnp.dtype
) -> tuple[Array, tuple[Array | None, ...]]:
    centred, mean, rstd = _layer_norm_stats(x, eps)
    y = centred * rstd * scale.astype(centred.dtype)
    if bias is not None:
        y = y + bias.astype(centred.dtype)
    return y.astype(out_dtype), (x, mean, rstd, scale, bias)


def _layer_norm_bwd(
    eps: float, out_dtype: jnp.dtype, res: tuple[Array | None, ...], dy: Array
) -> tuple[Array, Array, Array | None]:
    del eps, out_dtype
    x, mean, rstd, scale, bias = res
    assert x is not None and mean is not None and rstd is not None and scale is not None
    xhat = (x.astype(mean.dtype) - mean) * rstd
    dy32 = dy.astype(mean.dtype)
    dyg = dy32 * scale.astype(mean.dtype)
    dx = rstd * (
        dyg
        - jnp.mean(dyg, axis=-1, keepdims=True)
        - xhat * jnp.mean(dyg * xhat, axis=-1, keepdims=True)
    )
    rows = tuple(range(x.ndim - 1))
    if bias is None:
        dscale = jnp.sum(dy32 * xhat, axis=rows).astype(scale.dtype)
        return dx.astype(x.dtype), dscale, None
    # Both parameter sums in one (variadic) reduction: XLA makes each column sum over many rows
    # two kernels (it splits it to avoid atomics) and does not merge sibling ones, so separate
    # sums cost four launches a norm, this two.
    dscale, dbias = column_sums((dy32 * xhat, dy32), rows)
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def rms_norm(x: Array, scale: Array, eps: float, out_dtype: jnp.dtype) -> Array:
    """RMSNorm of ``x`` [..., d] with a float32 mean square, in ``out_dtype`` (fused backward).

    Returns ``x · rsqrt(mean(x²) + eps) · scale`` in ``out_dtype``.
    """
    return _rms_norm_fwd(x, scale, eps, out_dtype)[0]


def _rms_norm_fwd(
    x: Array, scale: Array, eps: float, out_dtype: jnp.dtype
) -> tuple[Array, tuple[Array, ...]]:
    x32 = x.astype(stats_dtype(x))
    ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    rstd = jax.lax.rsqrt(ms + eps)
    y = x32 * rstd * scale.astype(x32.dtype)
    return y.astype(out_dtype), (x, rstd, scale)


def _rms_norm_bwd(
    eps: float, out_dtype: jnp.dtype, res: tuple[Array, ...], dy: Array
) -> tuple[Array, Array]:
    del eps, out_dtype
    x, rstd, scale = res
    xhat = x.astype(rstd.dtype) * rstd
    dy32 = dy.astype(rstd.dtype)
    dyg = dy32 * scale.astype(rstd.dtype)
    dx = rstd * (dyg - xhat * jnp.mean(dyg * xhat, axis=-1, keepdims=True))
    dscale = jnp.sum(dy32 * xhat, axis=tuple(range(x.ndim - 1))).astype(scale.dtype)
    return dx.astype(x.dtype), dscale


rms_norm.defvjp(_rms_norm_fwd, _rms_norm_bwd)


class LayerNorm(nnx.Module):
    """LayerNorm over the last axis; mean/variance in float32, output in the compute dtype."""

    def __init__(
        self,
        dim: int,
        *,
        rngs: nnx.Rngs,
        eps: float = 1e-5,
        use_bias: bool = True,
        precision: Precision | None = None,
        plus_one: bool = False,
    ) -> None:
        self.precision = precision or Precision()
        self.eps = eps
        self.plus_one = plus_one
        dtype = self.precision.param_dtype
        self.scale = make_param(rngs, zeros() if plus_one else ones(), (dim,), ("norm",), dtype)
        self.bias = make_param(rngs, zeros(), (dim,), ("norm",), dtype) if use_bias else None

    def __call__(self, x: Array) -> Array:
        """Normalise ``x`` [..., dim]."""
        bias = None if self.bias is None else self.bias[...]
        scale = _gain(self.scale[...], x, self.plus_one)
        return layer_norm(x, scale, bias, self.eps, self.precision.compute_dtype)


class RMSNorm(nnx.Module):
    """RMSNorm (no centring, no bias); the mean square in float32."""

    def __init__(
        self,
        dim: int,
        *,
        rngs: nnx.Rngs,
        eps: float = 1e-6,
        precision: Precision | None = None,
        plus_one: bool = False,
    ) -> None:
        self.precision = precision or Precision()
        self.eps = eps
        self.plus_one = plus_one
        init = zeros() if plus_one else ones()
        self.scale = make_param(rngs, init, (dim,), ("norm",), self.precision.param_dtype)

    def __call__(self, x: Array) -> Array:
        """Normalise ``x`` [..., dim]."""
        scale = _gain(self.scale[...], x, self.plus_one)
        return rms_norm(x, scale, self.eps, self.precision.compute_dtype)


def _gain(scale: Array, x: Array, plus_one: bool) -> Array:
    """The norm's multiplier: ``scale`` as stored, or ``1 + scale`` summed in the statistics'
    dtype (float32; float64 in x64 tests), whose gradient reaches ``scale`` unchanged."""
    return 1.0 + scale.astype(stats_dtype(x)) if plus_one else scale


def make_norm(
    kind: str,
    dim: int,
    *,
    rngs: nnx.Rngs,
    eps: float,
    use_bias: bool = True,
    precision: Precision | None = None,
    plus_one: bool = False,
) -> LayerNorm | RMSNorm:
    """``LayerNorm`` for ``kind="layernorm"``, ``RMSNorm`` for ``"rmsnorm"`` (``plus_one``:
    Gemma's ``1 + scale``)."""
    if kind == "layernorm":
        return LayerNorm(
            dim, rngs=rngs, eps=eps, use_bias=use_bias, precision=precision, plus_one=plus_one
        )
    if kind == "rmsnorm":
        return RMSNorm(dim, rngs=rngs, eps=eps, precision=precision, plus_one=plus_one)
    raise ValueError(f"norm must be one of ('layernorm', 'rmsnorm'); got {kind!r}")
