"""The float8 product with current scaling: `fp8_dot` (float8 operands in the forward and in
both gradient products, its custom VJP) under an `Fp8Policy`, and the LM head's products
(`Fp8HeadProducts`).

Scalings. *tensorwise*: one scale per operand (``amax(|t|) / fp8_max``). *rowwise* (torchao's
rowwise/axiswise recipe): one scale per row of the activation and per output column of the
weight, i.e. every operand is scaled along its non-contracted axes, so the scales factor out of
the sum and multiply the product's output; the backward re-casts the saved high-precision
operands along the axes its own products keep (per row of the gradient and per row of the
weight for the input gradient; per column of the activation and of the gradient for the
weight gradient).

The LM head (``Precision.fp8_lm_head``, off by default as torchtitan leaves ``output`` out).
Its product is the chunked loss's (``tjx.kernels.chunked_cross_entropy``), whose custom VJP
runs each chunk's logits and both gradient products itself; tjx-kernels depends on jax alone,
not on tjx.nn or flax, so the loss takes the products as an argument (its typed
``HeadProducts`` Protocol) and `Fp8HeadProducts` hands it `fp8_dot`'s own forward and
backward products (`_forward`, `_backward`, with the loss's result dtypes): the formats and the
scaling keep one definition. Current scaling only: delayed scaling's state is a `Dense`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from tjx.nn.fp8.scaling import E4M3, E5M2, SCALINGS, current_scale, quantize

Array = jax.Array


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
