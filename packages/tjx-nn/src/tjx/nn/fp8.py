"""Float8 matrix products for training: the scaling policy.

What the libraries do and what this module adds:

- jax gives the dtypes (``jnp.float8_e4m3fn``, ``jnp.float8_e5m2``) and ``lax.dot_general`` on
  float8 operands with ``preferred_element_type``. XLA's CPU backend emulates the product; on
  Hopper XLA's GPU compiler gives an ``f8 × f8`` dot to its Triton GEMM as a float8 product or,
  where cuBLAS is chosen, to cuBLASLt's float8 GEMM (the custom call ``__cublas$lt$matmul$f8``).
  The dequantized form ``dot(convert(f8) * s, convert(f8) * s)`` that flax's ``fp8_ops``
  writes is matched by the cuBLAS rewriter only: XLA's Triton GEMM rewriter (on by default, and
  first) takes the product of the dequantized bfloat16 operands, a bfloat16 GEMM. So the scales
  here multiply the product's output.
- flax (``flax.linen.fp8_ops``, a public module) gives the cast and the scale arithmetic:
  ``quantize`` (divide by the scale, clip to the format's finite range, cast: values beyond
  e4m3's 448 saturate instead of becoming NaN), ``compute_scale`` (``amax / fp8_max``, keeping
  the previous scale where the amax is zero or not finite) and ``compute_amax_history`` (roll
  the history, put the newest amax first).
- This module is the policy: which format each operand takes, which amax a scale comes from
  (the tensor, one per row, or a history) and the product's custom VJP, whose backward casts
  the output gradient and runs both gradient products in float8 too.

Formats. Forward operands (activations, weights) are e4m3 (more mantissa); the output
gradient is e5m2 (more range: gradients span more decades than activations). That is
torchtitan's tensorwise recipe (torchao ``Float8LinearConfig``'s default), MaxText's ``fp8``
and flax's ``Fp8DotGeneralOp``; NVIDIA Transformer Engine's ``HYBRID`` format is the same
choice. torchao's rowwise recipe casts the gradient to e4m3 with power-of-two scales instead;
here both scalings keep e5m2 so that a run switching scaling changes one thing.

Scalings. *tensorwise*: one scale per operand (``amax(|t|) / fp8_max``). *rowwise* (torchao's
rowwise/axiswise recipe): one scale per row of the activation and per output column of the
weight, i.e. every operand is scaled along its non-contracted axes, so the scales factor out of
the sum and multiply the product's output; the backward re-casts the saved high-precision
operands along the axes its own products keep (per row of the gradient and per row of the
weight for the input gradient; per column of the activation and of the gradient for the
weight gradient).

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

The LM head (``Precision.fp8_lm_head``, off by default as torchtitan leaves ``output`` out).
Its product is the chunked loss's (``tjx.kernels.chunked_cross_entropy``), whose custom VJP
runs each chunk's logits and both gradient products itself; tjx-kernels depends on jax alone,
not on this module or flax, so the loss takes the products as an argument (its typed
``HeadProducts`` Protocol) and `Fp8HeadProducts` hands it `fp8_dot`'s own forward and
backward products (`_forward`, `_backward`, with the loss's result dtypes): the formats and the
scaling keep one definition. Current scaling only: delayed scaling's state is a `Dense`'s.

Delayed scaling is tensorwise only: a rowwise history would be one per activation row, rows
that are different tokens every step, so no earlier amax describes them (torchao's rowwise
recipe is current-scaling only too).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from flax.linen import fp8_ops
from jax import lax

Array = jax.Array

#: Forward operands' format (activations and weights).
E4M3 = jnp.dtype(jnp.float8_e4m3fn)
#: The output gradient's format.
E5M2 = jnp.dtype(jnp.float8_e5m2)
SCALINGS = ("tensorwise", "rowwise")
RECIPES = ("current", "delayed")
#: `Fp8Meta`'s rows: the input, the kernel, the output gradient.
META_ROWS = ("input", "kernel", "gradient")


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
    x : Array
        ``[..., *in]`` in the compute dtype.
    w : Array
        ``[*in, *out]`` in ``x``'s dtype.
    meta : Array
        ``[3, 1 + history]`` (`init_meta`'s layout); only the scales are read.
    n_in : int
        Number of contracted axes.

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


@dataclass(frozen=True)
class Fp8Policy:
    """How a product is cast to float8.

    Parameters
    ----------
    scaling : str
        ``tensorwise`` (one scale per operand) or ``rowwise`` (one per row of the activation,
        per output column of the weight).
    """

    scaling: str = "tensorwise"

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"fp8 scaling must be one of {SCALINGS}; got {self.scaling!r}")


def _dims(n_in: int, x_ndim: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """``x``'s leading (kept) axes, its contracted axes, and the kernel's contracted axes."""
    lead = tuple(range(x_ndim - n_in))
    return lead, tuple(range(x_ndim - n_in, x_ndim)), tuple(range(n_in))


def _scaled_dot(
    a: Array,
    b: Array,
    contract: tuple[tuple[int, ...], tuple[int, ...]],
    out_scale: Array,
    dtype: jnp.dtype,
) -> Array:
    """``(a · b) * out_scale`` in ``dtype``, float8 operands accumulated in float32.

    A bfloat16 result leaves the product in bfloat16 (the GEMM accumulates in float32 and
    writes half the bytes of a float32 output; the scale then multiplies in float32, one
    rounding more, ``2⁻⁹``, far below float8's); a float16 one would overflow before its scale
    (float8 products reach ``448² · k``), so it and float32 take a float32 product.
    """
    out = jnp.bfloat16 if dtype == jnp.bfloat16 else jnp.float32
    y = lax.dot_general(a, b, (contract, ((), ())), preferred_element_type=out)
    return (y.astype(jnp.float32) * out_scale).astype(dtype)


def _to_out(s_lead: Array, n_lead: int, n_out: int) -> Array:
    """A rowwise scale kept with size-1 trailing axes, reshaped to broadcast over an output
    with ``n_out`` trailing axes."""
    return s_lead.reshape(s_lead.shape[:n_lead] + (1,) * n_out)


def _forward(
    x: Array, w: Array, n_in: int, policy: Fp8Policy, out: Any = None
) -> tuple[Array, tuple]:
    """`fp8_dot`'s product and its residuals; ``out``: the result's dtype (None: ``x``'s)."""
    if x.dtype != w.dtype:
        raise ValueError(f"fp8_dot: x and w must share the compute dtype; got {x.dtype}, {w.dtype}")
    out = x.dtype if out is None else out
    lead, xc, wc = _dims(n_in, x.ndim)
    n_out = w.ndim - n_in
    if policy.scaling == "tensorwise":
        sx, sw = current_scale(x, E4M3), current_scale(w, E4M3)
        xq, wq = quantize(x, E4M3, sx), quantize(w, E4M3, sw)
        y = _scaled_dot(xq, wq, (xc, wc), sx * sw, out)
        # The backward reuses the float8 operands (one scale serves both orientations):
        # half the bytes of keeping the compute-dtype ones.
        return y, (xq, sx, wq, sw)
    # rowwise: x per row (amax over its contracted axes), w per output column (over its own).
    sx, sw = current_scale(x, E4M3, xc), current_scale(w, E4M3, wc)
    xq, wq = quantize(x, E4M3, sx), quantize(w, E4M3, sw)
    s = _to_out(sx, len(lead), n_out) * sw.reshape(sw.shape[n_in:])
    y = _scaled_dot(xq, wq, (xc, wc), s, out)
    return y, (x, w)


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def fp8_dot(x: Array, w: Array, n_in: int, policy: Fp8Policy) -> Array:
    """``x · w`` over ``x``'s last ``n_in`` axes and ``w``'s first, with float8 operands in the
    forward and in both gradient products.

    Parameters
    ----------
    x : Array
        ``[..., *in]`` in the compute dtype.
    w : Array
        ``[*in, *out]`` in ``x``'s dtype.
    n_in : int
        Number of contracted axes.
    policy : Fp8Policy
        The scaling.

    Returns
    -------
    Array
        ``[..., *out]`` in ``x``'s dtype. Its gradient casts the output gradient to e5m2 (with
        the policy's scaling) and computes ``dx`` and ``dw`` as float8 products.
    """
    return _forward(x, w, n_in, policy)[0]


def _fp8_dot_fwd(x: Array, w: Array, n_in: int, policy: Fp8Policy) -> tuple[Array, tuple]:
    return _forward(x, w, n_in, policy)


def _fp8_dot_bwd(n_in: int, policy: Fp8Policy, res: tuple, g: Array) -> tuple[Array, Array]:
    # g has x's (= w's) dtype: the forward returned it; both gradients are cast back to it.
    return _backward(n_in, policy, res, g, g.dtype)


def _backward(n_in: int, policy: Fp8Policy, res: tuple, g: Array, out: Any) -> tuple[Array, Array]:
    """`fp8_dot`'s two gradient products from `_forward`'s residuals, in dtype ``out``."""
    n_lead = g.ndim - (res[2] if policy.scaling == "tensorwise" else res[1]).ndim + n_in
    lead = tuple(range(n_lead))
    gout = tuple(range(n_lead, g.ndim))  # the gradient's output axes
    if policy.scaling == "tensorwise":
        xq, sx, wq, sw = res
        wout = tuple(range(n_in, wq.ndim))
        sg = current_scale(g, E5M2)
        gq = quantize(g, E5M2, sg)
        dx = _scaled_dot(gq, wq, (gout, wout), sg * sw, out)  # [..., *in]
        dw = _scaled_dot(xq, gq, (lead, lead), sx * sg, out)  # [*in, *out]
        return dx, dw
    x, w = res
    n_out = w.ndim - n_in
    wout = tuple(range(n_in, w.ndim))
    # dx = g · wᵀ keeps g's rows and w's input axes: scale each along those.
    sg_r = current_scale(g, E5M2, gout)  # [..., 1...]
    sw_r = current_scale(w, E4M3, wout)  # [*in, 1...]
    dx = _scaled_dot(
        quantize(g, E5M2, sg_r),
        quantize(w, E4M3, sw_r),
        (gout, wout),
        _to_out(sg_r, n_lead, n_in) * sw_r.reshape(sw_r.shape[:n_in]),
        out,
    )
    # dw = xᵀ · g keeps x's input axes and g's output axes: scale each per column.
    sx_c = current_scale(x, E4M3, lead)  # [1..., *in]
    sg_c = current_scale(g, E5M2, lead)  # [1..., *out]
    dw = _scaled_dot(
        quantize(x, E4M3, sx_c),
        quantize(g, E5M2, sg_c),
        (lead, lead),
        sx_c.reshape(sx_c.shape[n_lead:] + (1,) * n_out) * sg_c.reshape(sg_c.shape[n_lead:]),
        out,
    )
    return dx, dw


fp8_dot.defvjp(_fp8_dot_fwd, _fp8_dot_bwd)


@dataclass(frozen=True)
class Fp8HeadProducts:
    """The LM head's products in float8 (``Precision.fp8_lm_head``): a
    `tjx.kernels.HeadProducts` for the chunked loss (`tjx.kernels.chunked_cross_entropy`), whose
    custom VJP calls it per chunk. Each chunk's logits and, in its backward, ``dh = dlogits · wᵀ``
    and ``dw = hᵀ · dlogits`` are `fp8_dot`'s own forward and backward products (`_forward`,
    `_backward`: one definition of the formats and the current scaling): e4m3 hidden states and
    kernel, an e5m2 logits gradient, ``policy``'s scaling. The scales are those of the tensors
    each product casts: one chunk's hidden states and logits gradient (the whole ``[tokens,
    vocab]`` gradient never exists), the whole kernel. The results are the loss's: the logits
    in the chunk's ``stored`` dtype, the gradients in float32 (the loss's accumulator).

    Parameters
    ----------
    policy : Fp8Policy
        The scaling (``Precision.fp8_scaling``).
    """

    policy: Fp8Policy = field(default_factory=Fp8Policy)

    def forward(self, h: Array, w: Array, stored: Any) -> tuple[Array, tuple]:
        """``h [c, d] · w [d, vocab]`` in ``stored``, and the residuals for `backward`."""
        return _forward(h, w, 1, self.policy, stored)

    def backward(self, res: tuple, dlogits: Array) -> tuple[Array, Array]:
        """``(dlogits · wᵀ, hᵀ · dlogits)`` in float32, from `forward`'s residuals."""
        return _backward(1, self.policy, res, dlogits, jnp.float32)


def check_fp8(config: Any, cls: str) -> None:
    """``precision.matmul="fp8"`` only where every linear product can take it: a `Dense`
    (attention and MLP projections, MLA's included). The MoE experts' einsums have no float8
    path, and delayed scaling keeps one amax history per tensor, not per row (`tjx.nn.fp8`):
    each is refused with one line naming it and the fix."""
    p = config.precision
    if not p.fp8:
        return
    if p.fp8_recipe == "delayed" and p.fp8_scaling != "tensorwise":
        raise ValueError(
            f"{cls}.precision.fp8_recipe='delayed' scales tensorwise only (an activation row's "
            f"amax history would describe other tokens every step); got fp8_scaling="
            f"{p.fp8_scaling!r}: use fp8_scaling='tensorwise' or fp8_recipe='current'"
        )
    if config.moe.num_experts > 0:
        raise ValueError(
            f"{cls}.precision.matmul='fp8' cannot run the MoE experts' products (moe.num_experts="
            f"{config.moe.num_experts}) in float8; use matmul='default' for a MoE model"
        )
    if p.fp8_lm_head:
        check_fp8_lm_head(config, cls)


def check_fp8_lm_head(config: Any, cls: str) -> None:
    """``precision.fp8_lm_head`` only where the untied LM head's products are the chunked
    XLA loss's (`tjx.nn.fp8.Fp8HeadProducts`): one line naming the fault and the fix."""
    key = f"{cls}.precision.fp8_lm_head=True"
    if "cross_entropy_impl" in type(config).unused_fields:
        raise ValueError(f"{key}: {cls} has no vocabulary loss head; set fp8_lm_head=False")
    if config.tie_embeddings:
        raise ValueError(
            f"{key}: the head is the token embedding table (tie_embeddings=True), which stays in "
            "the compute dtype; set tie_embeddings=False or fp8_lm_head=False"
        )
    if config.cross_entropy_impl == "pallas":
        raise ValueError(
            f"{key}: the fused (pallas) cross-entropy has no float8 path; set "
            "cross_entropy_impl='xla' (or 'auto') or fp8_lm_head=False"
        )
