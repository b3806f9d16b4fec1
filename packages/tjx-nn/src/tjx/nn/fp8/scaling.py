"""Float8's formats and the cast: which amax a scale comes from (`amax`, `current_scale`) and
`quantize` (flax's ``fp8_ops`` arithmetic); the policy's overview is `tjx.nn.fp8`'s."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax.linen import fp8_ops

Array = jax.Array

#: Forward operands' format (activations and weights).
E4M3 = jnp.dtype(jnp.float8_e4m3fn)
#: The output gradient's format.
E5M2 = jnp.dtype(jnp.float8_e5m2)
SCALINGS = ("tensorwise", "rowwise")
RECIPES = ("current", "delayed")


def fp8_max(dtype: jnp.dtype) -> float:
    """The largest finite value of a float8 ``dtype`` (448 for e4m3fn, 57344 for e5m2)."""
    return float(jnp.finfo(dtype).max)


def amax(x: Array, axes: Sequence[int] | None = None) -> Array:
    """``max |x|`` in float32, over ``axes`` (kept as size-1 dims) or the whole tensor.

    Parameters
    ----------
    x : Array
        Any floating array.
    axes : sequence of int, optional
        The reduced axes; None: all (a scalar).

    Returns
    -------
    Array
        float32; a scalar, or ``x``'s shape with ``axes`` of size 1.
    """
    a = jnp.abs(x.astype(jnp.float32))
    if axes is None:
        return jnp.max(a)
    return jnp.max(a, axis=tuple(axes), keepdims=True)


def current_scale(x: Array, dtype: jnp.dtype, axes: Sequence[int] | None = None) -> Array:
    """The current-scaling scale ``amax / fp8_max`` of ``x`` for ``dtype`` (flax's
    ``compute_scale``; an all-zero or non-finite amax keeps the scale 1).

    Parameters
    ----------
    x : Array
        The tensor to be cast.
    dtype : dtype
        The float8 format it is cast to.
    axes : sequence of int, optional
        Axes the amax is taken over (rowwise: the contracted axes); None: one scale.

    Returns
    -------
    Array
        float32 scale(s), the divisor `quantize` applies.
    """
    a = amax(x, axes)
    return fp8_ops.compute_scale(a, jnp.ones_like(a), fp8_max(dtype))


def quantize(x: Array, dtype: jnp.dtype, scale: Array) -> Array:
    """``x / scale`` clipped to ``dtype``'s finite range and cast (flax's ``quantize``, in
    float32 so that a bfloat16 ``x`` is divided exactly).

    Parameters
    ----------
    x : Array
        High-precision values.
    dtype : dtype
        ``E4M3`` or ``E5M2``.
    scale : Array
        A scalar, or an array broadcastable to ``x`` (rowwise).

    Returns
    -------
    Array
        ``x``'s shape in ``dtype``; values beyond the range saturate at ``±fp8_max``.
    """
    return fp8_ops.quantize(x.astype(jnp.float32), dtype, scale, jnp.float32)
