"""Position information: sinusoidal tables, rotary embeddings (RoPE, with the scalings of
:mod:`tjx.nn.rope_scaling`) and ALiBi biases.

Learned absolute positions are an ``Embed`` over ``max_seq_len`` rows (see ``embeddings.py``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.nn.rope_scaling import RopeScaling, rope_frequencies, rope_parameters

Array = jax.Array


def sinusoidal(
    positions: Array, dim: int, *, max_timescale: float = 10000.0, dtype: Any = jnp.float32
) -> Array:
    """Vaswani et al. sinusoids: ``[..., dim]`` with sin in the first half, cos after.

    Parameters
    ----------
    positions : Array
        Integer (or float) positions ``[...]``.
    dim : int
        Output width; an odd ``dim`` gets one zero column at the end.
    max_timescale : float
        Longest wavelength.
    dtype : dtype
        Dtype of the computation and the result (float32; float64 in x64 tests).

    Returns
    -------
    Array
        ``[..., dim]`` in ``dtype``.
    """
    half = dim // 2
    freq = jnp.exp(-math.log(max_timescale) * jnp.arange(half, dtype=dtype) / max(half, 1))
    angles = positions.astype(dtype)[..., None] * freq
    out = jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)
    if dim % 2:
        out = jnp.pad(out, [(0, 0)] * (out.ndim - 1) + [(0, 1)])
    return out


def rope_inv_freq(
    head_dim: int, theta: float, scaling: RopeScaling | Sequence[float] | None = None
) -> np.ndarray:
    """RoPE's inverse frequencies ``[head_dim // 2]`` in float64, scaled if asked.

    ``scaling`` is a `RopeScaling` (or Llama 3's legacy four numbers ``(factor,
    low_freq_factor, high_freq_factor, original_max_position_embeddings)``); see
    :func:`tjx.nn.rope_scaling.rope_parameters` (for ``dynamic``/``longrope``: their frequencies
    within the original context).

    Returns
    -------
    numpy.ndarray
        float64 ``[head_dim // 2]``.
    """
    inv, _ = rope_parameters(head_dim, theta, RopeScaling.parse(scaling))
    return inv


def apply_rope(
    x: Array,
    positions: Array,
    *,
    theta: float = 10000.0,
    scaling: RopeScaling | Sequence[float] | None = None,
    length: Array | None = None,
) -> Array:
    """Rotate ``x`` [b, s, heads, head_dim] by ``positions`` [b, s] (LLaMA's rotate-half form).

    Dimension ``i`` pairs with ``i + head_dim/2``; angles are computed in float32.

    Parameters
    ----------
    x : Array
        Queries or keys ``[b, s, heads, head_dim]`` (``head_dim`` even).
    positions : Array
        int ``[b, s]`` absolute positions.
    theta : float
        RoPE base (10000 in LLaMA; larger for long contexts).
    scaling : RopeScaling, optional
        The frequency scaling (:mod:`tjx.nn.rope_scaling`; yarn and longrope also scale the
        rotated ``x`` by their attention factor, as transformers scales cos and sin); None: plain
        RoPE.
    length : Array, optional
        The call's sequence length for ``dynamic``/``longrope`` (default ``max(positions) +
        1``; a decode step re-rotating cached keys passes the current one).

    Returns
    -------
    Array
        ``x`` rotated, same shape and dtype.
    """
    d = x.shape[-1]
    dt = jnp.promote_types(x.dtype, jnp.float32)
    inv_freq, attention = rope_frequencies(
        positions, d, theta, RopeScaling.parse(scaling), dt, length=length
    )
    angles = positions.astype(dt)[..., None] * inv_freq  # [b, s, half]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    if attention != 1.0:
        cos, sin = cos * attention, sin * attention
    return rope_rotate(x, cos, sin)


def proportional_rope(x: Array, positions: Array, *, theta: float, proportion: float) -> Array:
    """Proportional RoPE of ``x`` [b, s, heads, head_dim] at ``positions`` [b, s].

    The head's first ``int(proportion · head_dim / 2)`` frequency pairs turn at the frequencies
    of the whole head (``theta^(-2i/head_dim)``); the others have frequency 0 and pass through.
    Pairs are rotate-half's (dim ``i`` with ``i + head_dim/2``), as in `apply_rope`, which this
    equals at ``proportion`` 1.

    Returns
    -------
    Array
        ``x`` rotated, same shape and dtype.
    """
    d = x.shape[-1]
    half = d // 2
    turned = int(proportion * d // 2)
    dt = jnp.promote_types(x.dtype, jnp.float32)
    inv = 1.0 / (theta ** (jnp.arange(0, 2 * turned, 2, dtype=dt) / d))
    inv = jnp.concatenate([inv, jnp.zeros((half - turned,), dt)])
    angles = positions.astype(dt)[..., None] * inv  # [b, s, half]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    return rope_rotate(x, cos, sin)


@jax.custom_vjp
def rope_rotate(x: Array, cos: Array, sin: Array) -> Array:
    """``x`` [..., d] with dimension ``i`` paired with ``i + d/2`` and each pair turned by the
    angle whose cosine and sine are ``cos``, ``sin`` ([..., d/2], broadcast against ``x``'s
    halves): float32 math, the result in ``x``'s dtype.

    The backward turns the gradient back by the opposite angle in one pass, in the same
    dtypes: autodiff of the formula splits the incoming gradient into float32 halves first,
    and where that gradient comes out of a reduction (the keys' gradient summed over a
    query group) XLA writes those float32 halves to memory between two kernels.

    Parameters
    ----------
    x : Array
        ``[..., d]`` (``d`` even).
    cos, sin : Array
        The angles' cosines and sines (float32), ``[..., d/2]`` broadcastable against ``x``'s
        halves; any scale they carry (yarn's attention factor) scales the result.

    Returns
    -------
    Array
        Same shape and dtype as ``x``.
    """
    return _turn(x, cos, sin)


def _turn(x: Array, cos: Array, sin: Array) -> Array:
    dt = jnp.promote_types(x.dtype, cos.dtype)
    half = x.shape[-1] // 2
    wide = x.astype(dt)
    x1, x2 = wide[..., :half], wide[..., half:]
    # Each half padded to the whole width and added (the sums of the halves' formula, exactly):
    # XLA makes one loop kernel of it, where a concatenation becomes a concatenate kernel
    # (which the calibrated estimate prices as a reduction's).
    none = [(0, 0)] * (x.ndim - 1)
    out = jnp.pad(x1 * cos - x2 * sin, [*none, (0, half)])
    out = out + jnp.pad(x2 * cos + x1 * sin, [*none, (half, 0)])
    return out.astype(x.dtype)


def _rotate_fwd(x: Array, cos: Array, sin: Array) -> tuple[Array, tuple[Array, Array]]:
    return _turn(x, cos, sin), (cos, sin)


def _rotate_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array, Array]:
    cos, sin = res
    # The gradient is read as it arrives, in x's dtype: without the barrier XLA drops the
    # rounding of a float32 producer (a reduction: the keys' gradient summed over a query
    # group) and, as this pass reads each element twice, writes the float32 halves to memory.
    g = jax.lax.optimization_barrier(g)
    # The transpose of a turn is the turn by the opposite angle (``g`` has ``x``'s dtype). cos
    # and sin come from integer positions and constants: their gradients are zero (unused).
    return _turn(g, cos, -sin), jnp.zeros_like(cos), jnp.zeros_like(sin)


rope_rotate.defvjp(_rotate_fwd, _rotate_bwd)


def alibi_slopes(num_heads: int) -> np.ndarray:
    """ALiBi head slopes (Press et al.), geometric from ``2^(-8/n)``; float32 ``[heads]``.

    Parameters
    ----------
    num_heads : int
        Number of attention heads (any positive count; non-powers of two interleave as in the
        paper).

    Returns
    -------
    numpy.ndarray
        float32 ``[num_heads]``.
    """

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return np.asarray(slopes, dtype=np.float32)


def alibi_bias(q_positions: Array, k_positions: Array, num_heads: int) -> Array:
    """Additive bias ``-slope_h · |i - j|`` of shape ``[b, heads, s_q, s_k]`` (float32).

    With a causal mask only ``j <= i`` survives, giving the original ``slope · (j - i)``.

    Parameters
    ----------
    q_positions : Array
        int ``[b, s_q]`` query positions.
    k_positions : Array
        int ``[b, s_k]`` key positions.
    num_heads : int
        Number of heads (one slope each).

    Returns
    -------
    Array
        float32 ``[b, heads, s_q, s_k]``, for ``tjx.kernels.attention(..., bias=)``.
    """
    slopes = jnp.asarray(alibi_slopes(num_heads))
    dist = jnp.abs(
        q_positions[:, :, None].astype(jnp.float32) - k_positions[:, None, :].astype(jnp.float32)
    )
    return -slopes[None, :, None, None] * dist[:, None]
