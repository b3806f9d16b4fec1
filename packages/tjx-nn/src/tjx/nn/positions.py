"""Position information: sinusoidal tables, rotary embeddings (RoPE) and ALiBi biases.

Learned absolute positions are an ``Embed`` over ``max_seq_len`` rows (see ``embeddings.py``).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

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


#: Llama 3's RoPE scaling: (factor, low_freq_factor, high_freq_factor, original context length),
#: the four numbers of a HF ``rope_scaling`` of type ``llama3``.
RopeScaling = tuple[float, float, float, int]


def rope_inv_freq(head_dim: int, theta: float, scaling: RopeScaling | None = None) -> np.ndarray:
    """RoPE's inverse frequencies ``[head_dim // 2]`` in float64, Llama 3-scaled if asked.

    Llama 3 (``scaling`` given) divides the low frequencies (wavelength above
    ``original / low_freq_factor``) by ``factor``, keeps the high ones (wavelength below
    ``original / high_freq_factor``) and blends linearly in between, as Meta's reference and
    transformers' ``_compute_llama3_parameters`` do.

    Parameters
    ----------
    head_dim : int
        Even head width.
    theta : float
        RoPE base.
    scaling : RopeScaling, optional
        ``(factor, low_freq_factor, high_freq_factor, original_max_position_embeddings)``.

    Returns
    -------
    numpy.ndarray
        float64 ``[head_dim // 2]``.
    """
    half = head_dim // 2
    inv = 1.0 / (theta ** (np.arange(half, dtype=np.float64) / half))
    if scaling is None:
        return inv
    factor, low, high, original = scaling
    wavelen = 2 * math.pi / inv
    low_wavelen, high_wavelen = original / low, original / high
    scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return np.where(medium, smoothed, scaled)


def apply_rope(
    x: Array, positions: Array, *, theta: float = 10000.0, scaling: RopeScaling | None = None
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
        Llama 3's frequency scaling (see ``rope_inv_freq``); None: plain RoPE.

    Returns
    -------
    Array
        ``x`` rotated, same shape and dtype.
    """
    d = x.shape[-1]
    half = d // 2
    dt = jnp.promote_types(x.dtype, jnp.float32)
    if scaling is None:
        inv_freq = 1.0 / (theta ** (jnp.arange(half, dtype=dt) / half))
    else:  # static numbers: computed once in float64 while tracing
        inv_freq = jnp.asarray(rope_inv_freq(d, theta, scaling), dtype=dt)
    angles = positions.astype(dt)[..., None] * inv_freq  # [b, s, half]
    cos = jnp.cos(angles)[:, :, None, :]
    sin = jnp.sin(angles)[:, :, None, :]
    x32 = x.astype(dt)
    x1, x2 = x32[..., :half], x32[..., half:]
    out = jnp.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1)
    return out.astype(x.dtype)


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
