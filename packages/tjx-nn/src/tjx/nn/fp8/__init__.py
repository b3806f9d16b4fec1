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
- This subpackage is the policy: which format each operand takes, which amax a scale comes from
  (the tensor, one per row, or a history) and the product's custom VJP, whose backward casts
  the output gradient and runs both gradient products in float8 too.

Formats. Forward operands (activations, weights) are e4m3 (more mantissa); the output
gradient is e5m2 (more range: gradients span more decades than activations). That is
torchtitan's tensorwise recipe (torchao ``Float8LinearConfig``'s default), MaxText's ``fp8``
and flax's ``Fp8DotGeneralOp``; NVIDIA Transformer Engine's ``HYBRID`` format is the same
choice. torchao's rowwise recipe casts the gradient to e4m3 with power-of-two scales instead;
here both scalings keep e5m2 so that a run switching scaling changes one thing.

Modules: ``scaling`` (the formats, `amax`, `current_scale`, `quantize`), ``dot`` (`Fp8Policy`,
`fp8_dot` and its custom VJP, the LM head's `Fp8HeadProducts`), ``delayed`` (delayed scaling:
`Fp8Meta`, `init_meta`, `advance_meta`, `delayed_dot`, `delayed_scale`,
`update_amax_history`) and ``checks`` (`check_fp8`, `check_fp8_lm_head`: what a config may ask).
"""

from __future__ import annotations

from tjx.nn.fp8.checks import check_fp8, check_fp8_lm_head
from tjx.nn.fp8.delayed import (
    META_ROWS,
    Fp8Meta,
    advance_meta,
    delayed_dot,
    delayed_scale,
    init_meta,
    update_amax_history,
)
from tjx.nn.fp8.dot import Fp8HeadProducts, Fp8Policy, fp8_dot
from tjx.nn.fp8.scaling import (
    E4M3,
    E5M2,
    RECIPES,
    SCALINGS,
    amax,
    current_scale,
    fp8_max,
    quantize,
)

__all__ = [
    "E4M3",
    "E5M2",
    "META_ROWS",
    "RECIPES",
    "SCALINGS",
    "Fp8HeadProducts",
    "Fp8Meta",
    "Fp8Policy",
    "advance_meta",
    "amax",
    "check_fp8",
    "check_fp8_lm_head",
    "current_scale",
    "delayed_dot",
    "delayed_scale",
    "fp8_dot",
    "fp8_max",
    "init_meta",
    "quantize",
    "update_amax_history",
]
