"""OpenXLA's tokamax kernels in tjx: the one module of tjx-kernels that imports tokamax.

Attention (below), and the norms and gated linear unit of ``norm.impl``/``mlp.impl: tokamax``
(`tokamax_norm`, `tokamax_glu`; their rule is :mod:`tjx.kernels.layer_kernels`').

tokamax (PyPI, Apache 2.0) ships Pallas **Mosaic GPU** flash attention for sm90 (Hopper) and
sm100 (Blackwell), forward and backward, with a causal backward in bfloat16 (jax's own
``attention_mgpu`` refuses both). ``attention_impl: tokamax`` runs that kernel and only it: on an
sm90/sm100 GPU it is ``tokamax.dot_product_attention(..., implementation="mosaic_gpu")``;
anywhere else (a CPU, a TPU, an A100) naming it is one ``ValueError`` line before anything runs
— tokamax's Triton kernel for older GPUs is not offered, since tjx's own Pallas kernel is that
kind of kernel already. ``auto`` never takes it until the launch table holds a measured tokamax
timing for the device kind (:mod:`tjx.kernels.choice`).

tokamax is an optional dependency (``pip install 'tjx-kernels[gpu]'``, pinned to
`TOKAMAX_VERSION`): it is imported here, lazily, when the kernel runs, never when tjx.kernels is
imported; resolving the name only looks for the package (the rule, `tokamax_reason`, lives in
:mod:`tjx.kernels.choice` with the other kernels'), and when it is absent naming the kernel is one
line saying what to install.

How tjx's conventions reach tokamax's public API (`tokamax_attention`): the layout
``[batch, seq, heads, head_dim]`` and GQA's head grouping are tokamax's own; ``causal`` is
``is_causal`` (top-left aligned in both); ``kv_lengths`` is ``key_value_seq_lengths`` (the
kernel's per-row key range); a sliding window over a self-attention call is
``local_window_size`` (keys ``i - window < j``, and ``j < i + window`` without ``causal``),
another call's window is folded into the mask; segment ids become a boolean mask ``[b, 1, s_q,
s_k]`` (the Mosaic kernel reads it tile by tile: correct for any ids, ``b·s²`` bytes per call);
``softcap`` is ``logits_soft_cap`` (both cap the scaled logits before the masks). A row that
sees no key is zeros, as in every tjx kernel (tokamax's XLA path averages the values there).

Compiling for a GPU that is not here (``tjx.kernels.target`` naming an sm90 GPU on a CPU host,
the trainer's ``--plan h100``): tokamax checks the hardware of the *default* device (the CPU)
before it lowers. `cross_lowering_hooks` turns its presence checks off through its public absl
flag ``--tokamax_cross_compile`` and makes its compute-capability check answer from tjx's target
(a private hook: tokamax has no public way to name the target's capability).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import sys
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels._checks import AttentionShapes, split_segment_ids
from tjx.kernels.choice import (  # the rule lives with the other kernels' (no tokamax there)
    MISSING,
    TOKAMAX_DTYPES,
    TOKAMAX_MAX_HEAD_DIM,
    TOKAMAX_VERSION,
    current_target,
    installed,
    tokamax_reason,
)
from tjx.kernels.layer_kernels import GLU_ACTIVATIONS
from tjx.kernels.mask import AttentionMask
from tjx.kernels.reference import attention_mask, rows_seeing_a_key, zero_unseen_rows

Array = jax.Array

__all__ = [
    "MISSING",
    "TOKAMAX_DTYPES",
    "TOKAMAX_MAX_HEAD_DIM",
    "TOKAMAX_VERSION",
    "cross_lowering_hooks",
    "installed",
    "load",
    "tokamax_attention",
    "tokamax_glu",
    "tokamax_norm",
    "tokamax_reason",
]

#: The tokamax implementation that runs on a GPU (its registered name).
MOSAIC_GPU = "mosaic_gpu"


class _CacheMissFilter(logging.Filter):
    """Drop tokamax's "Autotuning cache miss" warning: tokamax ships no attention timings for
    H100/H200, so every call misses and takes its heuristic config (what tjx runs and prices);
    the warning would print the whole call's signature once per trace."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Autotuning cache miss")


_READY: list[Any] = []  # the module, once `load` has prepared it


def load() -> Any:
    """Import tokamax (once), prepare it for tjx (below) and return the module.

    Raises
    ------
    ImportError
        tokamax is not installed (message: `MISSING`).
    """
    if _READY:
        return _READY[0]
    if sys.modules.get("tokamax") is None and not installed():
        raise ImportError(MISSING)
    # tokamax reads its absl flags on first use and, if nobody parsed absl's flags yet, parses
    # the process's own command line (the trainer's --config ... would be refused as unknown
    # flags): mark them parsed at their defaults first (absl's public API). absl-py comes with
    # tokamax (its dependency), not with tjx-kernels: no inferred requirement.
    try:
        from absl import flags  # pants: no-infer-dep

        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        module = importlib.import_module("tokamax")  # pants: no-infer-dep
    except ImportError as err:  # installed but broken (a dependency missing)
        raise ImportError(f"{MISSING}; importing it failed: {err}") from None
    logging.getLogger("absl").addFilter(_CacheMissFilter())
    _kernel_aliases()
    _READY.append(module)
    return module


def _kernel_aliases() -> None:
    """Give jax's ``plgpu.kernel`` back the ``out_shape``/``scratch_shapes`` spellings tokamax uses.

    tokamax 0.0.12 builds its Mosaic GPU kernels with ``plgpu.kernel(out_shape=...,
    scratch_shapes=...)``, aliases jax 0.10 deprecated (for ``out_type``/``scratch_types``) and
    jax 0.11 removed: there they fall through to the mesh's keywords and every call fails with
    "Mesh.__init__() got an unexpected keyword argument 'out_shape'" (measured on an H200 with
    jax 0.11.2, 2026-11-28). Where jax's ``kernel`` lacks the alias, a wrapper renames the two
    keywords and calls jax's own; nothing else changes. tokamax reads ``plgpu.kernel`` from the
    module at each call, so the wrapper is what it calls.
    """
    plgpu: Any = importlib.import_module("jax.experimental.pallas.mosaic_gpu")
    if "out_shape" in inspect.signature(plgpu.kernel).parameters:
        return  # jax <= 0.10 keeps the aliases
    real: Callable[..., Any] = plgpu.kernel
    renames = {"out_shape": "out_type", "scratch_shapes": "scratch_types"}

    def kernel(*args: Any, **kwargs: Any) -> Any:
        return real(*args, **{renames.get(k, k): v for k, v in kwargs.items()})

    plgpu.kernel = kernel


_HOOKED = False


def cross_lowering_hooks() -> None:
    """Let tokamax lower its Mosaic GPU kernel for tjx's target when that GPU is not here.

    Called before each tokamax call; does nothing unless the current target is a CUDA GPU and
    the default backend is not (cross-lowering: the deviceless plan). Then it sets tokamax's
    public absl flag ``--tokamax_cross_compile`` (its presence checks for Triton and Mosaic GPU
    answer yes) and, once, wraps tokamax's private ``gpu_utils._compute_capability`` so that a
    question about the default device answers with the target's capability: tokamax picks its
    sm90 or sm100 kernel (and refuses others) by the host's device, which here is the CPU, and
    has no public way to be told the target's; the question about a named host device (an
    op's ``supported_on``, e.g. the gated linear unit's) gets the same answer. Private, so here
    only (tokamax==0.0.12).
    """
    global _HOOKED
    t = current_target()
    if not t.cuda or jax.default_backend() == "gpu":
        return
    load()  # absl-py below is tokamax's dependency, there once tokamax is
    from absl import flags  # pants: no-infer-dep

    flags.FLAGS["tokamax_cross_compile"].value = True
    if _HOOKED:
        return
    gpu_utils: Any = importlib.import_module("tokamax._src.gpu_utils")  # pants: no-infer-dep
    real: Callable[..., float | None] = gpu_utils._compute_capability

    def capability(device: Any = None) -> float | None:
        target = current_target()
        # The host's own device stands for the target too: tokamax's ops check the device their
        # arguments live on (``supported_on``), which while cross-lowering is the CPU.
        host = device is None or getattr(device, "platform", "gpu") != "gpu"
        cross = host and target.cuda and jax.default_backend() != "gpu"
        if cross and target.compute_capability is not None:
            major, minor = target.compute_capability
            return float(f"{major}.{minor}")
        return real(device)

    gpu_utils._compute_capability = capability
    _HOOKED = True


def _visible_rows(shapes: AttentionShapes, mask: AttentionMask) -> Array | None:
    """Bool [b, s_q]: whether each query row sees a key (None: every row does, by construction:
    with no ids, lengths or one-sided window, key 0 or the row's own key is always visible)."""
    bidirectional = mask.window is not None and not mask.causal
    if mask.segment_ids is None and mask.kv_lengths is None and not bidirectional:
        return None
    return rows_seeing_a_key(shapes, mask)


def tokamax_attention(
    q: Array,
    k: Array,
    v: Array,
    mask: AttentionMask,
    *,
    scale: float,
    shapes: AttentionShapes,
    softcap: float | None = None,
    implementation: str = MOSAIC_GPU,
) -> Array:
    """tjx's attention call through ``tokamax.dot_product_attention`` (module docstring).

    Parameters
    ----------
    q, k, v, mask, scale, softcap
        As ``tjx.kernels.attention`` (validated there, the mask's chunk folded into its segment
        ids; ``scale`` resolved to a float; no sinks).
    shapes : AttentionShapes
        The call's sizes (``tjx.kernels._checks.check_qkv``).
    implementation : str
        tokamax's implementation: ``"mosaic_gpu"`` (what ``attention_impl: tokamax`` runs), or
        ``"xla"``, tokamax's reference path, which runs anywhere: the CPU tests check this
        wrapper's conventions through it.

    Returns
    -------
    Array
        ``[batch, q_len, heads, head_dim]`` in ``q``'s dtype; rows that see no key are zeros.
    """
    tokamax = load()
    if implementation == MOSAIC_GPU:
        cross_lowering_hooks()
    causal, window = mask.causal, mask.window
    dense = None
    local: tuple[int, int] | None = None
    if mask.segment_ids is not None:  # any ids, any layout: a dense mask (module docstring)
        q_ids, kv_ids = split_segment_ids(mask.segment_ids)
        assert q_ids is not None and kv_ids is not None
        same = (q_ids[:, :, None] == kv_ids[:, None, :]) & (kv_ids[:, None, :] != 0)
        dense = same[:, None]
    if window is not None:
        if shapes.q_len == shapes.kv_len:  # tokamax's window is by the query's own position
            local = (window - 1, 0 if causal else window - 1)
        else:  # its positions are the keys': fold this call's window into the mask
            near = attention_mask(shapes, AttentionMask(causal=causal, window=window))
            assert near is not None
            dense = near if dense is None else dense & near
    lengths = None if mask.kv_lengths is None else jnp.asarray(mask.kv_lengths, jnp.int32)
    out = tokamax.dot_product_attention(
        q,
        k,
        v,
        mask=dense,
        scale=scale,
        is_causal=causal,
        key_value_seq_lengths=lengths,
        local_window_size=local,
        logits_soft_cap=softcap,
        implementation=implementation,
    )
    visible = _visible_rows(shapes, mask.replace(kv_lengths=lengths))
    return zero_unseen_rows(out.astype(q.dtype), visible)


#: tokamax's names of its norm and gated linear unit GPU kernels (0.0.12: no Mosaic GPU norm).
NORM_KERNEL = "triton"
GLU_KERNEL = "mosaic"
#: The gated linear unit's row tile (the Mosaic GPU kernel's heuristic ``tile_m``): rows are
#: padded to a multiple of it (a decoding step's few rows; training's batch · seq already is).
GLU_ROWS = 128


def tokamax_norm(
    x: Array,
    scale: Array,
    bias: Array | None,
    *,
    eps: float,
    rms: bool,
    out_dtype: Any,
    implementation: str = NORM_KERNEL,
) -> Array:
    """LayerNorm (RMSNorm with ``rms``) of ``x`` ``[..., d]`` through ``tokamax.layer_norm``.

    Parameters
    ----------
    x : Array
        The input ``[..., d]``.
    scale, bias : Array
        ``[d]`` (``bias`` None: none; RMSNorm has none). Gemma's ``1 + w`` is the caller's.
    eps : float
        Added to the variance (mean square).
    rms : bool
        RMSNorm (no centring): tokamax's ``subtract_mean=False``.
    out_dtype
        The output dtype (the compute dtype): tokamax returns ``x``'s, cast once here.
    implementation : str
        ``"triton"``, tokamax's GPU kernel (what ``norm.impl: tokamax`` runs, forward and
        backward), or ``"xla"``, its reference path (the CPU tests).

    Returns
    -------
    Array
        ``x̂ · scale (+ bias)`` in ``out_dtype``, statistics in float32 (float64 stays).
    """
    tokamax = load()
    if implementation != "xla":
        cross_lowering_hooks()
    y = tokamax.layer_norm(
        x, scale, bias, epsilon=eps, subtract_mean=not rms, implementation=implementation
    )
    return y.astype(out_dtype)  # type: ignore[no-any-return]


def gelu_tanh(x: Array) -> Array:
    """GELU's tanh form (GeGLU's, tjx's ``gelu``): a named function, since tokamax writes its
    op's arguments, the activation among them, into the program as JSON (a partial cannot be)."""
    return jax.nn.gelu(x, approximate=True)


def tokamax_glu(
    x: Array, kernels: tuple[Array, Array], *, activation: str, implementation: str = GLU_KERNEL
) -> Array:
    """``act(x · W_gate) · (x · W_up)`` through ``tokamax.gated_linear_unit``, forward only.

    A call that is differentiated runs tokamax's XLA path for its forward (tokamax 0.0.12
    computes the residuals it keeps with XLA); tjx-nn differentiates around this call instead
    (its own backward), so that the kernel runs in training too.

    Parameters
    ----------
    x : Array
        ``[..., d]`` in the compute dtype (the kernels' dtype).
    kernels : (Array, Array)
        The gate's and the up projection's ``[d, f]`` kernels.
    activation : str
        ``"silu"`` (SwiGLU) or ``"gelu"`` (GeGLU, tanh form), `GLU_ACTIVATIONS`.
    implementation : str
        ``"mosaic"``, tokamax's Mosaic GPU kernel (sm90/sm100), or ``"xla"``, its reference path.

    Returns
    -------
    Array
        ``[..., f]`` in ``x``'s dtype; the unit is computed in float32 from the rounded products.
    """
    functions: dict[str, Callable[[Array], Array]] = {"silu": jax.nn.silu, "gelu": gelu_tanh}
    if activation not in functions:
        raise ValueError(f"tokamax_glu: activation must be one of {GLU_ACTIVATIONS}; got "
                         f"{activation!r}")  # fmt: skip
    tokamax = load()
    if implementation != "xla":
        cross_lowering_hooks()
    lead, d = x.shape[:-1], x.shape[-1]
    rows = x.reshape(-1, d)
    m = rows.shape[0]
    if m % GLU_ROWS:
        rows = jnp.pad(rows, ((0, -m % GLU_ROWS), (0, 0)))
    out = tokamax.gated_linear_unit(
        rows, kernels, activation=functions[activation], implementation=implementation
    )
    return out[:m].reshape(*lead, out.shape[-1])  # type: ignore[no-any-return]
