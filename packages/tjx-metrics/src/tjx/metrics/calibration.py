"""A step's time calibrated on a measured GPU profile: the roofline plus what it leaves out.

The roofline (:mod:`tjx.metrics.roofline`) prices each kernel at max(FLOPs / peak, bytes / HBM
bandwidth). A measured H100 step (2026-11-25) was 1.3–1.7× slower than that: a GPU kernel has a
fixed cost of a few microseconds however little it does (1,418 of the step's 2,171 kernels ran
under 5 µs), memory-bound kernels reach a fraction of the HBM bandwidth that depends on their kind
(a reduction less than an elementwise loop), and GEMMs reach a fraction of the datasheet peak.
So each kernel of class ``c`` (:func:`kernel_class`) is priced

    t = floor_c + FLOPs / (peak · flop_eff_c) + bytes / (HBM bandwidth · bw_eff_c)

and a step is the sum over its kernels plus ``step_overhead_s`` (what a measured step spends
beyond its kernels: host dispatch, the memsets XLA adds, the gaps between launches). The floor
makes a small kernel's achieved bandwidth grow with its size (bytes / t) up to ``bw_eff``, and a
small or skinny GEMM reach far less than ``flop_eff`` of the peak: the shape dependence without
a table of shapes. The terms add rather than take the larger: a fitted kernel rarely overlaps its
loads with its math perfectly, and the sum keeps the fit a linear least squares.

The constants are data: ``calibrations.json`` beside this module, one entry per device table key,
each with the measurement it was fitted on (file and date) and the command that refits it
(:mod:`tjx.metrics.calibration_fit`, ``tools/calibrate.py``). A device with no entry has no
calibrated estimate (the plain roofline is said).

A compiled step's kernels are summarised (:func:`summarize`) into the rows the model consumes:
identical kernels (kind, FLOPs, bytes) merged with their launch counts, a few hundred rows for a
whole train step: what the test fixture keeps of each measured case instead of its HLO.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tjx.metrics.accelerators import Accelerator
from tjx.metrics.kernel_cost import Kernel

__all__ = [
    "CLASSES",
    "Calibration",
    "ClassConstants",
    "KernelRow",
    "calibrated_seconds",
    "calibration_for",
    "kernel_class",
    "rows_of",
    "summarize",
]

#: The kernel classes the model prices apart (see :func:`kernel_class`).
CLASSES = (
    "gemm", "attention", "cudnn attention", "custom", "reduction", "elementwise", "copy",
    "collective",
)  # fmt: skip


def kernel_class(kind: str, detail: str, flops: float) -> str:
    """The model's class of a roofline kernel (:class:`tjx.metrics.Kernel`'s ``kind``/``detail``).

    ``gemm``: a matrix product (cuBLAS, a Triton GEMM fusion, any fusion with matmul FLOPs);
    ``attention``: a flash attention kernel of the program's own (Pallas/Triton); ``cudnn
    attention``: cuDNN's fused attention (fitted on its own timings: the two run the same FLOPs
    at different rates); ``custom``: any
    other custom kernel (a fused loss; each is its own, so one kernel's rates say little of
    another's: unless a profile had some, they are priced by the plain roofline); ``reduction``:
    an XLA input (reduction) fusion or a Triton fusion that is not a GEMM
    (XLA's Triton softmax/normalization fusions reduce rows); ``copy``: a copy, transpose or
    anything else that only moves data (XLA's custom dynamic-slice fusions and asynchronous
    slices run as memcpy); ``elementwise``: loop fusions and every other kernel.

    Examples
    --------
    >>> kernel_class("matmul", "__cublas$lt$matmul", 1e9)
    'gemm'
    >>> kernel_class("reduction fusion", "kInput", 0.0)
    'reduction'
    """
    if kind == "collective":
        return "collective"
    if kind == "custom fusion" or detail == "fusion-start":  # XLA's dynamic-slice fusions: memcpy
        return "copy"
    if kind == "attention":
        return "cudnn attention" if detail.startswith("__cudnn") else "attention"
    if kind == "custom call":
        return "custom"
    if flops > 0 or kind == "matmul":
        return "gemm"
    if kind in ("reduction fusion", "triton fusion", "reduce", "reduce-window", "sort"):
        return "reduction"
    if kind in ("copy", "transpose", "concatenate", "pad", "slice", "dynamic-slice",
                "dynamic-update-slice", "gather", "scatter"):  # fmt: skip
        return "copy"
    return "elementwise"


@dataclass(frozen=True)
class KernelRow:
    """Identical kernels of a step, merged: what the calibrated model consumes.

    Attributes
    ----------
    kind, detail : str
        The roofline kernel's ``kind`` and ``detail`` (fusion kind, custom call target).
    count : int
        Launches per step of all the merged kernels.
    flops : dict of str to float
        Matmul FLOPs per launch by operand dtype (``"bf16"``, ``"f32@highest"``).
    bytes : float
        Device-memory bytes read and written per launch.
    wire_bytes : float
        Bytes sent to peers per launch (collectives).
    name : str
        One of the merged kernels (for the reader).
    """

    kind: str
    detail: str
    count: int
    flops: dict[str, float]
    bytes: float
    wire_bytes: float = 0.0
    name: str = ""

    @property
    def klass(self) -> str:
        """Its :func:`kernel_class`."""
        return kernel_class(self.kind, self.detail, sum(self.flops.values()))

    def compute_seconds(self, device: Accelerator) -> float:
        """Its FLOPs per launch at the device's peak for their dtypes."""
        total = 0.0
        for key, value in self.flops.items():
            dtype, _, precision = key.partition("@")
            total += value / device.matmul_peak(dtype, precision or "default")
        return total

    def to_json(self) -> list[Any]:
        """A compact list: ``[kind, detail, count, flops, bytes, wire_bytes, name]``."""
        flops = {k: round(v) for k, v in self.flops.items()}
        return [self.kind, self.detail, self.count, flops, round(self.bytes), self.wire_bytes,
                self.name]  # fmt: skip

    @classmethod
    def from_json(cls, row: list[Any]) -> KernelRow:
        """The row :meth:`to_json` wrote."""
        kind, detail, count, flops, size, wire, name = row
        flops = {str(k): float(v) for k, v in dict(flops).items()}
        return cls(str(kind), str(detail), int(count), flops, float(size), float(wire), str(name))


def rows_of(kernels: Iterable[Kernel]) -> list[KernelRow]:
    """Roofline kernels as the model's rows, one per kernel (its launch count kept)."""
    return [
        KernelRow(k.kind, k.detail, k.count, dict(k.flops), k.bytes_read + k.bytes_written,
                  k.wire_bytes, k.name)  # fmt: skip
        for k in kernels
        if k.kind != "view"
    ]


def summarize(kernels: Iterable[Kernel]) -> list[KernelRow]:
    """A step's kernels merged into rows of identical cost (kind, detail, FLOPs, bytes), their
    launch counts summed; most launches first. The model prices the summary exactly as it
    prices the kernels (it is linear in the launch count)."""
    merged: dict[tuple[Any, ...], KernelRow] = {}
    for row in rows_of(kernels):
        key = (row.kind, row.detail, tuple(sorted(row.flops.items())), row.bytes, row.wire_bytes)
        seen = merged.get(key)
        count = row.count + (seen.count if seen else 0)
        merged[key] = KernelRow(row.kind, row.detail, count, row.flops, row.bytes,
                                row.wire_bytes, seen.name if seen else row.name)  # fmt: skip
    return sorted(merged.values(), key=lambda r: (-r.count, -r.bytes))


@dataclass(frozen=True)
class ClassConstants:
    """One kernel class's fitted constants.

    Attributes
    ----------
    floor_s : float
        Seconds every launch costs, however little it does.
    flop_eff : float
        Achieved fraction of the device's matmul peak (0: the class has no FLOPs term).
    bw_eff : float
        Achieved fraction of the HBM bandwidth.
    provenance : str
        What it was fitted on (kernels, their share of the measured time, the fit's error).
    """

    floor_s: float
    flop_eff: float
    bw_eff: float
    provenance: str = ""

    def seconds(self, compute_s: float, memory_s: float) -> float:
        """One launch: the floor, the FLOPs at ``flop_eff`` of the peak, the bytes at ``bw_eff``
        of the bandwidth (``compute_s``, ``memory_s``: their roofline times at the datasheet's)."""
        t = self.floor_s
        if compute_s > 0 and self.flop_eff > 0:
            t += compute_s / self.flop_eff
        if memory_s > 0 and self.bw_eff > 0:
            t += memory_s / self.bw_eff
        return t


@dataclass(frozen=True)
class Calibration:
    """A device's calibrated constants (an entry of ``calibrations.json``).

    Attributes
    ----------
    device : str
        The device table's key (``"h100"``).
    measurement : str
        The measurement they were fitted on (folder, file, date): the estimate's label.
    classes : dict of str to ClassConstants
        Per kernel class (:data:`CLASSES`); a class the fit had no kernels of is priced by the
        plain roofline (nothing measured says otherwise).
    step_overhead_s : float
        A measured step's time beyond the sum of its kernels.
    refit : str
        The command that refits them from a new profile.
    notes : tuple of str
        The fit's report (kernels matched, the error per class).
    """

    device: str
    measurement: str
    classes: dict[str, ClassConstants]
    step_overhead_s: float = 0.0
    refit: str = ""
    notes: tuple[str, ...] = ()

    def row_seconds(self, row: KernelRow, device: Accelerator) -> float:
        """One launch of ``row`` on ``device``: its class's fitted constants, or the plain
        roofline for a class with none (a collective: its wire at the link bandwidth)."""
        memory = row.bytes / device.hbm_bandwidth
        constants = self.classes.get(row.klass)
        if constants is None:
            wire = row.wire_bytes / device.link_bandwidth
            return max(row.compute_seconds(device), memory, wire)
        return constants.seconds(row.compute_seconds(device), memory)

    def to_json(self) -> dict[str, Any]:
        """The ``calibrations.json`` entry."""
        return {
            "measurement": self.measurement,
            "refit": self.refit,
            "step_overhead_s": self.step_overhead_s,
            "classes": {
                k: {"floor_s": c.floor_s, "flop_eff": c.flop_eff, "bw_eff": c.bw_eff,
                    "provenance": c.provenance}  # fmt: skip
                for k, c in self.classes.items()
            },
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, device: str, entry: Mapping[str, Any]) -> Calibration:
        """An entry of ``calibrations.json``."""
        classes = {
            str(k): ClassConstants(float(c["floor_s"]), float(c["flop_eff"]), float(c["bw_eff"]),
                                   str(c.get("provenance", "")))  # fmt: skip
            for k, c in dict(entry["classes"]).items()
        }
        return cls(
            device,
            str(entry["measurement"]),
            classes,
            float(entry.get("step_overhead_s", 0.0)),
            str(entry.get("refit", "")),
            tuple(str(n) for n in entry.get("notes", ())),
        )


#: The file of fitted constants, keyed by device table key.
CALIBRATIONS = "calibrations.json"


def calibration_for(device: Accelerator | str) -> Calibration | None:
    """The shipped calibration of a device (``calibrations.json``), or None when it has none.

    An entry ``{"constants_of": OTHER, "measurement": ..., "notes": [...]}`` borrows OTHER's
    fitted constants (shares of the peaks, launch floors, step overhead) for a device of the same
    chip that was measured but not profiled (the H200 uses the H100's): the row model applies
    them to this device's own peaks and bandwidth, and ``measurement`` says so in the label.
    """
    key = device if isinstance(device, str) else device.key
    text = (resources.files("tjx.metrics") / CALIBRATIONS).read_text()
    shipped = json.loads(text)
    entry = shipped.get(key)
    if not entry:
        return None
    if "constants_of" in entry:
        borrowed = dict(shipped[entry["constants_of"]])
        borrowed["measurement"] = entry["measurement"]
        borrowed["notes"] = list(entry.get("notes", []))
        entry = borrowed
    return Calibration.from_json(key, entry)


@dataclass(frozen=True)
class Calibrated:
    """A step's calibrated estimate.

    Attributes
    ----------
    seconds : float
        The step: its kernels plus the calibration's step overhead.
    by_class : dict
        Seconds and launches per kernel class.
    calibration : Calibration
        The constants it used.
    """

    seconds: float
    by_class: dict[str, dict[str, float]] = field(default_factory=dict)
    calibration: Calibration | None = None

    @property
    def label(self) -> str:
        """``"estimate (calibrated on <measurement>)"``."""
        where = self.calibration.measurement if self.calibration else "nothing"
        return f"estimate (calibrated on {where})"


def calibrated_seconds(
    rows: Iterable[KernelRow], device: Accelerator, calibration: Calibration
) -> Calibrated:
    """The calibrated step time of a step's kernel rows (:func:`summarize` or :func:`rows_of`).

    Parameters
    ----------
    rows : iterable of KernelRow
        The step's kernels.
    device : Accelerator
        The device table's entry (peaks, HBM and link bandwidth).
    calibration : Calibration
        Its fitted constants (:func:`calibration_for`).

    Returns
    -------
    Calibrated
        The step's seconds and their split by kernel class.
    """
    by_class: dict[str, dict[str, float]] = {}
    total = calibration.step_overhead_s
    for row in rows:
        t = calibration.row_seconds(row, device) * row.count
        slot = by_class.setdefault(row.klass, {"seconds": 0.0, "count": 0})
        slot["seconds"] += t
        slot["count"] += row.count
        total += t
    ordered = dict(sorted(by_class.items(), key=lambda kv: -kv[1]["seconds"]))
    return Calibrated(total, ordered, calibration)
