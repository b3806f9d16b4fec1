"""Delayed scaling: the scale from an amax history of earlier steps, and its state.

Recipes. *current* (default): the scale comes from the amax of the tensor being cast, in the
same step. *delayed* (Transformer Engine, flax): the scale comes from the largest amax in a
history of earlier steps, and the step appends the tensor's amax: no extra pass over the
tensor before its cast, at the cost of a scale one step late. `delayed_scale` and
`update_amax_history` are one tensor's forms; `advance_meta` is the step over a model's meta.

Delayed scaling's state. Each float8 `tjx.nn.linear.Dense` keeps one `Fp8Meta` variable (an
``nnx.Variable`` type of its own, not an ``nnx.Param``: no optimizer, weight decay, LoRA mask
or parameter count sees it), ``[3, 1 + history]`` float32 (`init_meta`): row 0 the input, 1 the
kernel, 2 the output gradient; column 0 the scale the next step casts with, columns 1: the amax
history (flax's ring). A step reads only the scales (`delayed_dot`). The gradient amax exists
only in the backward, so it leaves the product the way flax's ``Fp8DotGeneralOp`` (linen) and
``Fp8DotGeneral`` (nnx) let their meta leave, through the gradient: flax gives its scale and
history variables, as their "gradient", their new values and has the optimizer overwrite the
variables with them (``OVERWRITE_WITH_GRADIENT``, a special collection the optimizer must know
of). Here the cotangent of the meta array is the step's three amaxes in column 0 (zeros
elsewhere), and the step, not the optimizer, calls `advance_meta` (the history rolled with the
amaxes, the scale from its maximum: flax's ``compute_amax_history`` and ``compute_scale``, over
any leading axes) and stores the result: a pure function of the state, the optimizer untouched.
The scale a step casts with is thus the largest amax of the ``history`` steps before it, as in
Transformer Engine (``update_fp8_metas`` after each step) and flax (``in_qdq`` computes it from
the history before recording the step's amax). The first step's history is zeros: it casts
with scale 1 (flax's and Transformer Engine's start too).

Delayed scaling is tensorwise only: a rowwise history would be one per activation row, rows
that are different tokens every step, so no earlier amax describes them (torchao's rowwise
recipe is current-scaling only too).
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen import fp8_ops

from tjx.nn.fp8.dot import _dims, _scaled_dot
from tjx.nn.fp8.scaling import E4M3, E5M2, amax, fp8_max, quantize

Array = jax.Array

#: `Fp8Meta`'s rows: the input, the kernel, the output gradient.
META_ROWS = ("input", "kernel", "gradient")


def delayed_scale(history: Array, dtype: jnp.dtype, previous: Array | None = None) -> Array:
    """Delayed scaling's scale: the largest amax in ``history`` over ``fp8_max`` (flax's
    ``compute_scale``: a history of zeros, the first step's, keeps ``previous``, default 1).

    Parameters
    ----------
    history : Array
        ``[length]`` float32 amaxes of earlier steps (`update_amax_history`'s ring).
    dtype : dtype
        The format the tensor is cast to.
    previous : Array, optional
        The scale used so far.

    Returns
    -------
    Array
        The float32 scalar scale.
    """
    prev = jnp.ones((), jnp.float32) if previous is None else previous
    return fp8_ops.compute_scale(jnp.max(history, axis=0), prev, fp8_max(dtype))


def update_amax_history(history: Array, x: Array) -> Array:
    """``history`` with ``amax(x)`` in place of its oldest entry (flax's
    ``compute_amax_history``: a ring whose newest entry is at 0, the one before it last, the
    oldest at 1; only the maximum is read, so the order matters to nobody)."""
    return fp8_ops.compute_amax_history(x.astype(jnp.float32), history)


class Fp8Meta(nnx.Variable[Array]):
    """A float8 product's delayed-scaling state (`init_meta`'s layout): model state that no
    optimizer updates and no parameter filter (``nnx.Param``, LoRA's) selects; the train step
    advances it (`advance_meta`) from the amaxes its gradient carries (`delayed_dot`)."""


def init_meta(history: int) -> Array:
    """A new `Fp8Meta` value: ``[3, 1 + history]`` float32, scales 1, history zeros.

    Parameters
    ----------
    history : int
        The amax history's length (>= 1).

    Returns
    -------
    Array
        Rows `META_ROWS`; column 0 the scale, columns 1: the history.
    """
    if history < 1:
        raise ValueError(f"fp8 amax history must be >= 1; got {history}")
    return jnp.zeros((len(META_ROWS), 1 + history), jnp.float32).at[:, 0].set(1.0)


def _meta_maxes() -> Array:
    """``fp8_max`` of each `META_ROWS` operand's format: e4m3, e4m3, e5m2."""
    return jnp.asarray([fp8_max(E4M3), fp8_max(E4M3), fp8_max(E5M2)], jnp.float32)


def advance_meta(meta: Array, amaxes: Array) -> Array:
    """Delayed scaling's step: each row's history rolled with its amax, and its scale recomputed
    from the history's maximum (flax's ``compute_amax_history`` and ``compute_scale``, with any
    leading axes: a scanned stack's ``layers``).

    Parameters
    ----------
    meta : Array
        ``[..., 3, 1 + history]`` (`init_meta`'s layout).
    amaxes : Array
        ``[..., 3]`` float32 amaxes of this step's input, kernel and output gradient, or the
        meta's cotangent from `delayed_dot` (``[..., 3, 1 + history]``, amaxes in column 0).

    Returns
    -------
    Array
        The next step's meta: history ``[a, h_2, ..., h_L, h_1]`` for ``[h_1, ..., h_L]`` (the
        newest first, the oldest dropped, flax's ring) and scale ``max(history) / fp8_max``, the
        previous scale kept where that maximum is zero or not finite.
    """
    if amaxes.shape == meta.shape:
        amaxes = amaxes[..., 0]
    history = jnp.roll(meta[..., 1:], -1, axis=-1).at[..., 0].set(amaxes.astype(jnp.float32))
    scale = fp8_ops.compute_scale(jnp.max(history, axis=-1), meta[..., 0], _meta_maxes())
    return jnp.concatenate([scale[..., None], history], axis=-1)


@partial(jax.custom_vjp, nondiff_argnums=(3,))
def delayed_dot(x: Array, w: Array, meta: Array, n_in: int) -> Array:
    """`fp8_dot` with delayed (tensorwise) scales: ``x`` and ``w`` cast to e4m3 and the output
    gradient to e5m2 with the scales in ``meta[:, 0]``.

    Parameters
    ----------
    x, w, n_in
        As `fp8_dot`'s.
    meta : Array
        ``[3, 1 + history]`` (`init_meta`'s layout); only the scales are read.

    Returns
    -------
    Array
        ``[..., *out]`` in ``x``'s dtype. The cotangent of ``meta`` is not a derivative: it
        holds, in column 0, the amaxes of ``x``, ``w`` and the output gradient (zeros
        elsewhere), for the step's `advance_meta`. Values beyond a stale scale's range
        saturate at ``±fp8_max`` (`quantize`).
    """
    return _delayed_fwd(x, w, meta, n_in)[0]


def _delayed_fwd(x: Array, w: Array, meta: Array, n_in: int) -> tuple[Array, tuple]:
    if x.dtype != w.dtype:
        raise ValueError(f"fp8_dot: x and w must share the compute dtype; got {x.dtype}, {w.dtype}")
    _, xc, wc = _dims(n_in, x.ndim)
    sx, sw = meta[0, 0], meta[1, 0]
    xq, wq = quantize(x, E4M3, sx), quantize(w, E4M3, sw)
    y = _scaled_dot(xq, wq, (xc, wc), sx * sw, x.dtype)
    return y, (xq, sx, wq, sw, meta, amax(x), amax(w))


def _delayed_bwd(n_in: int, res: tuple, g: Array) -> tuple[Array, Array, Array]:
    xq, sx, wq, sw, meta, ax, aw = res
    n_lead = g.ndim - wq.ndim + n_in
    lead, gout = tuple(range(n_lead)), tuple(range(n_lead, g.ndim))
    wout = tuple(range(n_in, wq.ndim))
    sg = meta[2, 0]
    gq = quantize(g, E5M2, sg)
    dx = _scaled_dot(gq, wq, (gout, wout), sg * sw, g.dtype)
    dw = _scaled_dot(xq, gq, (lead, lead), sx * sg, g.dtype)
    dmeta = jnp.zeros_like(meta).at[:, 0].set(jnp.stack([ax, aw, amax(g)]))
    return dx, dw, dmeta


delayed_dot.defvjp(_delayed_fwd, _delayed_bwd)
