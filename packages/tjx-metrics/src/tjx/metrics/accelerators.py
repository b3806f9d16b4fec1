"""The device table a plan is estimated against: peaks, memory, bandwidth and interconnect.

One :class:`Accelerator` per target a run can be planned for without the device (``--plan h100``):
its dense matmul peaks per dtype (the vendor's, as :mod:`tjx.metrics.devices` has them), HBM size
and bandwidth, the per-direction bandwidth of the links between devices (collectives are timed at
it), and how a deviceless compile reaches it: a GPU's ``GpuTargetConfig`` (XLA's own device spec,
trimmed, shipped beside this module in ``gpu_targets/``) or a TPU's libtpu topology name.

Figures and their sources (dense peaks: NVIDIA's "with sparsity" tensor figures halved):

========= ======== ======== =========== ==================== ==================================
target    bf16     HBM      bandwidth   links, per direction source
========= ======== ======== =========== ==================== ==================================
h100      989.5 TF 79.1 GiB 3.35 TB/s   NVLink 4: 450 GB/s   H100 datasheet (SXM); XLA spec
h200      989.5 TF 141 GiB  4.80 TB/s   NVLink 4: 450 GB/s   H200 datasheet (SXM); XLA spec
a100-40gb 312 TF   39.4 GiB 1.56 TB/s   NVLink 3: 300 GB/s   A100 datasheet (SXM4); XLA spec
a100-80gb 312 TF   79.3 GiB 2.04 TB/s   NVLink 3: 300 GB/s   A100 datasheet (SXM4); XLA spec
b200      2,250 TF 178 GiB  7.67 TB/s   NVLink 5: 900 GB/s   HGX B200 (1000 W); XLA spec
v5e       197 TF   16 GiB   819 GB/s    ICI: 100 GB/s        Cloud TPU v5e documentation
v5p       459 TF   95 GiB   2.77 TB/s   ICI: 300 GB/s        Cloud TPU v5p documentation
v6e       918 TF   32 GiB   1.64 TB/s   ICI: 224 GB/s        Cloud TPU v6e documentation
========= ======== ======== =========== ==================== ==================================

A GPU's memory and bandwidth are the XLA spec's (what the compiler itself plans with). Link
bandwidth is per direction: NVIDIA quotes NVLink's both directions together (900 GB/s for an
H100), Google the chip's ICI total (1,600 Gbps for a v5e), and both are halved here, so that a
ring collective's bytes on the wire per device divided by it is its time.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources

from tjx.metrics.devices import DEVICE_PEAKS, DevicePeak, normalize_dtype

__all__ = [
    "ACCELERATORS",
    "Accelerator",
    "accelerator",
    "accelerator_of",
    "gpu_target_config",
    "has_fp8_units",
    "parse_target",
]

_G, _T = 1e9, 1e12


@dataclass(frozen=True)
class Accelerator:
    """One device kind a run can be planned for.

    Attributes
    ----------
    key : str
        The target's name on the command line (``"h100"``).
    name : str
        In words (``"H100 SXM"``).
    platform : str
        ``"gpu"`` (CUDA) or ``"tpu"``.
    device_kind : str
        What ``jax.Device.device_kind`` says on it (and on its abstract devices).
    peak : DevicePeak
        Dense matmul peaks (bf16, fp16, tf32, fp32) per device.
    fp8 : float or None
        Dense fp8 (and int8) matmul peak, FLOP/s.
    memory_bytes : int
        HBM per device.
    hbm_bandwidth : float
        HBM bytes/s.
    link_bandwidth : float
        Bytes/s one device sends (or receives) to its peers: collectives are timed at it.
    source : str
        Where the figures come from.
    gpu_target : str or None
        A GPU's ``GpuTargetConfig`` file in ``gpu_targets/``.
    compute_capability : tuple of int or None
        A GPU's (major, minor).
    tpu_name : str or None
        A TPU's libtpu topology prefix (``"v5e"``).
    """

    key: str
    name: str
    platform: str
    device_kind: str
    peak: DevicePeak
    fp8: float | None
    memory_bytes: int
    hbm_bandwidth: float
    link_bandwidth: float
    source: str
    gpu_target: str | None = None
    compute_capability: tuple[int, int] | None = None
    tpu_name: str | None = None

    @property
    def fp8_units(self) -> bool:
        """Whether it multiplies float8 matrices natively: NVIDIA compute capability 8.9 and up
        (Ada, Hopper, Blackwell). An A100's 8-bit figure is int8's, and the TPUs up to v6e have
        int8 but no float8 units: XLA would emulate the float8 products there, slower than bf16.
        """
        return self.platform == "gpu" and (self.compute_capability or (0, 0)) >= (8, 9)

    def matmul_peak(self, dtype: str, precision: str = "default") -> float:
        """Dense FLOP/s of a matrix product on ``dtype`` operands at an XLA ``precision``.

        float32 at the default precision runs as TF32 on NVIDIA tensor cores and as one bf16
        pass on a TPU's MXU; ``"highest"`` is IEEE float32 on CUDA cores, and six bf16 passes
        on a TPU (``"high"``: three). 8-bit types take the fp8/int8 figure. A dtype with no figure
        falls back to bf16's (the most common peak; an fp64 product is rare in a model).

        Parameters
        ----------
        dtype : str
            An HLO element type (``"bf16"``, ``"f32"``, ``"f8e4m3fn"``...) or a numpy name.
        precision : str
            ``"default"``, ``"high"`` or ``"highest"`` (HLO's ``operand_precision``).

        Returns
        -------
        float
            FLOP/s.
        """
        key = _HLO_TYPES.get(dtype, dtype)
        bf16 = self.peak.bf16
        if key in ("f8", "s8", "u8"):
            return self.fp8 or bf16
        if key in ("bf16", "fp16", "float16", "bfloat16", "f16"):
            value = getattr(self.peak, normalize_dtype(key))
            return float(value or bf16)
        if key in ("fp32", "float32", "f32"):
            if self.platform == "tpu":
                return bf16 / {"default": 1, "high": 3, "highest": 6}.get(precision, 1)
            value = self.peak.fp32 if precision == "highest" else self.peak.tf32
            return float(value or bf16)
        return bf16

    def topology(self, count: int) -> str:
        """The deviceless topology of ``count`` devices: a GPU's ``"1x1x8"`` (hosts of up to 8
        GPUs: ``"1x2x8"`` for 16) or a TPU slice's ``"v5e:2x4"``. A single TPU chip is one chip
        of the smallest slice libtpu builds (``v5e:2x2``; ``v5e:1x1`` is refused).

        Raises
        ------
        ValueError
            ``count`` is not a power of two up to 256 (a GPU: 1..8 or a multiple of 8).
        """
        if count < 1 or count > 256 or count & (count - 1):
            raise ValueError(f"device count must be a power of two from 1 to 256; got {count}")
        if self.platform == "gpu":
            hosts = max(1, count // 8)
            return f"1x{hosts}x{count // hosts}"
        chips = max(count, 4)  # 2x2 is the smallest slice
        if self.tpu_name == "v5p":  # 3-D torus: 2x2x1, 2x2x2, 2x2x4, ...
            z = chips // 4
            return f"{self.tpu_name}:2x2x{z}"
        side = 2 ** (int(math.log2(chips)) // 2)
        return f"{self.tpu_name}:{side}x{chips // side}"


def _gpu(
    key: str,
    peak: str,
    fp8: float,
    memory: int,
    bandwidth: float,
    link: float,
    target: str,
    cc: tuple[int, int],
    kind: str,
    source: str,
    peak_table: DevicePeak | None = None,
) -> Accelerator:
    table = peak_table or DEVICE_PEAKS[peak]
    return Accelerator(
        key,
        table.name,
        "gpu",
        kind,
        table,
        fp8,
        memory,
        bandwidth,
        link,
        source,
        gpu_target=target,
        compute_capability=cc,
    )


def _tpu(
    key: str, peak: str, fp8: float, memory_gib: int, bandwidth: float, ici_gbps: float
) -> Accelerator:
    table = DEVICE_PEAKS[peak]
    kind = {"v5e": "TPU v5 lite", "v5p": "TPU v5", "v6e": "TPU v6 lite"}[key]
    # Google quotes the chip's ICI in Gbit/s over all its links: half of it, in bytes, each way.
    link = ici_gbps * _G / 8 / 2
    return Accelerator(
        key, table.name, "tpu", kind, table, fp8, memory_gib * 2**30, bandwidth, link,
        f"Google Cloud TPU {key} documentation", tpu_name=key,
    )  # fmt: skip


#: B200 (HGX, 1000 W): BF16/FP16 4.5 PF, TF32 2.2 PF, FP8 9 PF with sparsity; FP32 80 TF.
_B200 = DevicePeak("B200", 2250 * _T, 2250 * _T, 1100 * _T, 80 * _T, "NVIDIA HGX B200 (1000 W)")

#: Every target by its command-line name.
ACCELERATORS: dict[str, Accelerator] = {
    a.key: a
    for a in (
        _gpu("h100", "H100 SXM", 1979 * _T, 84942979072, 3.35232e12, 450 * _G,
             "h100_sxm.txtpb", (9, 0), "NVIDIA H100 80GB HBM3",
             "NVIDIA H100 datasheet (SXM); XLA spec h100_sxm"),
        _gpu("h200", "H200 SXM", 1979 * _T, 151397597184, 4.8e12, 450 * _G,
             "h200.txtpb", (9, 0), "NVIDIA H200",
             "NVIDIA H200 datasheet (SXM); XLA spec h200"),
        _gpu("a100-40gb", "A100", 624 * _T, 42331013120, 1.5552e12, 300 * _G,
             "a100_sxm_40.txtpb", (8, 0), "NVIDIA A100-SXM4-40GB",
             "NVIDIA A100 datasheet (SXM4 40GB); XLA spec a100_sxm_40"),
        _gpu("a100-80gb", "A100", 624 * _T, 85100068864, 2.03904e12, 300 * _G,
             "a100_sxm_80.txtpb", (8, 0), "NVIDIA A100-SXM4-80GB",
             "NVIDIA A100 datasheet (SXM4 80GB); XLA spec a100_sxm_80"),
        _gpu("b200", "", 4500 * _T, 191514411008, 7.67232e12, 900 * _G,
             "b200.txtpb", (10, 0), "NVIDIA B200",
             "NVIDIA HGX B200 (1000 W) figures; XLA spec b200", peak_table=_B200),
        _tpu("v5e", "TPU v5e", 394 * _T, 16, 819 * _G, 1600),
        _tpu("v5p", "TPU v5p", 918 * _T, 95, 2765 * _G, 4800),
        _tpu("v6e", "TPU v6e", 1836 * _T, 32, 1640 * _G, 3584),
    )
}  # fmt: skip

#: HLO element types → the table's dtype keys.
_HLO_TYPES = {
    "bf16": "bf16",
    "f16": "fp16",
    "f32": "fp32",
    "f64": "fp32",
    "s8": "s8",
    "u8": "u8",
}
for _name in ("f8e4m3fn", "f8e5m2", "f8e4m3", "f8e4m3fnuz", "f8e5m2fnuz", "f8e4m3b11fnuz"):
    _HLO_TYPES[_name] = "f8"

_TARGET = re.compile(r"^(?:(\d+)x)?([a-z0-9-]+)$")


def accelerator(key: str) -> Accelerator:
    """The table's entry for a target name (``"h100"``, ``"v5e"``...).

    Raises
    ------
    ValueError
        An unknown name; the message lists the known ones.
    """
    found = ACCELERATORS.get(key.strip().lower())
    if found is None:
        raise ValueError(f"unknown target {key!r}; known: {', '.join(ACCELERATORS)}")
    return found


def has_fp8_units(platform: str, device_kind: str, compute_capability: str | None) -> bool:
    """Whether a running device multiplies float8 matrices natively (see
    `Accelerator.fp8_units`): a GPU by its compute capability (``"9.0"``), a device the table
    knows by its entry; a CPU or an unknown TPU kind has none.

    Parameters
    ----------
    platform : str
        ``jax.Device.platform`` (``"gpu"``, ``"tpu"``, ``"cpu"``).
    device_kind : str
        ``jax.Device.device_kind``.
    compute_capability : str or None
        A GPU's ``jax.Device.compute_capability`` (``"9.0"``).

    Returns
    -------
    bool
    """
    if platform in ("gpu", "cuda") and compute_capability:
        major, _, minor = compute_capability.partition(".")
        return (int(major), int(minor or 0)) >= (8, 9)
    found = accelerator_of(device_kind)
    return found is not None and found.fp8_units


def accelerator_of(device_kind: str) -> Accelerator | None:
    """The table's entry for a ``jax.Device.device_kind`` (``"NVIDIA H100 80GB HBM3"`` → h100),
    or None for a kind the table does not hold (an H100 PCIe, a CPU)."""
    norm = " ".join(device_kind.lower().split())
    for acc in ACCELERATORS.values():
        if " ".join(acc.device_kind.lower().split()) == norm:
            return acc
    return None


def parse_target(text: str) -> tuple[Accelerator, int]:
    """``"h100"`` → (H100, 1); ``"8xa100-40gb"`` → (A100 40GB, 8).

    Raises
    ------
    ValueError
        An unknown device (the known ones are listed), or a count that is not a power of two.
    """
    match = _TARGET.match(text.strip().lower())
    if match is None:
        raise ValueError(
            f"target {text!r} is not DEVICE or NxDEVICE (e.g. h100, 8xh100); known devices: "
            f"{', '.join(ACCELERATORS)}"
        )
    count = int(match.group(1) or 1)
    found = accelerator(match.group(2))
    found.topology(count)  # validates the count
    return found, count


def gpu_target_config(acc: Accelerator) -> str:
    """The ``GpuTargetConfig`` text of a GPU target (for ``get_topology_desc(target_config=)``).

    Raises
    ------
    ValueError
        ``acc`` is not a GPU.
    """
    if acc.gpu_target is None:
        raise ValueError(f"{acc.key} is a {acc.platform}, not a GPU: it has no GpuTargetConfig")
    return (resources.files("tjx.metrics") / "gpu_targets" / acc.gpu_target).read_text()
