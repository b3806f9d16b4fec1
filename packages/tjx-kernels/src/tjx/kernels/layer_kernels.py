"""Who runs a model's norms and gated linear unit: tjx's own XLA layers or tokamax's kernels.

Two settings of a model, ``norm.impl`` and ``mlp.impl`` (:data:`LAYER_IMPLEMENTATIONS`), each
``auto``, ``xla`` or ``tokamax``; this module holds their rule and imports no tokamax
(:mod:`tjx.kernels.tokamax_ops` runs the kernels):

* ``norm.impl: tokamax`` runs ``tokamax.layer_norm`` (LayerNorm; RMSNorm as its
  ``subtract_mean=False``), forward and backward. tokamax 0.0.12 has no Mosaic GPU norm: its GPU
  norm is a **Pallas Triton** kernel (with a Triton backward), so it needs a CUDA GPU that Triton
  serves (sm80 and later) and takes bfloat16, float16 and float32 inputs.
* ``mlp.impl: tokamax`` runs ``tokamax.gated_linear_unit``'s **Mosaic GPU** kernel (sm90, sm100)
  for ``act(x · W_gate) · (x · W_up)``: SwiGLU and GeGLU (tanh form) only, with no biases, 16-bit
  compute, ``d_model`` and ``mlp.dim`` multiples of 64 (the kernel's tiles). tokamax 0.0.12 builds
  that kernel with jax's ``plgpu.TransposeTransform``, which jax 0.10.2 (here) does not have and
  without which the kernel failed on an H200 with jax 0.11.2 (2026-11-30, measured): on such a jax
  naming it is refused in one line (`jax_builds_tokamax_glu`).

``auto`` takes tokamax's kernel for a layer only where it was measured faster: on a CUDA GPU whose
launch table (``launch_tables.json``) holds, for that device kind, a ``norm-<dtype>`` or
``glu-<dtype>`` timing of both ``xla`` and ``tokamax`` (the GPU suite's, for kernels it found
correct) with tokamax the faster, and where the kernel can serve the model. No such timing is
in the table yet, so ``auto`` is XLA everywhere; no estimate chooses a kernel.
"""

from __future__ import annotations

import importlib
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels.choice import (
    TOKAMAX_DTYPES,
    TOKAMAX_VERSION,
    AutoChoice,
    Target,
    current_target,
    installed,
)
from tjx.kernels.launch import dtype_name, measured_bucket

__all__ = [
    "GLU_ACTIVATIONS",
    "GLU_TILE",
    "LAYER_IMPLEMENTATIONS",
    "glu_tokamax_reason",
    "jax_builds_tokamax_glu",
    "layer_auto",
    "measured_layer_timings",
    "norm_tokamax_reason",
    "resolve_glu",
    "resolve_norm",
]

#: What ``norm.impl`` and ``mlp.impl`` may name.
LAYER_IMPLEMENTATIONS: tuple[str, ...] = ("auto", "xla", "tokamax")
#: The implementations a launch table's ``norm-<dtype>`` / ``glu-<dtype>`` timings may hold.
_MEASURED = ("xla", "tokamax")
#: The gated units' inner activations tokamax's GLU runs (tjx's swiglu: silu; geglu: gelu).
GLU_ACTIVATIONS: tuple[str, ...] = ("silu", "gelu")
#: ``d_model`` and ``mlp.dim`` must be multiples of this: the Mosaic GPU kernel's K and N tiles
#: (its heuristic config, tile_k = tile_n = 64); rows are padded to its M tile by the wrapper.
GLU_TILE = 64
#: Input dtypes tokamax's Triton norm takes.
NORM_DTYPES: tuple[jnp.dtype, ...] = (*TOKAMAX_DTYPES, jnp.dtype(jnp.float32))


#: The piece of jax's Mosaic GPU Pallas that tokamax 0.0.12's sm90 gated linear unit lays its
#: shared-memory tiles out with (``pallas_mosaic_gpu_kernel_sm90.py``).
GLU_NEEDS = "TransposeTransform"


def jax_builds_tokamax_glu() -> bool:
    """Whether this jax has what tokamax's gated linear unit kernel is built with (`GLU_NEEDS`).

    jax 0.10.2 has no ``plgpu.TransposeTransform``, and on an H200 with jax 0.11.2 the kernel
    failed to build for want of it (``AttributeError``, the GPU suite, 2026-11-30): asked here,
    without tokamax, so that naming the kernel on such a jax is one line before anything runs.
    """
    try:
        plgpu = importlib.import_module("jax.experimental.pallas.mosaic_gpu")
    except ImportError:  # a jax without Mosaic GPU Pallas: nothing of it builds
        return False
    return hasattr(plgpu, GLU_NEEDS)


def _missing(setting: str) -> str:
    return (
        f"{setting} 'tokamax' needs the tokamax package: pip install 'tjx-kernels[gpu]' "
        f"(tokamax=={TOKAMAX_VERSION})"
    )


def _device(t: Target) -> str:
    if not t.cuda:
        return t.platform
    cc = t.compute_capability
    return f"{t.device_kind or 'a CUDA GPU'} (sm_{'?' if cc is None else f'{cc[0]}{cc[1]}'})"


def norm_tokamax_reason(dtype: Any, t: Target) -> str | None:
    """Why ``norm.impl: tokamax`` cannot serve norms of inputs in ``dtype`` on ``t`` (None: it can).

    The device (a CUDA GPU of sm80 or later: tokamax's norm is a Triton kernel), the dtype,
    then whether tokamax is installed.
    """
    cc = t.compute_capability
    if not t.cuda or cc is None or cc < (8, 0):
        return (
            "norm.impl 'tokamax' runs tokamax's Pallas Triton norm, which needs a CUDA GPU of "
            f"sm80 or later; this run's device is {_device(t)}; use 'auto' or 'xla'"
        )
    if jnp.dtype(dtype) not in NORM_DTYPES:
        return (
            f"norm.impl 'tokamax': compute dtype {jnp.dtype(dtype).name} is not supported by "
            "tokamax's norm; supported: bfloat16, float16, float32"
        )
    return None if installed() else _missing("norm.impl")


def glu_tokamax_reason(
    dtype: Any, t: Target, *, activation: str | None, bias: bool, d_model: int, mlp_dim: int
) -> str | None:
    """Why ``mlp.impl: tokamax`` cannot serve the MLP on ``t`` (None: it can).

    Parameters
    ----------
    dtype
        The compute dtype (the products' inputs).
    t : Target
        The device.
    activation : str or None
        The gated unit's inner activation (``"silu"``, ``"gelu"``); None: the MLP is not one
        tokamax's GLU computes (not gated, gpt-oss's clamped unit).
    bias : bool
        The projections have biases (tokamax's GLU has none).
    d_model, mlp_dim : int
        The MLP's input and hidden widths.
    """
    cc = t.compute_capability
    if not t.cuda or cc is None or not (9, 0) <= cc < (11, 0):
        return (
            "mlp.impl 'tokamax' runs tokamax's Mosaic GPU gated linear unit, which needs an sm90 "
            f"or sm100 GPU (Hopper, Blackwell); this run's device is {_device(t)}; use 'auto' "
            "or 'xla'"
        )
    if activation not in GLU_ACTIVATIONS:
        return (
            "mlp.impl 'tokamax' computes act(x·W_gate)·(x·W_up): it serves mlp.activation "
            "swiglu and geglu only; use 'auto' or 'xla'"
        )
    if bias:
        return "mlp.impl 'tokamax': tokamax's gated linear unit has no biases; set use_bias false"
    if jnp.dtype(dtype) not in TOKAMAX_DTYPES:
        return (
            f"mlp.impl 'tokamax': compute dtype {jnp.dtype(dtype).name} is not supported by its "
            "Mosaic GPU kernel; supported: bfloat16, float16"
        )
    if d_model % GLU_TILE or mlp_dim % GLU_TILE:
        return (
            f"mlp.impl 'tokamax': d_model ({d_model}) and mlp.dim ({mlp_dim}) must be multiples "
            f"of {GLU_TILE} (the kernel's tiles)"
        )
    if not jax_builds_tokamax_glu():
        return (
            f"mlp.impl 'tokamax': tokamax {TOKAMAX_VERSION}'s gated linear unit is built with "
            f"jax's plgpu.{GLU_NEEDS}, which jax {jax.__version__} does not have (the kernel "
            "cannot compile); use 'auto' or 'xla'"
        )
    return None if installed() else _missing("mlp.impl")


def measured_layer_timings(layer: str, device_kind: str, dtype: Any) -> dict[str, float]:
    """Implementation → measured forward+backward ms of ``layer`` (``"norm"``, ``"glu"``) on
    ``device_kind`` for inputs of ``dtype`` (the launch table's ``<layer>-<dtype>`` bucket;
    empty when nothing was measured)."""
    name = dtype_name(dtype)
    return {} if name is None else measured_bucket(f"{layer}-{name}", device_kind, _MEASURED)


def layer_auto(
    layer: str, dtype: Any, t: Target | None = None, *, servable: bool = True
) -> AutoChoice:
    """What ``auto`` takes for ``layer`` (``"norm"``, ``"glu"``) with inputs of ``dtype`` on ``t``
    (default: the current target): tokamax only where both were measured on that device kind
    and tokamax was the faster (module docstring); ``servable``: tokamax's kernel can serve the
    model there (its reason is None)."""
    t = current_target() if t is None else t
    if not t.cuda:
        return AutoChoice(("xla",), f"tokamax's {layer} kernel is CUDA-only; XLA on {t.platform}")
    kind = t.device_kind or "this GPU"
    bucket = f"{layer}-{dtype_name(dtype) or jnp.dtype(dtype).name}"
    times = measured_layer_timings(layer, kind, dtype)
    if set(times) != set(_MEASURED):
        return AutoChoice(
            ("xla",), f"no tjx measurement of tokamax's {layer} against XLA on {kind} for {bucket}"
        )
    shown = ", ".join(f"{k} {times[k]:.3g} ms" for k in sorted(times, key=times.__getitem__))
    if not servable:
        return AutoChoice(("xla",), f"tokamax cannot serve this model's {layer}; XLA ({shown})")
    order = tuple(sorted(_MEASURED, key=times.__getitem__))
    return AutoChoice(order, f"fastest measured on {kind} for {bucket}: {shown}")


def _resolve(setting: str, impl: str, reason: str | None, layer: str, dtype: Any, t: Target) -> str:
    if impl not in LAYER_IMPLEMENTATIONS:
        raise ValueError(
            f"{setting} must be one of {', '.join(LAYER_IMPLEMENTATIONS)}; got {impl!r}"
        )
    if impl == "tokamax" and reason is not None:
        raise ValueError(reason)
    if impl != "auto":
        return impl
    return layer_auto(layer, dtype, t, servable=reason is None).kernel


def resolve_norm(impl: str, dtype: Any, *, target: Target | None = None) -> str:
    """``"xla"`` or ``"tokamax"``: who runs norms of inputs in ``dtype`` for a ``norm.impl``
    setting on ``target`` (default: the current target); resolved once, when a model is built.

    Raises
    ------
    ValueError
        An unknown name, or ``tokamax`` where it cannot run (one line, `norm_tokamax_reason`).
    """
    t = current_target() if target is None else target
    return _resolve("norm.impl", impl, norm_tokamax_reason(dtype, t), "norm", dtype, t)


def resolve_glu(
    impl: str,
    dtype: Any,
    *,
    activation: str | None,
    bias: bool,
    d_model: int,
    mlp_dim: int,
    target: Target | None = None,
) -> str:
    """``"xla"`` or ``"tokamax"``: who runs a gated MLP's unit for an ``mlp.impl`` setting
    (arguments as `glu_tokamax_reason`; ``target`` default: the current target).

    Raises
    ------
    ValueError
        An unknown name, or ``tokamax`` where it cannot serve the MLP (one line).
    """
    t = current_target() if target is None else target
    reason = glu_tokamax_reason(
        dtype, t, activation=activation, bias=bias, d_model=d_model, mlp_dim=mlp_dim
    )
    return _resolve("mlp.impl", impl, reason, "glu", dtype, t)
