"""Which attention kernel ``auto`` takes, by evidence: the target device and what was measured.

A :class:`Target` is the platform the step is lowered for (``"gpu"`` = CUDA, ``"tpu"``,
``"cpu"``...), the GPU's device kind and compute capability. It is the default device's unless a
:func:`target` block says otherwise (cross-lowering for an abstract H100 on a CPU machine).

:func:`auto_order` ranks the kernels ``auto`` may take for a (dtype, head_dim) on a target. On a
CUDA GPU the kernels measured on that device kind (the ``timings`` of its launch table, written by
the GPU suite for kernels it found correct) come first, fastest first; a kernel with no
measurement never beats one with. With no measurement, cuDNN wherever it can serve the call, then
XLA: the unmeasured Pallas and tokamax kernels are taken only by name (tokamax's Mosaic GPU
attention, :mod:`tjx.kernels.tokamax_ops`, needs an sm90/sm100 GPU and the optional tokamax
package; where either is missing it is neither ranked nor, by name, accepted). On a TPU and on
CPUs ``auto`` is XLA.
The order is also the fallback order: :func:`first_that_compiles` walks it, saying each step.
:func:`resolve_attention` turns an ``implementation`` name into the :class:`AttentionKernel` a
model holds, once, when it is built: every refusal (an unknown name, a kernel that cannot serve
the model here) is raised there, and ``tjx.kernels.attention`` only runs the kernel it is given.
A soft-capped call (Gemma 2's attention logits) leaves cuDNN out of the order, and the reason
says so: jax's cuDNN attention has no logit soft-capping.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import enum
import importlib.util
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels.launch import entry_key, load_launch_tables, norm_kind

#: What ``implementation`` / ``attention_impl`` may name: ``auto`` or one kernel.
IMPLEMENTATIONS: tuple[str, ...] = ("auto", "xla", "cudnn", "pallas", "tokamax")
#: The fused kernels ``auto`` may rank (Pallas and tokamax only where measured).
FUSED = ("cudnn", "pallas", "tokamax")
#: What ``auto`` takes with no measurement, in this order (the first that can serve the call).
UNMEASURED = ("cudnn", "xla")
#: cuDNN flash attention (through ``jax.nn.dot_product_attention``) takes these dtypes only.
CUDNN_DTYPES: tuple[jnp.dtype, ...] = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
#: Largest head_dim the Pallas kernel accepts (padded internally to a power of two).
PALLAS_MAX_HEAD_DIM = 256
#: Why cuDNN never serves a soft-capped call (an explicit request raises it).
CUDNN_SOFTCAP = (
    "`softcap` is not supported by implementation 'cudnn' (jax's cuDNN attention has no logit "
    "soft-capping); use 'auto', 'xla' or 'pallas'"
)
#: Why no fused kernel serves a call with attention sinks (an explicit request raises it).
FUSED_SINKS = (
    "`sinks` (attention sinks) are served by implementation 'xla' only (neither jax's cuDNN "
    "attention, tjx's Pallas kernel nor tokamax's adds a sink to the softmax yet); use 'auto' "
    "or 'xla'"
)
#: Why cuDNN never serves a bidirectional sliding window (an explicit request raises it).
CUDNN_WINDOW = (
    "`window` without `causal` is not supported by implementation 'cudnn' (cuDNN's sliding "
    "window looks back only); use 'xla' or 'pallas', or 'auto'"
)


class AttentionKernel(enum.StrEnum):
    """An attention kernel, resolved (:func:`resolve_attention`): what a model holds and
    ``tjx.kernels.attention`` runs without choosing again. Equal to its name (``"xla"``)."""

    XLA = "xla"
    CUDNN = "cudnn"
    PALLAS = "pallas"
    TOKAMAX = "tokamax"


@dataclasses.dataclass(frozen=True)
class Target:
    """The device a step is lowered for.

    ``platform`` is ``"gpu"`` only for CUDA GPUs (ROCm counts as ``"rocm"``); ``device_kind`` is
    jax's ``device_kind`` (``"NVIDIA H100 80GB HBM3"``); ``compute_capability`` e.g. ``(9, 0)``.
    """

    platform: str
    device_kind: str | None = None
    compute_capability: tuple[int, int] | None = None

    @property
    def cuda(self) -> bool:
        """Whether fused kernels (cuDNN, Triton) compile here."""
        return self.platform == "gpu"


_OVERRIDE: contextvars.ContextVar[Target | None] = contextvars.ContextVar(
    "tjx_target", default=None
)


def _capability(device: Any) -> tuple[int, int] | None:
    text = str(getattr(device, "compute_capability", "") or "")
    parts = text.split(".")
    if len(parts) < 2 or not all(p.isdigit() for p in parts[:2]):
        return None
    return int(parts[0]), int(parts[1])


def default_target() -> Target:
    """The default device as a :class:`Target` (no :func:`target` override consulted)."""
    try:
        backend = jax.default_backend()
        device = jax.devices()[0]
    except RuntimeError:  # pragma: no cover - no backend at all
        return Target("none")
    if backend != "gpu":
        return Target(backend, str(getattr(device, "device_kind", "")) or None)
    if "rocm" in str(getattr(device.client, "platform_version", "")).lower():
        return Target("rocm", str(device.device_kind))  # pragma: no cover - no ROCm here
    return Target("gpu", str(device.device_kind), _capability(device))


def lowering_for_cuda() -> bool:
    """Whether kernels are lowered for a CUDA GPU: inside a :func:`target` block, its platform;
    else the default backend (a test that only pretends the default device is a GPU still runs
    the Pallas kernel in interpret mode)."""
    override = _OVERRIDE.get()
    if override is not None:
        return override.cuda
    return jax.default_backend() == "gpu"


def current_target() -> Target:
    """The :func:`target` override when one is active, else :func:`default_target`."""
    override = _OVERRIDE.get()
    return default_target() if override is None else override


@contextlib.contextmanager
def target(
    platform: str, device_kind: str | None = None, compute_capability: tuple[int, int] | None = None
) -> Iterator[Target]:
    """Choose kernels for another device while building and tracing (cross-lowering), e.g.
    ``with target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)): jax.jit(f).trace(x).lower(
    lowering_platforms=("cuda",))``."""
    chosen = Target(platform, device_kind, compute_capability)
    token = _OVERRIDE.set(chosen)
    try:
        yield chosen
    finally:
        _OVERRIDE.reset(token)


def cudnn_max_head_dim(t: Target) -> int:
    """cuDNN's head_dim limit (jax's check: 256 from Hopper, sm_90, on; 128 before)."""
    return 256 if t.compute_capability is not None and t.compute_capability >= (9, 0) else 128


def cudnn_reason(dtype: Any, head_dim: int, t: Target) -> str | None:
    """Why cuDNN cannot serve (dtype, head_dim) on ``t`` (None when it can)."""
    if not t.cuda:
        return f"implementation='cudnn' needs a CUDA GPU; this run's device is {t.platform}"
    if jnp.dtype(dtype) not in CUDNN_DTYPES:
        name = jnp.dtype(dtype).name
        return f"`q` dtype {name} is not supported by cuDNN; supported: bfloat16, float16"
    limit = cudnn_max_head_dim(t)
    if head_dim % 8 != 0 or head_dim > limit:
        return (
            f"head_dim {head_dim} is not supported by cuDNN on this GPU; supported: multiples of 8 "
            f"up to {limit}"
        )
    return None


def pallas_reason(dtype: Any, head_dim: int, t: Target) -> str | None:
    """Why the Pallas kernel cannot serve (dtype, head_dim) on ``t`` (None when it can)."""
    if t.platform == "tpu":
        return "implementation='pallas' is a Triton (GPU) kernel; on a TPU use 'auto' or 'xla'"
    if head_dim > PALLAS_MAX_HEAD_DIM:
        return (
            f"head_dim {head_dim} is not supported by the Pallas kernel; supported: "
            f"1..{PALLAS_MAX_HEAD_DIM}"
        )
    if jnp.dtype(dtype) == jnp.dtype(jnp.float64):
        return "`q` dtype float64 is not supported by the Pallas kernel; use bf16/fp16/fp32"
    return None


# -- tokamax's attention (tjx.kernels.tokamax_ops runs it; its rule is here, without tokamax) --
#: The tokamax release tjx's wrapper was written and tested against (the ``gpu`` extra's pin).
TOKAMAX_VERSION = "0.0.12"
#: The line naming the kernel says when tokamax is not installed.
MISSING = (
    "attention_impl 'tokamax' needs the tokamax package: pip install 'tjx-kernels[gpu]' "
    f"(tokamax=={TOKAMAX_VERSION})"
)
#: Input dtypes the Mosaic GPU kernel takes (its products are bf16/fp16 with float32 logits).
TOKAMAX_DTYPES: tuple[jnp.dtype, ...] = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
#: Largest head_dim offered (the kernel pads the head to a multiple of 64; 256 is what was
#: compiled for an H100 here, forward and backward).
TOKAMAX_MAX_HEAD_DIM = 256


def installed() -> bool:
    """Whether tokamax can be imported here (without importing it)."""
    try:
        return importlib.util.find_spec("tokamax") is not None
    except (ImportError, ValueError):  # a broken or half-removed install
        return False


def tokamax_reason(dtype: Any, head_dim: int, t: Target, *, sinks: bool = False) -> str | None:
    """Why ``attention_impl 'tokamax'`` cannot serve (dtype, head_dim) on ``t`` (None: it can).

    The device first (tokamax's Mosaic GPU kernel needs sm90/sm100), then the call (dtype,
    head size, attention sinks), then whether tokamax is installed (`MISSING`).
    """
    cc = t.compute_capability
    if not t.cuda or cc is None or not (9, 0) <= cc < (11, 0):
        where = t.platform if not t.cuda else f"{t.device_kind or 'a CUDA GPU'} (sm_{_sm(cc)})"
        return (
            "implementation 'tokamax' runs tokamax's Mosaic GPU attention, which needs an sm90 "
            f"or sm100 GPU (Hopper, Blackwell); this run's device is {where}; use 'auto', 'xla' "
            "or 'pallas'"
        )
    if jnp.dtype(dtype) not in TOKAMAX_DTYPES:
        return (
            f"`q` dtype {jnp.dtype(dtype).name} is not supported by implementation 'tokamax' "
            "(its Mosaic GPU kernel multiplies in bfloat16/float16); supported: bfloat16, float16"
        )
    if not 1 <= head_dim <= TOKAMAX_MAX_HEAD_DIM:
        return (
            f"head_dim {head_dim} is not supported by implementation 'tokamax'; supported: "
            f"1..{TOKAMAX_MAX_HEAD_DIM}"
        )
    if sinks:
        return (
            "`sinks` (attention sinks) are not supported by implementation 'tokamax' (its "
            "kernel adds no sink to the softmax); use 'auto' or 'xla'"
        )
    if not installed():
        return MISSING
    return None


def _sm(cc: tuple[int, int] | None) -> str:
    return "?" if cc is None else f"{cc[0]}{cc[1]}"


def unsupported_reason(kernel: str, dtype: Any, head_dim: int, t: Target) -> str | None:
    """Why ``kernel`` ("xla" | "cudnn" | "pallas" | "tokamax") cannot serve the call (None
    when it can)."""
    if kernel == "cudnn":
        return cudnn_reason(dtype, head_dim, t)
    if kernel == "pallas":
        return pallas_reason(dtype, head_dim, t)
    if kernel == "tokamax":
        return tokamax_reason(dtype, head_dim, t)
    return None


def resolve_attention(
    implementation: str,
    dtype: Any,
    head_dim: int,
    *,
    target: Target | None = None,
    softcap: bool = False,
    bidirectional_window: bool = False,
    sinks: bool = False,
) -> AttentionKernel:
    """The kernel an ``implementation`` name takes for attention in (dtype, head_dim) on
    ``target``: resolved once (a model does it when it is built), run by ``attention`` per call.

    ``"auto"`` is the first kernel of `auto_order` that can serve the calls (cuDNN left out for
    a soft-capped model and for a bidirectional sliding window: it can do neither); a kernel's
    name is that kernel, checked here, so that a call never refuses or falls back.

    Parameters
    ----------
    implementation : str
        One of `IMPLEMENTATIONS` (an `AttentionKernel` is its name).
    dtype, head_dim
        The queries' dtype and head size.
    target : Target, optional
        The device to resolve for; default :func:`current_target`.
    softcap : bool
        The calls soft-cap their logits (cuDNN cannot).
    bidirectional_window : bool
        The calls take a sliding window without a causal mask (cuDNN's window looks back only).
    sinks : bool
        The calls add attention sinks to the softmax (XLA only: ``auto`` is XLA, a fused
        kernel's name a ``ValueError``).

    Returns
    -------
    AttentionKernel
        The kernel to run.

    Raises
    ------
    ValueError
        An unknown name, or a named kernel that cannot serve the calls here (one line naming
        the argument and what is supported).
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"`implementation` must be one of {', '.join(IMPLEMENTATIONS)}; got {implementation!r}"
        )
    t = current_target() if target is None else target
    if sinks:
        if implementation in FUSED:
            raise ValueError(FUSED_SINKS)
        return AttentionKernel.XLA
    if implementation != "auto":
        reason = unsupported_reason(str(implementation), dtype, head_dim, t)
        if reason is None and implementation == "cudnn":
            reason = CUDNN_SOFTCAP if softcap else CUDNN_WINDOW if bidirectional_window else None
        if reason is not None:
            raise ValueError(reason)
        return AttentionKernel(implementation)
    order = auto_order(dtype, head_dim, t, softcap=softcap).order
    if bidirectional_window:
        order = tuple(k for k in order if k != "cudnn")  # XLA stays: it serves every call
    return AttentionKernel(order[0])


def measured_timings(device_kind: str, dtype: Any, head_dim: int) -> dict[str, float]:
    """Kernel → measured fwd+bwd milliseconds on ``device_kind`` for the (dtype, head_dim) bucket
    (the launch table's ``timings``; empty when nothing was measured)."""
    try:
        key = entry_key(dtype, head_dim)
    except ValueError:  # a dtype or head_dim no table has a bucket for
        return {}
    found: dict[str, float] = {}
    for kind, table in load_launch_tables().items():
        if norm_kind(kind) == norm_kind(device_kind):
            found.update(table.timings.get(key, {}))
    return found


@dataclasses.dataclass(frozen=True)
class AutoChoice:
    """The kernels ``auto`` tries, best first (XLA always among them), and why the first."""

    order: tuple[str, ...]
    reason: str

    @property
    def kernel(self) -> str:
        """The kernel ``auto`` takes when nothing fails."""
        return self.order[0]

    def line(self) -> str:
        """The start-of-run line, e.g. ``attention: cudnn (auto: no tjx measurement for ...)``."""
        return f"attention: {self.kernel} (auto: {self.reason})"


def auto_order(
    dtype: Any, head_dim: int, t: Target | None = None, *, softcap: bool = False
) -> AutoChoice:
    """Rank the kernels ``auto`` may take for (dtype, head_dim) on ``t`` (default: current).

    See the module docstring for the rule; every kernel in the order can serve the call
    (``softcap``: the call soft-caps its logits, which cuDNN cannot).
    """
    t = current_target() if t is None else t
    if not t.cuda:
        why = "fused kernels are CUDA-only in tjx" if t.platform == "tpu" else "no CUDA GPU"
        return AutoChoice(("xla",), f"{why}; XLA on {t.platform}")
    kind = t.device_kind or "this GPU"
    servable = [k for k in (*FUSED, "xla") if unsupported_reason(k, dtype, head_dim, t) is None]
    skipped = ""
    if softcap and "cudnn" in servable:
        servable.remove("cudnn")
        skipped = "; cudnn skipped: it cannot soft-cap the logits"
    times = {k: v for k, v in measured_timings(kind, dtype, head_dim).items() if k in servable}
    measured = sorted(times, key=lambda k: times[k])
    rest = [k for k in UNMEASURED if k in servable and k not in times]
    order = (*measured, *rest)
    if not measured:
        reason = f"no tjx measurement for {kind} yet"
    else:
        shown = ", ".join(f"{k} {times[k]:.3g} ms" for k in measured)
        reason = f"fastest measured on {kind} for {entry_key(dtype, head_dim)}: {shown}"
    return AutoChoice(order, reason + skipped)  # XLA serves every call: always in the order


def kernel_order(
    impl: str,
    dtype: Any,
    head_dim: int,
    *,
    named_by: str,
    say: Callable[[str], None] = print,
    softcap: bool = False,
) -> tuple[str, ...]:
    """The kernels to try, best first, for an ``attention_impl`` setting, said in one line.

    ``"auto"`` is `auto_order`'s ranking for (dtype, head_dim) on this device, said with its
    reason; a kernel's name is that kernel alone, said with ``named_by`` (where the name came
    from: ``"model.attention_impl"``). Both apps say their choice this one way.

    Parameters
    ----------
    impl : str
        ``"auto"`` or one of `IMPLEMENTATIONS` other than ``"xla"`` (which needs no choice).
    dtype, head_dim
        The attention call's compute dtype and head size.
    named_by : str
        The setting that named the kernel, for the line.
    say : callable
        Where the line goes.
    softcap : bool
        The model soft-caps its attention logits (cuDNN cannot: ``auto`` leaves it out and says
        so; a named ``cudnn`` is a ``ValueError``).

    Returns
    -------
    tuple of str
        The candidates for `first_that_compiles`.
    """
    if impl != "auto":
        if impl == "cudnn" and softcap:
            raise ValueError(f"{named_by}: {CUDNN_SOFTCAP}")
        say(f"attention: {impl} ({named_by})")
        return (impl,)
    choice = auto_order(dtype, head_dim, softcap=softcap)
    say(choice.line())
    return choice.order


class KernelCompileError(RuntimeError):
    """An explicitly named kernel failed to lower or compile (message: one line)."""


def first_line(err: BaseException) -> str:
    """The first non-empty line of an error, prefixed with its type."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    return f"{type(err).__name__}: {lines[0] if lines else '(no message)'}"


def out_of_memory(err: BaseException) -> bool:
    """Whether a compile failed because the step does not fit the device (a TPU's compiler
    refuses such a program with ``RESOURCE_EXHAUSTED``), not because of the kernel."""
    return str(err).lstrip().startswith("RESOURCE_EXHAUSTED")


def first_that_compiles(
    order: Sequence[str],
    build: Callable[[str], object],
    *,
    explicit: bool,
    say: Callable[[str], None] = print,
) -> str:
    """The first kernel of ``order`` for which ``build(kernel)`` (lower + compile) succeeds.

    Each failure is one line through ``say`` naming the kernel and the error's first line; the
    next kernel is tried. An ``explicit`` request (one kernel named by the user) that fails raises
    :class:`KernelCompileError` with that line instead. ``"xla"`` is not built (it is the baseline
    every platform compiles; a failure there is no kernel choice's to handle). A step that does not
    fit the device's memory (:func:`out_of_memory`) is no kernel failure: that kernel is taken,
    and the memory fit that follows decides what to shrink.
    """
    for i, kernel in enumerate(order):
        if kernel == "xla":
            return kernel
        try:
            build(kernel)
        except Exception as err:  # any lowering/compile error of an unproven kernel
            if out_of_memory(err):  # it compiled far enough to be sized: the memory fit decides
                return kernel
            line = f"attention: {kernel} failed to lower or compile ({first_line(err)})"
            if explicit:
                raise KernelCompileError(line) from None
            nxt = order[i + 1] if i + 1 < len(order) else None
            say(f"{line}; using {nxt}" if nxt else line)
            if nxt is None:
                raise KernelCompileError(line) from None
            continue
        return kernel
    raise KernelCompileError("attention: no kernel to try")
