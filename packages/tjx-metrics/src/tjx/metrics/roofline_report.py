"""A compiled step's roofline said in a plan's few lines, and its JSON record.

Every time is labelled an estimate: :func:`roofline` sums per-kernel max(FLOPs / peak, bytes /
HBM bandwidth) over the optimized program and leaves out launch overhead, untuned tiles, caches
and overlap. Where the device has measured constants (:func:`tjx.metrics.calibration.
calibration_for`: a launch floor, achieved bandwidth and FLOP rate per kernel class, a step
overhead, fitted on a GPU profile), the step is their calibrated model instead, labelled
"estimate (calibrated on <measurement>)", with the roofline alone beside it; the record keeps
the kernels' compact summary (``kernel_summary``) the model prices. :func:`estimate` says the
custom calls, the step time with its MFU (the model's FLOPs with causal attention at half,
MaxText's and torchtitan's convention, and PaLM's full count beside it), the slowest kernels,
the collectives on a mesh and the roofline's notes (:func:`grouped_notes`); :func:`f32_dots`
names the JAX operations behind float32 matrix products and :func:`gemm_operands` counts the
matrix products by their operands' types (a float8 run's ``f8e4m3fn×f8e4m3fn`` GEMMs).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from tjx.metrics.accelerators import Accelerator
from tjx.metrics.calibration import calibrated_seconds, calibration_for, rows_of, summarize
from tjx.metrics.kernel_cost import CustomCost
from tjx.metrics.roofline import Roofline, roofline

__all__ = [
    "LAUNCH_BOUND_S",
    "TOP",
    "ProgramCost",
    "estimate",
    "f32_dots",
    "gemm_operands",
    "grouped_notes",
    "program_cost",
]

#: Kernels listed in the "slowest kernels" line.
TOP = 5
#: Below this much estimated work per kernel launch, the plan says launch overhead dominates.
LAUNCH_BOUND_S = 5e-6
_DOT = re.compile(r"= f32\[[^\]]*\][^ ]* (?:dot|convolution)\((%[^,]+),")


def f32_dots(text: str) -> list[str]:
    """The JAX operations (``op_name``) behind every float32 matrix product of a program.

    Examples
    --------
    >>> f32_dots('%a = f32[2]{0} parameter(0)\\n'
    ...          '%d = f32[2]{0} dot(%a, %a), metadata={op_name="jit(f)/dot_general"}')
    ['jit(f)/dot_general']
    """
    names = []
    for line in text.splitlines():
        if _DOT.search(line) is None:
            continue
        operand = re.search(r"(?:dot|convolution)\(%([^,\s)]+)", line)
        op_name = re.search(r'op_name="([^"]*)"', line)
        if operand is not None and _operand_is_f32(text, operand.group(1)):
            names.append(op_name.group(1) if op_name else "?")
    return sorted(set(names))


#: A matrix product's first two operands: a ``dot``, or a GEMM library call (cuBLAS, cuBLASLt:
#: ``__cublas$gemm``, ``__cublas$lt$matmul``, ``__cublas$lt$matmul$f8``).
_GEMM = re.compile(
    r"= (?:\([^)]*\)|\w+\[[^\]]*\][^ ]*) (dot|custom-call)\(%([\w.\-]+), %([\w.\-]+)"
)
_DEFINED = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (\w+)\[", re.M)


def gemm_operands(text: str) -> dict[str, int]:
    """The matrix products of an optimized program, counted by their operands' element types.

    Each ``dot`` (alone or inside a fusion: XLA's Triton GEMMs keep theirs in the fused
    computation) and each cuBLAS GEMM custom call counts once, as written in the program (a
    product in a loop body once, not per trip), under ``"<lhs>×<rhs>"`` (``"bf16×bf16"``,
    ``"f8e4m3fn×f8e5m2"``). What a float8 run's compile keeps of its float8 products, whichever
    of XLA's GEMM emitters took them.

    Examples
    --------
    >>> gemm_operands('%a = f8e4m3fn[2,2]{1,0} parameter(0)\\n'
    ...               '%b = f8e5m2[2,2]{1,0} parameter(1)\\n'
    ...               '%d = bf16[2,2]{1,0} dot(%a, %b), lhs_contracting_dims={1}')
    {'f8e4m3fn×f8e5m2': 1}
    """
    types = dict(_DEFINED.findall(text))
    found: Counter[str] = Counter()
    for line in text.splitlines():
        m = _GEMM.search(line)
        if m is None or (m.group(1) == "custom-call" and '"__cublas$' not in line):
            continue
        found[f"{types.get(m.group(2), '?')}×{types.get(m.group(3), '?')}"] += 1
    return dict(sorted(found.items()))


def _operand_is_f32(text: str, name: str) -> bool:
    found = re.search(rf"%{re.escape(name)} = (\w+)\[", text)
    return found is not None and found.group(1) == "f32"


def _gb(x: float) -> str:
    return f"{x / 1e9:,.1f} GB"


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.1f} ms"


def grouped_notes(notes: Iterable[str]) -> list[str]:
    """The roofline's notes, one line per kind: ``"<op>: <what>"`` notes that say the same of
    several ops (a context split's ring has a conditional per step and layer) become one.

    Examples
    --------
    >>> grouped_notes(["a: no trip count", "b: no trip count", "other"])
    ['no trip count: 2 of them (a, b)', 'other']
    """
    ops: dict[str, list[str]] = {}
    for note in notes:
        op, sep, what = note.partition(": ")
        ops.setdefault(what if sep else note, []).append(op if sep else "")
    out = []
    for what, names in ops.items():
        if len(names) == 1:
            out.append(f"{names[0]}: {what}" if names[0] else what)
        else:
            shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
            out.append(f"{what}: {len(names)} of them ({shown})")
    return out


@dataclass(frozen=True)
class ProgramCost:
    """One call of a compiled program, estimated (an RL plan's prefill or decode step).

    Attributes
    ----------
    seconds : float
        The call's estimate: calibrated where the device has a calibration (its step overhead
        included: each call is a launch from the host), else the roofline.
    label : str
        ``"estimate"`` or ``"estimate (calibrated on <measurement>)"``.
    roofline_seconds : float
        The per-kernel roofline alone.
    launches : int
        Kernel launches per call.
    bytes, flops : float
        Device-memory bytes moved and matrix FLOPs per call.
    overhead_s : float
        The calibration's step overhead in ``seconds`` (fitted on a train step; 0 without one).
    """

    seconds: float
    label: str
    roofline_seconds: float
    launches: int
    bytes: float
    flops: float
    overhead_s: float = 0.0


def _priced(
    est: Roofline, device: Accelerator
) -> tuple[float, str, dict[str, dict[str, float]] | None]:
    """(seconds, label, seconds by kernel class) of a roofline: the calibrated model where the
    device has measured constants, else the roofline itself (one rule for every program)."""
    calibration = calibration_for(device)
    if calibration is None:
        return est.seconds, "estimate", None
    calibrated = calibrated_seconds(rows_of(est.kernels), device, calibration)
    return calibrated.seconds, calibrated.label, calibrated.by_class


def program_cost(
    hlo: str, device: Accelerator, *, custom_call_cost: CustomCost | None = None
) -> ProgramCost:
    """The estimated time of one call of a compiled program, priced as :func:`estimate` prices
    a train step (the calibrated model where the device has one), without its lines.

    Parameters
    ----------
    hlo : str
        ``compiled.as_text()`` of the program.
    device : Accelerator
        The device table's entry it is estimated for.
    custom_call_cost : callable, optional
        :func:`roofline`'s prices for the caller's own kernels.

    Returns
    -------
    ProgramCost
    """
    est = roofline(hlo, device, custom_call_cost=custom_call_cost)
    seconds, label, _ = _priced(est, device)
    calibration = calibration_for(device)
    overhead = calibration.step_overhead_s if calibration is not None else 0.0
    return ProgramCost(seconds, label, est.seconds, est.launches, est.bytes, est.flops, overhead)


def estimate(
    hlo: str,
    device: Accelerator,
    devices: int,
    *,
    units: float,
    unit: str,
    model_flops: tuple[float, float],
    say: Callable[[str], None],
    custom_call_cost: CustomCost | None = None,
) -> dict[str, Any]:
    """The roofline of a compiled train step, said in two lines (three on a mesh) and recorded.

    Parameters
    ----------
    hlo : str
        ``compiled.as_text()`` of the step.
    device : Accelerator
        The device table's entry it is estimated for.
    devices : int
        Devices in the mesh (the MFU's denominator).
    units, unit : float, str
        What one step processes (tokens, images...) and its name, for the ``unit/s`` figure.
    model_flops : (float, float)
        The model's FLOPs per step: causal attention at half, and PaLM's full count.
    say : callable
        Where the lines go.
    custom_call_cost : callable, optional
        :func:`roofline`'s prices for the caller's own kernels.

    Returns
    -------
    dict
        ``custom_calls``, ``seconds``, ``bytes``, ``flops``, ``launches``, the MFUs, ``by_kind``,
        ``top`` (20 kernels), ``collectives`` and ``notes``: the plan's JSON.
    """
    est = roofline(hlo, device, custom_call_cost=custom_call_cost)
    calls: Counter[str] = Counter()
    for k in est.kernels:
        if k.kind in ("attention", "custom call") or k.detail.startswith("__cublas"):
            calls[k.detail] += k.count
    shown = ", ".join(f"{name} ×{n}" for name, n in calls.items()) or "none"
    say(f"custom calls per step: {shown}")
    half, full = model_flops
    calibration = calibration_for(device)
    # the roofline plus launch floors and achieved rates where measured
    seconds, label, by_class = _priced(est, device)
    tokens = units / seconds
    mfu = half / (seconds * device.peak.bf16 * devices)
    palm = full / (seconds * device.peak.bf16 * devices)
    how = (
        "an estimate: per-kernel roofline plus the launch floors and achieved rates measured "
        f"there (the roofline alone: {_ms(est.seconds)})" if calibration is not None else
        "an estimate: per-kernel roofline over the compiled program"
    )  # fmt: skip
    say(
        f"{label}: {_ms(seconds)} per step, {tokens:,.0f} {unit}/s, MFU {mfu:.0%} "
        f"(PaLM convention: {palm:.0%}) — {how}; {_gb(est.bytes)} moved by {est.launches:,} "
        f"kernel launches, {est.flops / 1e12:,.2f} TFLOP (model: {half / devices / 1e12:,.2f} "
        "per device)"
    )
    if calibration is not None:  # the slowest by the calibrated model (floors count)
        timed = {r.name: calibration.row_seconds(r, device) * r.count for r in rows_of(est.kernels)}
    else:
        timed = {k.name: k.total_seconds for k in est.kernels}
    slowest = sorted(est.kernels, key=lambda k: -timed.get(k.name, 0.0))
    top = ", ".join(
        f"{k.name} {_ms(timed.get(k.name, 0.0))} ({k.kind}{f' ×{k.count}' if k.count > 1 else ''})"
        for k in slowest[:TOP]
    )
    say(f"  slowest kernels: {top}")
    collectives: list[dict[str, Any]] = []
    if est.collectives:
        grouped: dict[str, list[Any]] = {}
        for k in est.collectives:
            grouped.setdefault(k.detail, []).append(k)
        parts = []
        for detail, ks in grouped.items():
            wire = sum(k.wire_bytes * k.count for k in ks)
            secs = sum(k.total_seconds for k in ks)
            n = sum(k.count for k in ks)
            parts.append(f"{detail} ×{n}: {_gb(wire)} on the wire, {_ms(secs)}")
            collectives.append({"collective": detail, "count": n, "wire_bytes": wire, "s": secs})
        say(f"  collectives (est., at {device.link_bandwidth / 1e9:.0f} GB/s per device "
            f"each way): {'; '.join(parts)}")  # fmt: skip
    if calibration is None and est.launches and est.seconds / est.launches < LAUNCH_BOUND_S:
        say(
            f"  note: {est.seconds / est.launches * 1e6:.1f} µs of work per kernel launch on "
            "average: launch overhead (a few µs each on a GPU; not in the estimate) will dominate "
            "a step this small"
        )
    for note in grouped_notes(est.notes):
        say(f"  note: {note}")
    return {
        "custom_calls": dict(calls),
        "seconds": seconds,
        "label": label,
        "roofline_seconds": est.seconds,
        "calibrated_by_class": by_class,
        "bytes": est.bytes,
        "flops": est.flops,
        "launches": est.launches,
        "model_flops": half,
        "model_flops_palm": full,
        "mfu": mfu,
        "mfu_palm": palm,
        "tokens_per_s": tokens,
        "by_kind": est.by_kind(),
        "top": [
            {"name": k.name, "kind": k.kind, "count": k.count, "s": timed.get(k.name, 0.0)}
            for k in slowest[:20]
        ],
        "collectives": collectives,
        "notes": list(est.notes),
        # The model's input, compact: a test fixture keeps this instead of the HLO.
        "kernel_summary": [row.to_json() for row in summarize(est.kernels)],
    }
