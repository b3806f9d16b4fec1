"""The calibrated model's constants fitted on a measured GPU profile (:func:`refit`).

A profile (``jax.profiler`` / XProf: ``*.trace.json.gz`` and ``*.xplane.pb``, or a ``.tar.gz`` of
its folder) times every kernel the GPU ran; the optimized HLO of the same step prices each of
them (:func:`tjx.metrics.roofline`). The fit:

1. **reads the trace** (:func:`read_profile`): the GPU kernels of the profiled program (the XLA
   module with the most kernel time), cut into its steps (the sequence repeats once per step);
   the ``xplane.pb`` beside it carries that program's optimized HLO, used unless the caller
   passes its own HLO text;
2. **matches kernels** (:func:`match_kernels`): the trace's kernels in launch order against the
   HLO's kernels in schedule order, a weighted longest common subsequence: the same name scores 3
   (a GPU kernel is named after its fusion: ``input_reduce_fusion.12`` runs as
   ``input_reduce_fusion_12``;
   XLA reuses one kernel for identical fusions, so a name recurs), the same family 2 (the name
   without its number: a program compiled by another XLA numbers its fusions differently),
   the same class 1 (cuBLAS's ``nvjet_*``/``cutlass_*`` for a cuBLAS GEMM, ``memcpy*`` for a
   copy, a custom kernel's own name); ``Memset`` launches have no HLO kernel and stay in the
   step overhead;
3. **fits each class** (:func:`fit_class`): ``t = floor + compute_s / flop_eff + memory_s / bw_eff``
   over the matched kernels (``compute_s``, ``memory_s``: the roofline's times at the datasheet
   peak and bandwidth), a non-negative least squares on the time itself. The estimate is a sum
   of times, and a least squares with a constant term leaves residuals that sum to zero: each
   class's fitted time adds up to its measured time. A fit on relative (or log) time weighs
   the 1,400 kernels under 5 µs like the few that hold the time, and on the 2026-11-25 profile
   it summed the elementwise class to 0.40 of its measured time; the floor is still pinned
   by those many tiny kernels. A class with fewer than :data:`MIN_KERNELS` matched kernels is
   not fitted: the model prices it by the plain roofline;
4. **sets the step overhead**: the measured step (``measured_step_s``, a benchmark's median
   step; by default the profile's own step period) minus the model's sum over the HLO's kernels.

A kernel the profiled program did not run can be fitted on a benchmark's timings instead:
:func:`fit_attention_bench` fits cuDNN's fused attention on the GPU suite's attention rows
(``k/results.json``: forward and forward+backward times per shape), so a plan that takes cuDNN
is not priced at the Pallas kernels' rates.
"""

from __future__ import annotations

import dataclasses
import gzip
import itertools
import json
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tjx.metrics.accelerators import Accelerator
from tjx.metrics.calibration import (
    CLASSES,
    Calibration,
    ClassConstants,
    KernelRow,
    calibrated_seconds,
    rows_of,
)
from tjx.metrics.hlo import Computation, HloModule, parse_hlo
from tjx.metrics.hlo_loops import trip_count
from tjx.metrics.kernel_cost import CustomCost, Kernel, KernelCosts, is_free

__all__ = [
    "FitReport",
    "Profile",
    "TraceKernel",
    "fit_attention_bench",
    "fit_class",
    "kernel_sequence",
    "match_kernels",
    "read_profile",
    "refit",
]

#: Fewer matched kernels than this and a class is not fitted (priced by the plain roofline).
MIN_KERNELS = 4


@dataclass(frozen=True)
class TraceKernel:
    """One kernel launch of a profile: its name and measured duration in seconds."""

    name: str
    seconds: float


@dataclass(frozen=True)
class Profile:
    """A profile's kernels, step by step, and the program's optimized HLO if it carries it.

    Attributes
    ----------
    module : str
        The profiled XLA program (``jit_train_step``).
    steps : list of list of TraceKernel
        Its GPU kernels in launch order, one list per step.
    hlo_text : str or None
        Its optimized HLO, from the ``xplane.pb`` (None when absent).
    step_period_s : float
        Mean start-to-start time of its steps (the span of the window when one step).
    source : str
        The path read.
    """

    module: str
    steps: list[list[TraceKernel]]
    hlo_text: str | None
    step_period_s: float
    source: str


def _members(path: Path) -> dict[str, bytes]:
    """The trace and xplane files under ``path`` (a folder, a ``.tar.gz``, or one file)."""
    found: dict[str, bytes] = {}
    wanted = (".trace.json.gz", ".trace.json", ".xplane.pb")
    if path.is_dir():
        for f in sorted(path.rglob("*")):
            if f.name.endswith(wanted):
                found[f.name] = f.read_bytes()
    elif path.name.endswith((".tar.gz", ".tgz", ".tar")):
        with tarfile.open(path) as tar:
            for m in tar.getmembers():
                if m.isfile() and m.name.endswith(wanted):
                    data = tar.extractfile(m)
                    if data is not None:
                        found[Path(m.name).name] = data.read()
    elif path.is_file():
        found[path.name] = path.read_bytes()
    else:
        raise FileNotFoundError(f"no profile at {path}")
    return found


def read_profile(path: str | Path) -> Profile:
    """The GPU kernels of the profiled program, step by step (see the module docstring).

    Parameters
    ----------
    path : str or Path
        A profile folder (``<logdir>/plugins/profile/<run>``, or any folder above it), its
        ``.tar.gz``, or a ``*.trace.json.gz`` file.

    Returns
    -------
    Profile

    Raises
    ------
    ValueError
        No trace, or no GPU kernel of an XLA program in it.
    """
    files = _members(Path(path))
    trace_name = next((n for n in files if ".trace.json" in n), None)
    if trace_name is None:
        raise ValueError(f"{path}: no *.trace.json.gz in the profile")
    raw = files[trace_name]
    events = json.loads(gzip.decompress(raw) if trace_name.endswith(".gz") else raw)
    events = events.get("traceEvents", []) if isinstance(events, dict) else events
    gpus = {
        e["pid"]
        for e in events
        if e.get("ph") == "M" and e.get("name") == "process_name"
        and str(e.get("args", {}).get("name", "")).startswith("/device:GPU")
    }  # fmt: skip
    kernels = [
        e for e in events
        if e.get("ph") == "X" and e.get("pid") in gpus and e.get("args", {}).get("hlo_module")
    ]  # fmt: skip
    if not kernels:
        raise ValueError(f"{path}: the trace has no GPU kernel of an XLA program")
    busy: dict[str, float] = {}
    for e in kernels:
        busy[e["args"]["hlo_module"]] = busy.get(e["args"]["hlo_module"], 0.0) + float(e["dur"])
    module = max(busy, key=lambda m: busy[m])
    ours = sorted((e for e in kernels if e["args"]["hlo_module"] == module), key=lambda e: e["ts"])
    steps = _steps(ours)
    starts = [float(s[0]["ts"]) for s in steps]
    last = steps[-1][-1]
    span = float(last["ts"]) + float(last["dur"]) - starts[0]
    period = (starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else span
    xplane = next((files[n] for n in files if n.endswith(".xplane.pb")), None)
    hlo = hlo_of_xplane(xplane, module) if xplane is not None else None
    return Profile(
        module,
        [[TraceKernel(str(e["name"]), float(e["dur"]) * 1e-6) for e in s] for s in steps],
        hlo,
        period * 1e-6,
        str(path),
    )


def _steps(events: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """The events cut into steps: the sequence of names repeats once per step, and a step starts
    with the program's first kernel."""
    names = [e["name"] for e in events]
    first = names[0]
    n = names.count(first)
    while n > 1:
        size, rest = divmod(len(names), n)
        if not rest and all(names[i * size] == first for i in range(n)):
            chunks = [names[i * size : (i + 1) * size] for i in range(n)]
            if all(c == chunks[0] for c in chunks):
                return [events[i * size : (i + 1) * size] for i in range(n)]
        n -= 1
    return [events]


# ---- the xplane's HLO: a minimal protobuf reader (XSpace → the metadata plane → HloProto) ----


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _fields(buf: bytes) -> Iterable[tuple[int, Any]]:
    """(field number, value) of a protobuf message: ints, or bytes for length-delimited."""
    i, n = 0, len(buf)
    while i < n:
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 2:
            length, i = _varint(buf, i)
            value, i = buf[i : i + length], i + length
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        yield number, value


def hlo_of_xplane(xplane: bytes, module: str) -> str | None:
    """The optimized HLO text of ``module`` from an XProf ``xplane.pb`` (its ``/host:metadata``
    plane keeps each program's ``HloProto``), or None when it is not there.

    XSpace.planes = 1; XPlane: name = 2, event_metadata = 4 (map: value = 2), stat_metadata = 5;
    XEventMetadata: name = 2, stats = 5; XStat: metadata_id = 1, bytes_value = 6; HloProto:
    hlo_module = 1.
    """
    for number, plane in _fields(xplane):
        if number != 1:
            continue
        fields = list(_fields(plane))
        if next((v for k, v in fields if k == 2), b"") != b"/host:metadata":
            continue
        stat_ids: dict[str, int] = {}
        for k, entry in fields:
            if k == 5:
                stat_meta = dict(_fields(dict(_fields(entry)).get(2, b"")))
                stat_ids[stat_meta.get(2, b"").decode()] = stat_meta.get(1, 0)
        proto_id = stat_ids.get("Hlo Proto")
        for k, entry in fields:
            if k != 4:
                continue
            meta = list(_fields(dict(_fields(entry)).get(2, b"")))
            name = next((v for f, v in meta if f == 2), b"").decode()
            if name.split("(")[0] != module:
                continue
            for f, stat in meta:
                parts = dict(_fields(stat)) if f == 5 else {}
                if parts.get(1) == proto_id and 6 in parts:
                    from tjx.metrics._jax_private import hlo_text_of_proto

                    return hlo_text_of_proto(dict(_fields(parts[6]))[1])
    return None


# ---- matching the trace's kernels to the HLO's ----


def kernel_sequence(
    hlo: str | HloModule, device: Accelerator, custom_call_cost: CustomCost | None = None
) -> list[Kernel]:
    """The program's kernel launches in schedule order, each priced once per launch: a while
    loop's body repeated its trip count times (as the GPU runs it), calls inlined; a
    conditional's branches are skipped (which one runs is the data's)."""
    module = parse_hlo(hlo) if isinstance(hlo, str) else hlo
    costs = KernelCosts(module, device, custom_call_cost)
    out: list[Kernel] = []

    def walk(comp: Computation) -> None:
        for ins in comp.instructions:
            op = ins.opcode
            if is_free(op) or op == "conditional":
                continue
            if op == "while":
                body = module.computations[ins.called("body") or ""]
                for _ in range(trip_count(module, comp, ins) or 1):
                    walk(body)
            elif op == "call":
                walk(module.computations[ins.called("to_apply") or ""])
            elif op == "async-start" and not costs.collective_inside(ins):
                walk(module.computations[ins.called("calls") or ""])
            else:
                kernel = costs.kernel(comp, ins)
                if kernel.kind != "view":
                    out.append(kernel)

    walk(module.entry_computation)
    return out


_GEMM_KERNEL = re.compile(r"^(nvjet|cutlass|sm\d+_xmma|ampere_|hopper_|gemm|cublas)", re.I)


def _family(name: str) -> str:
    """A kernel name without its number (``input_reduce_fusion_12`` → ``input_reduce_fusion``)."""
    return re.sub(r"[_.]\d+$", "", re.sub(r"[^A-Za-z0-9_]", "_", name))


def _sanitized(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _trace_class(name: str) -> str | None:
    if _GEMM_KERNEL.match(name):
        return "gemm"
    if name.lower().startswith("memcpy"):
        return "copy"
    if name.lower().startswith("memset"):
        return None
    return name  # a custom kernel's own name (tjx_flash_fwd) or a fusion's


def _hlo_class(kernel: Kernel) -> str:
    if kernel.detail.startswith("__cublas") or kernel.detail == "__triton_nested_gemm_fusion":
        return "gemm"
    if kernel.kind == "copy" or kernel.detail.endswith("-start"):  # an async slice: a memcpy
        return "copy"
    if kernel.kind in ("attention", "custom call"):
        return kernel.detail  # the kernel's name (tjx_flash_fwd) or the call's target
    return _sanitized(kernel.name)


def match_kernels(trace: Sequence[str], kernels: Sequence[Kernel]) -> list[tuple[int, int]]:
    """Pairs (trace index, kernel index) of a step's trace kernels and the HLO's kernels, in
    order: a weighted longest common subsequence (name 3, family 2, class 1; module docstring).

    Parameters
    ----------
    trace : sequence of str
        The kernel names of one step, in launch order.
    kernels : sequence of Kernel
        The HLO's kernels in schedule order (``roofline(...).kernels``).

    Returns
    -------
    list of (int, int)
        The matched pairs, increasing in both indices.
    """
    codes: dict[str, int] = {}

    def code(value: str | None) -> int:
        return -1 if value is None else codes.setdefault(value, len(codes))

    t_name = np.array([code(_sanitized(n)) for n in trace])
    t_family = np.array([code("f:" + _family(n)) for n in trace])
    t_class = np.array([code(_trace_class(n)) for n in trace])
    h_name = np.array([code(_sanitized(k.name)) for k in kernels])
    h_family = np.array([code("f:" + _family(k.name)) for k in kernels])
    h_class = np.array([code(_hlo_class(k)) for k in kernels])
    n, m = len(trace), len(kernels)
    dp = np.zeros((n + 1, m + 1), dtype=np.int32)
    for i in range(1, n + 1):
        score = np.where(h_name == t_name[i - 1], 3, 0)
        score = np.maximum(score, np.where(h_family == t_family[i - 1], 2, 0))
        if t_class[i - 1] >= 0:
            score = np.maximum(score, np.where(h_class == t_class[i - 1], 1, 0))
        take = np.where(score > 0, dp[i - 1, :-1] + score, 0)
        row = np.maximum(dp[i - 1, 1:], take)
        dp[i, 1:] = np.maximum.accumulate(row)
    pairs = []
    i, j = n, m
    while i > 0 and j > 0:
        if dp[i, j] == dp[i - 1, j]:
            i -= 1
        elif dp[i, j] == dp[i, j - 1]:
            j -= 1
        else:  # the diagonal: trace i-1 is kernel j-1
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
    return pairs[::-1]


# ---- the fit ----


def _nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Non-negative least squares of a few columns: the best of every column subset whose
    unconstrained solution is non-negative (exact for the ≤ 3 columns of a class)."""
    best, best_err = np.zeros(a.shape[1]), float(np.sum(b**2))
    for size in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), size):
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if np.any(x < 0):
                continue
            err = float(np.sum((a[:, cols] @ x - b) ** 2))
            if err < best_err:
                best_err, best = err, np.zeros(a.shape[1])
                best[list(cols)] = x
    return best


def fit_class(
    compute_s: Sequence[float],
    memory_s: Sequence[float],
    measured_s: Sequence[float],
    weights: Sequence[float] | None = None,
    *,
    with_flops: bool = False,
) -> ClassConstants:
    """One class's constants: ``t = floor + compute_s / flop_eff + memory_s / bw_eff`` fitted by
    non-negative least squares on the time (module docstring, step 3).

    Parameters
    ----------
    compute_s, memory_s : sequence of float
        Each kernel's roofline FLOPs time (at the datasheet peak) and bytes time (at the
        datasheet bandwidth), per launch.
    measured_s : sequence of float
        Each kernel's measured time per launch.
    weights : sequence of float, optional
        Each kernel's weight in the squares (default 1).
    with_flops : bool
        Fit the FLOPs term (matrix products, attention); otherwise the class has none
        (``flop_eff`` 0).

    Returns
    -------
    ClassConstants
        ``provenance`` says the kernel count and the fit's median and total error.
    """
    c, mem, t = (np.asarray(x, dtype=float) for x in (compute_s, memory_s, measured_s))
    w = np.sqrt(np.asarray(weights, dtype=float)) if weights is not None else np.ones_like(t)
    columns = [np.ones_like(t), mem] + ([c] if with_flops else [])
    a = np.stack(columns, axis=1)
    x = _nnls(a * w[:, None], t * w)
    floor, per_memory = float(x[0]), float(x[1])
    per_compute = float(x[2]) if with_flops else 0.0
    predicted = np.stack(columns, axis=1) @ x
    ratio = predicted / t
    total = float(np.sum(predicted * (w**2)) / np.sum(t * (w**2)))
    note = (f"{len(t)} kernels; predicted/measured median {np.median(ratio):.2f}, "
            f"sum {total:.3f}")  # fmt: skip
    return ClassConstants(
        floor,
        1.0 / per_compute if per_compute > 0 else 0.0,
        1.0 / per_memory if per_memory > 0 else 0.0,
        note,
    )


def fit_attention_bench(
    rows: Iterable[dict[str, Any]], device: Accelerator, impl: str = "cudnn"
) -> ClassConstants | None:
    """An attention implementation's constants from the GPU suite's attention benchmark rows.

    Each row (``k/results.json``'s ``attention`` section: ``impl``, ``batch``, ``heads``,
    ``seq``, ``head_dim``, ``causal``, ``fwd_ms``, ``fwd_bwd_ms``) gives a forward kernel and a
    backward one (``fwd_bwd_ms - fwd_ms``), priced as the roofline prices cuDNN's calls: forward
    2, backward 5 products of 2·b·h·s²·d FLOPs, halved when causal; bytes: q, k, v and the
    output forward, those with the output's gradient and three input gradients backward (bf16).

    Returns
    -------
    ClassConstants or None
        None when fewer than :data:`MIN_KERNELS` timings of ``impl`` are given.
    """
    compute, memory, measured = [], [], []
    for row in rows:
        if row.get("impl") != impl or not row.get("fwd_ms") or not row.get("fwd_bwd_ms"):
            continue
        b, h, s, d = (int(row[k]) for k in ("batch", "heads", "seq", "head_dim"))
        product = 2.0 * b * h * s * s * d / (2 if row.get("causal") else 1)
        tensor = 2.0 * b * s * h * d  # one bf16 [b, s, h, d]
        fwd_s, bwd_s = row["fwd_ms"] * 1e-3, (row["fwd_bwd_ms"] - row["fwd_ms"]) * 1e-3
        for products, tensors, t in ((2, 4, fwd_s), (5, 8, bwd_s)):
            compute.append(products * product / device.matmul_peak("bf16"))
            memory.append(tensors * tensor / device.hbm_bandwidth)
            measured.append(t)
    if len(measured) < MIN_KERNELS:
        return None
    return fit_class(compute, memory, measured, with_flops=True)


@dataclass(frozen=True)
class FitReport:
    """What a fit matched and how well the fitted model reproduces the profile.

    Attributes
    ----------
    trace_kernels, matched : int
        Kernels in one step of the trace, and how many of them matched an HLO kernel.
    hlo_kernels, hlo_matched : int
        Launches of the HLO's kernels, and how many a trace kernel matched.
    by_name : int
        Matches by the same name (the rest by family or class).
    measured_kernels_s, predicted_kernels_s : float
        The matched kernels' measured time per step and the fitted model's.
    step_s : float
        The measured step the overhead was set against.
    by_class : dict
        Per class: kernels, measured and predicted seconds per step.
    """

    trace_kernels: int
    matched: int
    hlo_kernels: int
    hlo_matched: int
    by_name: int
    measured_kernels_s: float
    predicted_kernels_s: float
    step_s: float
    by_class: dict[str, dict[str, float]]

    def lines(self) -> list[str]:
        """The report in a few lines."""
        out = [
            f"matched {self.matched} of {self.trace_kernels} trace kernels per step to "
            f"{self.hlo_matched} of {self.hlo_kernels} HLO kernel launches ({self.by_name} by "
            "name, the rest by family or class)",
            f"matched kernels: measured {self.measured_kernels_s * 1e3:.2f} ms per step, "
            f"fitted {self.predicted_kernels_s * 1e3:.2f} ms; step {self.step_s * 1e3:.2f} ms",
        ]
        for k, v in self.by_class.items():
            out.append(f"  {k}: {v['kernels']:.0f} kernels, measured {v['measured'] * 1e3:.2f} "
                       f"ms, fitted {v['predicted'] * 1e3:.2f} ms")  # fmt: skip
        return out


def refit(
    profile_path: str | Path,
    compiled_hlo_text: str | None,
    device: Accelerator,
    *,
    custom_call_cost: CustomCost | None = None,
    measured_step_s: float | None = None,
    measurement: str | None = None,
    refit_command: str = "",
    attention_bench: Iterable[dict[str, Any]] = (),
    attention_bench_source: str = "",
) -> tuple[Calibration, FitReport]:
    """Fit ``device``'s calibrated constants on a profile (the module docstring's four steps).

    Parameters
    ----------
    profile_path : str or Path
        The profile (:func:`read_profile`).
    compiled_hlo_text : str or None
        The profiled step's optimized HLO (``compiled.as_text()``, or a deviceless compile of
        the same program); None takes the profile's own (its ``xplane.pb``).
    device : Accelerator
        The device table's entry the profile ran on.
    custom_call_cost : callable, optional
        :func:`roofline`'s prices of the program's own kernels (``tjx.kernels.roofline_costs``).
    measured_step_s : float, optional
        The measured step the overhead is set against (a benchmark's median); by default the
        profile's step period.
    measurement : str, optional
        The label of the measurement (default: the profile's path).
    refit_command : str
        The command that reproduces the fit (kept in the constants).
    attention_bench : iterable of dict, optional
        The GPU suite's attention rows: cuDNN's class is fitted on them
        (:func:`fit_attention_bench`) unless the profile ran cuDNN attention itself.
    attention_bench_source : str
        Where those rows come from (the class's provenance).

    Returns
    -------
    (Calibration, FitReport)

    Raises
    ------
    ValueError
        No HLO given and none in the profile, or a profile with no matched kernel.
    """
    profile = read_profile(profile_path)
    hlo = compiled_hlo_text or profile.hlo_text
    if not hlo:
        raise ValueError(
            f"{profile_path}: the profile carries no HLO of {profile.module}; pass the step's "
            "compiled HLO text"
        )
    module = parse_hlo(hlo)
    kernels = kernel_sequence(module, device, custom_call_cost)
    step = profile.steps[0]
    names = [t.name for t in step]
    pairs = match_kernels(names, kernels)
    measured: dict[int, list[float]] = {}
    for steps in profile.steps:  # every step has the first step's sequence of names
        for ti, hi in pairs:
            measured.setdefault(hi, []).append(steps[ti].seconds)
    rows = rows_of(kernels)
    by_name = sum(1 for ti, hi in pairs if _sanitized(names[ti]) == _sanitized(kernels[hi].name))
    samples: dict[str, list[tuple[KernelRow, float]]] = {}
    for hi, times in measured.items():
        row = rows[hi]
        # a kernel launched `count` times per step: the trace has its launches one by one
        samples.setdefault(row.klass, []).append((row, float(np.mean(times))))
    classes: dict[str, ClassConstants] = {}
    for klass in CLASSES:
        found = samples.get(klass, [])
        if len(found) < MIN_KERNELS or klass == "collective":
            continue
        classes[klass] = fit_class(
            [r.compute_seconds(device) for r, _ in found],
            [r.bytes / device.hbm_bandwidth for r, _ in found],
            [t for _, t in found],
            with_flops=klass in ("gemm", "attention", "cudnn attention"),
        )
    label = measurement or str(profile_path)
    classes = {
        k: dataclasses.replace(c, provenance=f"{label}: {c.provenance}") for k, c in classes.items()
    }
    if "cudnn attention" not in classes:
        bench = fit_attention_bench(attention_bench, device)
        if bench is not None:
            classes["cudnn attention"] = dataclasses.replace(
                bench, provenance=f"{attention_bench_source}: cuDNN's forward and backward "
                f"timings, {bench.provenance}"
            )  # fmt: skip
    cal = Calibration(device.key, label, classes)
    by_class: dict[str, dict[str, float]] = {}
    for klass, found in samples.items():
        predicted = sum(cal.row_seconds(r, device) for r, _ in found)
        by_class[klass] = {
            "kernels": len(found),
            "measured": sum(t for _, t in found),
            "predicted": predicted,
        }
    kernels_s = calibrated_seconds(rows, device, cal).seconds - cal.step_overhead_s
    step_s = measured_step_s if measured_step_s is not None else profile.step_period_s
    report = FitReport(
        trace_kernels=len(step),
        matched=len(pairs),
        hlo_kernels=sum(r.count for r in rows),
        hlo_matched=len(measured),
        by_name=by_name,
        measured_kernels_s=sum(v["measured"] for v in by_class.values()),
        predicted_kernels_s=sum(v["predicted"] for v in by_class.values()),
        step_s=step_s,
        by_class=by_class,
    )
    cal = Calibration(
        device.key,
        cal.measurement,
        classes,
        step_overhead_s=max(0.0, step_s - kernels_s),
        refit=refit_command,
        notes=(
            *report.lines(),
            f"step overhead: the measured step {step_s * 1e3:.2f} ms "
            f"({'given' if measured_step_s is not None else 'the profile step period'}) less the "
            f"fitted kernels {kernels_s * 1e3:.2f} ms",
        ),
    )
    return cal, report


def read_text(path: str | Path) -> str:
    """A text file, gunzipped when it ends in ``.gz`` (an HLO dump)."""
    raw = Path(path).read_bytes()
    return (gzip.decompress(raw) if str(path).endswith(".gz") else raw).decode()
