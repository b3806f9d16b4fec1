"""LayerNorm and RMSNorm with float32 statistics whatever the compute dtype.

``plus_one`` (Gemma's norms) multiplies by ``1 + scale`` instead of ``scale``, the scale starting
at 0; the sum is taken in float32, as transformers' Gemma does (``1 + w`` in bfloat16 would lose
the small weights' low bits).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.params import make_param, ones, zeros
from tjx.nn.precision import Precision

Array = jax.Array


def stats_dtype(x: Array) -> jnp.dtype:
    """float32, or wider when the input already is (float64 in x64 tests)."""
    return jnp.promote_types(x.dtype, jnp.float32)


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
        x32 = x.astype(stats_dtype(x))
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        centred = x32 - mean
        # Variance from the centred values (not E[x²]−E[x]²) stays exact for near-constant input.
        var = jnp.mean(jnp.square(centred), axis=-1, keepdims=True)
        y = centred * jax.lax.rsqrt(var + self.eps) * _gain(self.scale[...], x32, self.plus_one)
        if self.bias is not None:
            y = y + self.bias[...].astype(x32.dtype)
        return y.astype(self.precision.compute_dtype)


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
        x32 = x.astype(stats_dtype(x))
        ms = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
        y = x32 * jax.lax.rsqrt(ms + self.eps) * _gain(self.scale[...], x32, self.plus_one)
        return y.astype(self.precision.compute_dtype)


def _gain(scale: Array, x32: Array, plus_one: bool) -> Array:
    """The norm's multiplier in the statistics' dtype: ``scale``, or ``1 + scale``."""
    gain = scale.astype(x32.dtype)
    return 1.0 + gain if plus_one else gain


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
