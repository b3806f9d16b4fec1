"""Peak dense FLOP/s per device, looked up by ``jax.Device.device_kind``.

All figures are the vendors' *dense* peaks (NVIDIA quotes tensor-core numbers "with sparsity";
dense is half of that), per JAX device: one GPU, or one TPU chip (v4, v5p and v6e expose one device
per chip via megacore; v5e has one TensorCore per chip).

Precision keys: ``"bf16"``, ``"fp16"`` (tensor-core half precision), ``"tf32"`` (NVIDIA tensor-core
TF32 — what JAX's default matmul precision uses for float32 inputs on Ampere and newer) and
``"fp32"`` (IEEE float32 on CUDA cores, i.e. ``precision=HIGHEST``). Google publishes no float32
peak for TPUs (the MXU multiplies bf16), so TPU ``fp32``/``tf32`` lookups return ``None``.

An unknown device kind gives ``None`` and a warning — never a guessed default: a wrong peak turns
MFU into a fiction. CPUs give ``None`` (MFU is not meaningful there) unless the user passes a peak.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "DEVICE_PEAKS",
    "DevicePeak",
    "compute_peak_flops",
    "device_peak_flops",
    "normalize_dtype",
    "peak_flops",
]

_T = 1e12


@dataclass(frozen=True)
class DevicePeak:
    """Dense peak FLOP/s of one device (``None`` where the vendor gives no figure)."""

    name: str
    bf16: float
    fp16: float | None
    tf32: float | None
    fp32: float | None
    source: str


# Vendor figures. NVIDIA: "with sparsity" tensor numbers halved to dense.
_H100_SXM = DevicePeak(
    # NVIDIA H100 Tensor Core GPU datasheet, H100 SXM column: BF16/FP16 1,979 TF* and TF32 989 TF*
    # (*with sparsity) → 989.5 / 494.5 dense; FP32 67 TF.
    "H100 SXM",
    989.5 * _T,
    989.5 * _T,
    494.5 * _T,
    67 * _T,
    "NVIDIA H100 datasheet (SXM)",
)
_H100_PCIE = DevicePeak(
    # NVIDIA H100 datasheet, H100 PCIe column: BF16/FP16 1,513 TF*, TF32 756 TF*, FP32 51 TF.
    "H100 PCIe",
    756.5 * _T,
    756.5 * _T,
    378 * _T,
    51 * _T,
    "NVIDIA H100 datasheet (PCIe)",
)
_H100_NVL = DevicePeak(
    # NVIDIA H100 datasheet, H100 NVL column: BF16/FP16 1,671 TF*, TF32 835 TF*, FP32 60 TF.
    "H100 NVL",
    835.5 * _T,
    835.5 * _T,
    417.5 * _T,
    60 * _T,
    "NVIDIA H100 datasheet (NVL)",
)
_H200_SXM = DevicePeak(
    # NVIDIA H200 Tensor Core GPU datasheet, H200 SXM: BF16/FP16 1,979 TF*, TF32 989 TF*, FP32 67 TF
    # (same Hopper compute as H100 SXM; more and faster memory).
    "H200 SXM",
    989.5 * _T,
    989.5 * _T,
    494.5 * _T,
    67 * _T,
    "NVIDIA H200 datasheet (SXM)",
)
_H200_NVL = DevicePeak(
    # NVIDIA H200 datasheet, H200 NVL: BF16/FP16 1,671 TF*, TF32 835 TF*, FP32 60 TF.
    "H200 NVL",
    835.5 * _T,
    835.5 * _T,
    417.5 * _T,
    60 * _T,
    "NVIDIA H200 datasheet (NVL)",
)
_GH200 = DevicePeak(
    # NVIDIA GH200 Grace Hopper Superchip datasheet: BF16/FP16 1,979 TF*, TF32 989 TF*, FP32 67 TF.
    "GH200",
    989.5 * _T,
    989.5 * _T,
    494.5 * _T,
    67 * _T,
    "NVIDIA GH200 datasheet",
)
_A100 = DevicePeak(
    # NVIDIA A100 Tensor Core GPU datasheet (SXM4 and PCIe, 40 and 80 GB alike): BF16/FP16 312 TF,
    # TF32 156 TF, FP32 19.5 TF (dense).
    "A100",
    312 * _T,
    312 * _T,
    156 * _T,
    19.5 * _T,
    "NVIDIA A100 datasheet",
)
_TPU_V4 = DevicePeak(
    # Google Cloud TPU docs, "TPU v4": 275 TFLOPS peak bf16 per chip.
    "TPU v4",
    275 * _T,
    None,
    None,
    None,
    "Google Cloud TPU v4 documentation",
)
_TPU_V5E = DevicePeak(
    # Google Cloud TPU docs, "TPU v5e": 197 TFLOPS peak bf16 per chip (394 int8).
    "TPU v5e",
    197 * _T,
    None,
    None,
    None,
    "Google Cloud TPU v5e documentation",
)
_TPU_V5P = DevicePeak(
    # Google Cloud TPU docs, "TPU v5p": 459 TFLOPS peak bf16 per chip (918 int8).
    "TPU v5p",
    459 * _T,
    None,
    None,
    None,
    "Google Cloud TPU v5p documentation",
)
_TPU_V6E = DevicePeak(
    # Google Cloud TPU docs, "TPU v6e" (Trillium): 918 TFLOPS peak bf16 per chip.
    "TPU v6e",
    918 * _T,
    None,
    None,
    None,
    "Google Cloud TPU v6e documentation",
)

# (pattern on the lower-cased device_kind, peak). Order matters: specific variants first.
# Seen device_kind strings: "NVIDIA H100 80GB HBM3" (SXM), "NVIDIA H100 PCIe", "NVIDIA H100 NVL",
# "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA A100 80GB PCIe", "NVIDIA GH200 480GB",
# "TPU v4", "TPU v5 lite" (v5e), "TPU v5" / "TPU v5p", "TPU v6 lite" (v6e).
_RULES: tuple[tuple[re.Pattern[str], DevicePeak], ...] = tuple(
    (re.compile(pattern), peak)
    for pattern, peak in (
        (r"\bgh200\b", _GH200),
        (r"\bh200\b.*\bnvl\b", _H200_NVL),
        (r"\bh200\b", _H200_SXM),
        (r"\bh100\b.*\bpcie\b", _H100_PCIE),
        (r"\bh100\b.*\bnvl\b", _H100_NVL),
        (r"\bh100\b", _H100_SXM),
        (r"\ba100\b", _A100),
        (r"^tpu v4$", _TPU_V4),
        (r"^tpu v5 ?(lite|e)$", _TPU_V5E),
        (r"^tpu v5p?$", _TPU_V5P),
        (r"^tpu v6 ?(lite|e)$", _TPU_V6E),
    )
)

#: Every device this module knows, by name.
DEVICE_PEAKS: dict[str, DevicePeak] = {peak.name: peak for _, peak in _RULES}

_DTYPES = ("bf16", "fp16", "tf32", "fp32")
_ALIASES = {
    "bfloat16": "bf16",
    "bf16": "bf16",
    "float16": "fp16",
    "half": "fp16",
    "fp16": "fp16",
    "tf32": "tf32",
    "tensorfloat32": "tf32",
    "float32": "fp32",
    "fp32": "fp32",
    "single": "fp32",
}


def normalize_dtype(dtype: Any) -> str:
    """Map ``"bf16"``, ``jnp.bfloat16``, ``np.float32``, ``"float16"``, … to a precision key.

    Raises
    ------
    ValueError
        If the dtype is not one of bf16, fp16, tf32, fp32 (by any of their names).
    """
    if isinstance(dtype, str):
        key = dtype.strip().lower()
    else:
        try:
            key = np.dtype(dtype).name
        except TypeError as err:
            raise ValueError(
                f"dtype must be one of {_DTYPES} or a numpy/jax dtype; got {dtype!r}"
            ) from err
    if key not in _ALIASES:
        raise ValueError(f"dtype must be one of {_DTYPES} (or their numpy names); got {dtype!r}")
    return _ALIASES[key]


def _lookup(device_kind: str) -> DevicePeak | None:
    kind = " ".join(device_kind.lower().replace("-", " ").replace("_", " ").split())
    for pattern, peak in _RULES:
        if pattern.search(kind):
            return peak
    return None


def peak_flops(device_kind: str, dtype: Any = "bf16") -> float | None:
    """Dense peak FLOP/s of one device of this kind, or ``None`` with a warning when unknown.

    Parameters
    ----------
    device_kind
        ``jax.Device.device_kind`` (e.g. ``"NVIDIA H100 80GB HBM3"``, ``"TPU v5 lite"``).
    dtype
        Matmul precision: ``"bf16"`` (default), ``"fp16"``, ``"tf32"``, ``"fp32"`` or a dtype.

    Returns
    -------
    float or None
        FLOP/s, or ``None`` if the device or the precision has no vendor figure here.

    Examples
    --------
    >>> peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    989500000000000.0
    """
    key = normalize_dtype(dtype)
    if not isinstance(device_kind, str):
        raise ValueError(f"device_kind must be a string; got {device_kind!r}")
    if device_kind.strip().lower() == "cpu":
        return None
    peak = _lookup(device_kind)
    if peak is None:
        warnings.warn(
            f"no peak FLOP/s known for device kind {device_kind!r}; MFU will be None. Pass the "
            f"peak yourself (e.g. peak_flops_per_device=...). Known: {', '.join(DEVICE_PEAKS)}",
            stacklevel=2,
        )
        return None
    value: float | None = getattr(peak, key)
    if value is None:
        warnings.warn(
            f"{peak.source} gives no {key} peak for {peak.name}; MFU will be None "
            f"(use dtype='bf16' or pass the peak yourself)",
            stacklevel=2,
        )
    return value


def device_peak_flops(
    device: Any = None, dtype: Any = "bf16", *, peak: float | None = None
) -> float | None:
    """Dense peak FLOP/s of a JAX device, or the user's ``peak`` when given.

    Parameters
    ----------
    device
        A ``jax.Device``; defaults to ``jax.devices()[0]``.
    dtype
        Matmul precision (see :func:`peak_flops`).
    peak
        A user-supplied peak (FLOP/s per device); it wins over the table, also on CPU.

    Returns
    -------
    float or None
        ``None`` on CPU without ``peak`` (MFU is not meaningful there) and for unknown devices (with
        a warning).
    """
    if peak is not None:
        if not (isinstance(peak, int | float) and not isinstance(peak, bool) and peak > 0):
            raise ValueError(f"peak must be a positive number of FLOP/s; got {peak!r}")
        normalize_dtype(dtype)
        return float(peak)
    if device is None:
        import jax

        device = jax.devices()[0]
    if getattr(device, "platform", None) == "cpu":
        normalize_dtype(dtype)
        return None
    return peak_flops(str(device.device_kind), dtype)


def compute_peak_flops(
    compute_dtype: Any, device: Any = None, *, warn: bool = True
) -> float | None:
    """The peak that MFU should use for a model computing in ``compute_dtype`` under JAX's defaults.

    JAX multiplies float32 matrices at its default precision in TF32 on NVIDIA tensor cores
    (Ampere and newer), so a float32 model's peak is the ``tf32`` one, not the CUDA-core
    ``fp32`` figure (which would overstate MFU ~7x on an H100); bfloat16 and float16 are their
    own keys. A TPU has no TF32 figure: ``None`` there.

    Parameters
    ----------
    compute_dtype
        The activations' dtype: ``"bfloat16"``, ``"float16"``, ``"float32"``, a numpy/jax dtype or
        a key of :func:`peak_flops`.
    device
        A ``jax.Device``; defaults to ``jax.devices()[0]``.
    warn : bool
        Warn when the device has no figure (a training loop that logs MFU only where known
        passes ``False``: it would warn on every start on such a device).

    Returns
    -------
    float or None
        FLOP/s of one device; ``None`` on CPU and where the table has no figure.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> h100 = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    >>> compute_peak_flops("float32", h100) == peak_flops("NVIDIA H100 80GB HBM3", "tf32")
    True
    """
    key = normalize_dtype(compute_dtype)
    key = "tf32" if key == "fp32" else key
    if warn:
        return device_peak_flops(device, key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return device_peak_flops(device, key)


def device_summary(devices: Sequence[Any] | None = None) -> str:
    """How many devices of which kind on which platform, as run logs and benchmark records
    print it: ``"8 × NVIDIA H100 80GB HBM3 (gpu)"``.

    Parameters
    ----------
    devices
        ``jax.Device``-like objects (``device_kind``, ``platform``); defaults to
        ``jax.devices()``. Several kinds are listed in order of first appearance.

    Returns
    -------
    str
        ``"<count> × <kinds> (<platforms>)"``.

    Raises
    ------
    ValueError
        ``devices`` is empty.
    """
    if devices is None:
        import jax

        devices = jax.devices()
    if not devices:
        raise ValueError("device_summary needs at least one device; got none")
    kinds = ", ".join(dict.fromkeys(str(d.device_kind) for d in devices))
    platforms = ", ".join(dict.fromkeys(str(d.platform) for d in devices))
    return f"{len(devices)} × {kinds} ({platforms})"
