"""LayerNorm and RMSNorm with float32 statistics whatever the compute dtype, and a fused backward.

Both are ``jax.custom_vjp`` functions (`layer_norm`, `rms_norm`) whose forward is the plain
formula and whose backward is the closed form

    dx = rstd · (dŷ − mean(dŷ) − x̂ · mean(dŷ · x̂)),   dŷ = dy · scale,   x̂ = (x − mean) · rstd

(RMSNorm: without the centring terms), with ``dscale = Σ dy · x̂`` and ``dbias = Σ dy`` over the
tokens. The residuals are the input (compute dtype) and two float32 numbers per row — autodiff
of the formula saves the centred float32 input and more ([tokens, d] float32 each), and its
backward is a chain of separate reductions. LayerNorm's statistics of a 16-bit input are
Welford's, one pass (`_layer_norm_stats`: what keeps XLA from writing ``dy · x̂`` in float32
between two kernels of the backward). Measured on the deviceless H100 compile of gpt2_small's
step (BENCHMARKS.md).

``plus_one`` (Gemma's norms) multiplies by ``1 + scale`` instead of ``scale``, the scale starting
at 0; the sum is taken in float32, as transformers' Gemma does (``1 + w`` in bfloat16 would lose
the small weights' low bits). The modules pass ``1 + w`` as the fused functions' scale, so the
gradient of the add carries ``dscale`` to ``w`` unchanged.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
from flax import nnx

from tjx.kernels import tokamax_ops
from tjx.kernels.layer_kernels import resolve_norm
from tjx.nn.linear import column_sums
from tjx.nn.params import make_param, ones, zeros
from tjx.nn.precision import Precision

Array = jax.Array


def stats_dtype(x: Array) -> jnp.dtype:
    """float32, or wider when the input already is (float64 in x64 tests)."""
    return jnp.promote_types(x.dtype, jnp.float32)


def _welford(
    a: tuple[Array, Array, Array], b: tuple[Array, Array, Array]
) -> tuple[Array, Array, Array]:
    """Two partial (count, mean, Σ(x − mean)²) of a row, combined (Chan et al.'s update)."""
    na, ma, qa = a
    nb, mb, qb = b
    n = na + nb
    delta = mb - ma
    w = nb / jnp.maximum(n, 1.0)  # two empty partials (XLA's padding): 0, not 0/0
    return n, ma + delta * w, qa + qb + delta * delta * na * w


def _layer_norm_stats(x: Array, eps: float) -> tuple[Array, Array]:
    """Each row's mean and ``rsqrt(var + eps)`` ([..., 1], in `stats_dtype`).

    A 16-bit ``x`` (the compute dtype of mixed-precision training) takes Welford's one pass: the
    running sum and sum of squared deviations in one variadic reduction, as the LayerNorm
    kernels of PyTorch and Apex compute them — exact for near-constant rows like the centred
    two-pass formula, where ``E[x²] − E[x]²`` is not. What one pass saves beyond a read: XLA's
    GPU compiler makes the two-pass statistics a normalization kernel of its own that
    recomputes them wherever they are used, and the backward's column sums (``dscale``) then
    become a kernel writing ``dy · x̂`` in float32 ([tokens, d]) and a second reading it back.
    A float32 or float64 ``x`` keeps the two-pass formula: on a CPU, XLA sums a plain
    reduction in several lanes and a variadic one in one, so Welford's statistics there are a
    few float32 ulps less exact (2e-7 against 7e-8 relative, normal rows of 768; invisible
    beside a 16-bit output's rounding), and float32 steps keep their program and numbers.
    """
    x32 = x.astype(stats_dtype(x))
    d = x.shape[-1]
    if jnp.finfo(x.dtype).bits >= 32:
        mean = jnp.mean(x32, axis=-1, keepdims=True)
        centred = x32 - mean
        # Variance from the centred values (not E[x²]−E[x]²): exact for near-constant input.
        return mean, jax.lax.rsqrt(jnp.mean(jnp.square(centred), axis=-1, keepdims=True) + eps)
    zero = jnp.zeros((), x32.dtype)
    parts = (jnp.ones_like(x32), x32, jnp.zeros_like(x32))
    # The running mean, not the sum: the mean comes out of the reduction itself (its division
    # by d would be a kernel of its own, as the rsqrt is).
    _, mean, m2 = jax.lax.reduce(parts, (zero, zero, zero), _welford, (x.ndim - 1,))
    return mean[..., None], jax.lax.rsqrt(m2[..., None] / d + eps)


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
    mean, rstd = _layer_norm_stats(x, eps)
    gain = _params(scale, bias, mean.dtype)
    y = (x.astype(mean.dtype) - mean) * rstd * gain[0]
    if bias is not None:
        y = y + gain[1]
    return y.astype(out_dtype), (x, mean, rstd, gain, scale, bias)


def _params(scale: Array, bias: Array | None, dtype: jnp.dtype) -> Array:
    """``scale`` (and ``bias``) as one ``[1 or 2, d]`` array in ``dtype``, made by one kernel.

    Each is a slice of the flat parameter buffer, and XLA gives a lone slice read by two
    kernels (the forward and the backward) a kernel of its own; stacked, the two are one
    (25 launches a step fewer in gpt2_small's deviceless H100 compile). The barrier keeps
    XLA from folding the stack's slices back into two."""
    parts = [scale] if bias is None else [scale, bias]
    return jax.lax.optimization_barrier(jnp.stack([p.astype(dtype) for p in parts]))


def _layer_norm_dx(res: tuple[Array | None, ...], dy: Array) -> tuple[Array, Array, Array]:
    """The input's gradient in the statistics' dtype (not rounded), ``x̂`` and ``dy`` in it."""
    x, mean, rstd, gain, _, _ = res
    assert x is not None and mean is not None and rstd is not None and gain is not None
    xhat = (x.astype(mean.dtype) - mean) * rstd
    dy32 = dy.astype(mean.dtype)
    dyg = dy32 * gain[0]
    dx = rstd * (
        dyg
        - jnp.mean(dyg, axis=-1, keepdims=True)
        - xhat * jnp.mean(dyg * xhat, axis=-1, keepdims=True)
    )
    return dx, xhat, dy32


def _layer_norm_bwd(
    eps: float, out_dtype: jnp.dtype, res: tuple[Array | None, ...], dy: Array
) -> tuple[Array, Array, Array | None]:
    del eps, out_dtype
    x, _, _, _, scale, bias = res
    assert x is not None and scale is not None  # scale and bias: dtypes only (values in gain)
    dx, xhat, dy32 = _layer_norm_dx(res, dy)
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


@functools.partial(jax.custom_vjp, nondiff_argnums=(6, 7))
def residual_layer_norm(
    x: Array,
    h: Array,
    h_bias: Array | None,
    scale: Array,
    bias: Array | None,
    carried: tuple[Array, ...],
    eps: float,
    out_dtype: jnp.dtype,
) -> tuple[Array, Array, tuple[Array, ...]]:
    """A pre-LN layer's residual add and the LayerNorm of its sum, with one backward reduction
    for the norm's parameters and the biases on either side of it.

    Returns ``s = x + (h + h_bias)`` (the residual stream, as ``x + Dense(...)`` computes it),
    ``layer_norm(s)`` and each of ``carried`` (``[d]`` biases) cast to ``h``'s dtype and
    broadcast to ``s``'s shape: a later projection's bias, added by the caller to that
    projection's output (``s + (out + carried[0])``, its plain forward). A broadcast's gradient
    arrives here whole, so its column sum joins the norm's own.

    The point is the backward: a bias added by `Dense` gets its gradient from a column sum
    of its own, which XLA's GPU compiler splits into two kernels; here the norm's ``dscale`` and
    ``dbias``, ``h_bias``'s gradient (the sum of ``s``'s) and each carried bias's are one
    variadic reduction, two kernels for all of them (four launches a GPT-2 layer fewer). A
    16-bit ``s`` also gets its gradient rounded once: ``ds + dx`` is added in float32 (autodiff
    rounds the norm's ``dx`` to bfloat16, then adds), and the biases' sums are float32 sums of
    the rounded gradients (autodiff sums in bfloat16). A 32-bit ``s`` computes what autodiff of
    `layer_norm` and `Dense` computes, operation for operation (the same numbers).

    Parameters
    ----------
    x : Array
        The residual stream ``[..., d]``.
    h : Array
        A sublayer's output before its bias, ``[..., d]`` (the compute dtype).
    h_bias : Array or None
        Its bias ``[d]`` (any float dtype: the parameter; cast to ``h``'s).
    scale, bias : Array
        The norm's ``[d]`` parameters (``bias`` may be None).
    carried : tuple of Array
        ``[d]`` biases of later projections (see above); ``()`` for none.
    eps : float
        Added to the variance.
    out_dtype : dtype
        The norm's output dtype.

    Returns
    -------
    (Array, Array, tuple of Array)
        ``s``, the normalised ``s`` in ``out_dtype``, and the carried biases ``[..., d]``.
    """
    return _residual_layer_norm_fwd(x, h, h_bias, scale, bias, carried, eps, out_dtype)[0]


def _dtype_of(a: Array) -> Array:
    """An empty array of ``a``'s dtype: what a backward needs of an input it does not read."""
    return jnp.zeros((0,), a.dtype)


def _residual_layer_norm_fwd(
    x: Array,
    h: Array,
    h_bias: Array | None,
    scale: Array,
    bias: Array | None,
    carried: tuple[Array, ...],
    eps: float,
    out_dtype: jnp.dtype,
) -> tuple[tuple[Array, Array, tuple[Array, ...]], tuple[Any, ...]]:
    chex.assert_equal_shape([x, h])
    for b in (h_bias, *carried):
        if b is not None:
            chex.assert_shape(b, x.shape[-1:])
    s = x + (h if h_bias is None else h + h_bias.astype(h.dtype))
    y, res = _layer_norm_fwd(s, scale, bias, eps, out_dtype)
    out = tuple(jnp.broadcast_to(c.astype(h.dtype), s.shape) for c in carried)
    # Only dtypes of the inputs the backward does not read: nothing of [..., d] kept alive.
    kinds = (_dtype_of(x), _dtype_of(h), None if h_bias is None else _dtype_of(h_bias))
    return (s, y, out), (res, kinds, tuple(_dtype_of(c) for c in carried))


def _residual_layer_norm_bwd(
    eps: float,
    out_dtype: jnp.dtype,
    res: tuple[Any, ...],
    cts: tuple[Array, Array, tuple[Array, ...]],
) -> tuple[Array, Array, Array | None, Array, Array | None, tuple[Array, ...]]:
    del eps, out_dtype
    ln_res, (x_kind, h_kind, hb_kind), c_kinds = res
    ds, dy, dcarried = cts
    s, mean, _, _, scale, bias = ln_res
    dx, xhat, dy32 = _layer_norm_dx(ln_res, dy)
    rows = tuple(range(s.ndim - 1))
    if jnp.finfo(s.dtype).bits >= 32:
        # Autodiff's program: the norm's dx in s's dtype added to the residual's gradient, each
        # bias's gradient a sum of its own (float32 configs keep their numbers bit for bit).
        g = ds + dx.astype(s.dtype)
        gh = g.astype(h_kind.dtype)
        if bias is None:
            dscale, dbias = jnp.sum(dy32 * xhat, axis=rows), None
        else:
            dscale, dbias = column_sums((dy32 * xhat, dy32), rows)
        dh_bias = None if hb_kind is None else jnp.sum(gh, axis=rows)
        dcs = tuple(jnp.sum(d, axis=rows) for d in dcarried)
    else:
        # One rounding of the sum, and every column sum in one float32 reduction (of the
        # gradients as rounded: what the projections receive).
        g = ds.astype(mean.dtype) + dx
        gh = g.astype(h_kind.dtype)
        wide = [dy32 * xhat, *([] if bias is None else [dy32])]
        if hb_kind is not None:
            wide.append(_widen_exactly(gh))
        wide += [_widen_exactly(d) for d in dcarried]
        # One sum over the summands stacked ([..., n, d]), not a variadic reduce of n: XLA's
        # GPU compiler fuses the summands' producers into a variadic reduce of two operands
        # but not of more (it writes each to memory first: 190 µs where this takes 45 µs).
        sums = list(jnp.sum(jnp.stack(wide, axis=-2), axis=rows))
        dscale = sums.pop(0)
        dbias = None if bias is None else sums.pop(0)
        dh_bias = None if hb_kind is None else sums.pop(0)
        dcs = tuple(sums)
    return (
        g.astype(x_kind.dtype),
        gh,
        None if dh_bias is None or hb_kind is None else dh_bias.astype(hb_kind.dtype),
        dscale.astype(scale.dtype),
        None if dbias is None or bias is None else dbias.astype(bias.dtype),
        tuple(d.astype(k.dtype) for d, k in zip(dcs, c_kinds, strict=True)),
    )


residual_layer_norm.defvjp(_residual_layer_norm_fwd, _residual_layer_norm_bwd)


def _widen_exactly(a: Array) -> Array:
    """A bfloat16 array's values in float32, by their bits (bfloat16 is float32's top half).

    What ``a.astype(float32)`` computes, written so that XLA cannot fold it: its GPU compiler
    drops a float32 → bfloat16 → float32 round trip (excess precision allowed), so a column sum
    of the rounded gradient would read the unrounded float32 one, written to memory for it
    (50 MB a norm in gpt2_small) instead of the bfloat16 one the projections read anyway."""
    if a.dtype != jnp.bfloat16:
        return a.astype(jnp.float32)
    bits = jax.lax.bitcast_convert_type(a, jnp.uint16).astype(jnp.uint32) << 16
    return jax.lax.bitcast_convert_type(bits, jnp.float32)


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
        impl: str = "xla",
    ) -> None:
        self.precision = precision or Precision()
        self.eps = eps
        self.plus_one = plus_one
        self.impl = resolve_norm(impl, self.precision.compute_dtype)
        dtype = self.precision.param_dtype
        self.scale = make_param(rngs, zeros() if plus_one else ones(), (dim,), ("norm",), dtype)
        self.bias = make_param(rngs, zeros(), (dim,), ("norm",), dtype) if use_bias else None

    def __call__(self, x: Array) -> Array:
        """Normalise ``x`` [..., dim]."""
        bias = None if self.bias is None else self.bias[...]
        scale = _gain(self.scale[...], x, self.plus_one)
        dt = self.precision.compute_dtype
        if self.impl == "tokamax":
            return tokamax_ops.tokamax_norm(x, scale, bias, eps=self.eps, rms=False, out_dtype=dt)
        return layer_norm(x, scale, bias, self.eps, dt)

    def residual(
        self, x: Array, h: Array, h_bias: Array | None, carried: tuple[Array, ...] = ()
    ) -> tuple[Array, Array, tuple[Array, ...]]:
        """`residual_layer_norm` with this norm's parameters: ``s = x + (h + h_bias)``, the
        norm of ``s``, and ``carried`` broadcast to ``s``'s shape.

        Parameters
        ----------
        x : Array
            The residual stream ``[..., dim]``.
        h : Array
            A sublayer's output before its bias.
        h_bias : Array or None
            That bias ``[dim]``.
        carried : tuple of Array
            Later projections' biases ``[dim]`` whose gradients this norm's backward sums.

        Returns
        -------
        (Array, Array, tuple of Array)
            ``s``, its norm, the carried biases broadcast.
        """
        if self.impl == "tokamax":  # the same forward, the norm tokamax's (autodiff around it)
            s = x + (h if h_bias is None else h + h_bias.astype(h.dtype))
            out = tuple(jnp.broadcast_to(c.astype(h.dtype), s.shape) for c in carried)
            return s, self(s), out
        bias = None if self.bias is None else self.bias[...]
        scale = _gain(self.scale[...], x, self.plus_one)
        dt = self.precision.compute_dtype
        return residual_layer_norm(x, h, h_bias, scale, bias, carried, self.eps, dt)


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
        impl: str = "xla",
    ) -> None:
        self.precision = precision or Precision()
        self.eps = eps
        self.plus_one = plus_one
        self.impl = resolve_norm(impl, self.precision.compute_dtype)
        init = zeros() if plus_one else ones()
        self.scale = make_param(rngs, init, (dim,), ("norm",), self.precision.param_dtype)

    def __call__(self, x: Array) -> Array:
        """Normalise ``x`` [..., dim]."""
        scale = _gain(self.scale[...], x, self.plus_one)
        dt = self.precision.compute_dtype
        if self.impl == "tokamax":
            return tokamax_ops.tokamax_norm(x, scale, None, eps=self.eps, rms=True, out_dtype=dt)
        return rms_norm(x, scale, self.eps, dt)


def _gain(scale: Array, x: Array, plus_one: bool) -> Array:
    """The norm's multiplier: ``scale`` as stored, or ``1 + scale`` summed in the statistics'
    dtype (float32; float64 in x64 tests), whose gradient reaches ``scale`` unchanged."""
    return 1.0 + scale.astype(stats_dtype(x)) if plus_one else scale


def make_norm(
    kind: str | None,
    dim: int,
    *,
    rngs: nnx.Rngs,
    eps: float | None,
    use_bias: bool = True,
    precision: Precision | None = None,
    plus_one: bool = False,
    impl: str = "xla",
) -> LayerNorm | RMSNorm:
    """``LayerNorm`` for ``kind="layernorm"``, ``RMSNorm`` for ``"rmsnorm"`` (``plus_one``:
    Gemma's ``1 + scale``; ``impl``: ``norm.impl``, who runs it, resolved here by
    `tjx.kernels.resolve_norm`); ``kind`` and ``eps`` are a model config's ``norm`` section's,
    which it fills (None there is a ``ValueError``)."""
    if eps is None:
        raise ValueError("make_norm: eps is None; a model config's norm.eps is filled in")
    common: dict[str, Any] = dict(rngs=rngs, eps=eps, precision=precision, plus_one=plus_one)
    if kind == "layernorm":
        return LayerNorm(dim, use_bias=use_bias, impl=impl, **common)
    if kind == "rmsnorm":
        return RMSNorm(dim, impl=impl, **common)
    raise ValueError(f"norm.kind must be one of ('layernorm', 'rmsnorm'); got {kind!r}")
