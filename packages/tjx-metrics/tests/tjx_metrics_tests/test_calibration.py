"""The calibrated step-time model: the measured H100 cases, the summary it consumes, its fit."""

from __future__ import annotations

import gzip
import json
import tarfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import accelerator, estimate, program_cost, roofline
from tjx.metrics.calibration import (
    Calibration,
    ClassConstants,
    KernelRow,
    calibrated_seconds,
    calibration_for,
    kernel_class,
    rows_of,
    summarize,
)
from tjx.metrics.calibration_fit import (
    fit_attention_bench,
    fit_class,
    hlo_of_xplane,
    kernel_sequence,
    match_kernels,
    read_profile,
    refit,
)

HERE = Path(__file__).parent
CASES = json.loads((HERE / "calibration_cases.json").read_text())
TEXTS = HERE / "hlo_texts"
H100 = accelerator("h100")

#: The issue's goal for the calibrated estimate of every measured case (#51).
TOLERANCE = 0.15


@pytest.mark.parametrize("name", sorted(CASES["cases"]))
def test_the_calibrated_estimate_of_each_measured_case_is_within_15_percent(name):
    case = CASES["cases"][name]
    device = accelerator(case.get("device", CASES["device"]))  # where it was measured
    rows = [KernelRow.from_json(r) for r in case["kernels"]]
    assert sum(r.count for r in rows) == case["launches"]  # the summary is the whole step
    cal = calibration_for(device)
    assert cal is not None
    got = calibrated_seconds(rows, device, cal).seconds
    assert got / case["measured_s"] == pytest.approx(
        1.0, abs=TOLERANCE
    ), f"{name}: calibrated {got * 1e3:.1f} ms, measured {case['measured_s'] * 1e3:.1f} ms"


def test_the_shipped_constants_say_what_they_were_fitted_on_and_how_to_refit():
    cal = calibration_for("h100")
    assert cal is not None and "2026-11-25" in cal.measurement
    assert "tools/calibrate.py" in cal.refit
    for name, c in cal.classes.items():
        assert "2026-11-25" in c.provenance and "kernels" in c.provenance, name
        assert c.floor_s >= 0 and c.bw_eff >= 0 and c.flop_eff >= 0
    assert cal.classes["reduction"].floor_s > 5e-7  # a launch costs microseconds, not zero
    assert "k/results.json" in cal.classes["cudnn attention"].provenance  # the kernel suite's
    assert calibration_for("v5e") is None  # never measured: the plain roofline is said


def test_the_h200_borrows_the_h100_constants_and_says_so_in_its_label():
    h100, h200 = calibration_for("h100"), calibration_for("h200")
    assert h100 is not None and h200 is not None
    assert h200.classes == h100.classes and h200.step_overhead_s == h100.step_overhead_s
    assert h200.device == "h200" and "H100 profile" in h200.measurement
    assert "H200 run of 2026-11-26" in h200.measurement and h200.notes
    # Same constants, the H200's own peaks: a memory-bound kernel is priced faster there.
    row = KernelRow("loop fusion", "kLoop", 1, {}, 4e9, 0.0, "big_copy")
    assert h200.row_seconds(row, accelerator("h200")) < h100.row_seconds(row, H100)


def _tiny_program_text() -> str:
    def step(w, x):
        h = jnp.tanh(x @ w)
        return jnp.sum(h * h, axis=-1), jnp.max(h, axis=0)

    w = jax.ShapeDtypeStruct((64, 32), jnp.float32)
    x = jax.ShapeDtypeStruct((16, 64), jnp.float32)
    return jax.jit(step).lower(w, x).compile().as_text()


def test_the_summary_of_a_freshly_compiled_program_is_what_the_model_consumes():
    text = _tiny_program_text()
    got = estimate(text, H100, 1, units=16, unit="tokens", model_flops=(1.0, 2.0),
                   say=lambda line: None)  # fmt: skip
    # The fixture keeps exactly this (JSON): read back, it prices to the plan's estimate.
    rows = [KernelRow.from_json(json.loads(json.dumps(r))) for r in got["kernel_summary"]]
    cal = calibration_for(H100)
    assert cal is not None and rows
    assert calibrated_seconds(rows, H100, cal).seconds == pytest.approx(got["seconds"], rel=1e-9)
    assert sum(r.count for r in rows) == got["launches"]
    kernels = roofline(text, H100).kernels
    assert any(r.klass == "gemm" for r in rows)  # the dot is priced as a matrix product
    merged = summarize(kernels)
    assert len(merged) <= len(rows_of(kernels))


def test_a_programs_cost_is_the_step_estimates_price_of_the_same_program():
    """`program_cost` (an RL plan's prefill and decode calls) prices a program as `estimate`
    prices a train step: calibrated on an H100, the roofline alone on a device without one."""
    text = _tiny_program_text()
    for device in (H100, accelerator("v5e")):
        got = estimate(text, device, 1, units=16, unit="tokens", model_flops=(1.0, 2.0),
                       say=lambda line: None)  # fmt: skip
        cost = program_cost(text, device)
        assert cost.seconds == pytest.approx(got["seconds"], rel=1e-12)
        assert cost.label == got["label"] and cost.launches == got["launches"]
        assert cost.roofline_seconds == pytest.approx(got["roofline_seconds"], rel=1e-12)
    assert program_cost(text, H100).label.startswith("estimate (calibrated on ")
    assert program_cost(text, accelerator("v5e")).label == "estimate"
    cal = calibration_for(H100)
    assert cal is not None and program_cost(text, H100).overhead_s == cal.step_overhead_s
    assert program_cost(text, accelerator("v5e")).overhead_s == 0.0


def test_merging_identical_kernels_keeps_the_estimate():
    rng = np.random.default_rng(0)
    kinds = [("loop fusion", "kLoop"), ("reduction fusion", "kInput"), ("matmul", "__cublas")]
    rows = []
    for i in range(40):
        kind, detail = kinds[int(rng.integers(3))]
        flops = {"bf16": float(rng.integers(1, 4)) * 1e9} if kind == "matmul" else {}
        rows.append(KernelRow(kind, detail, int(rng.integers(1, 5)), flops,
                              float(rng.integers(1, 4)) * 1e6, name=f"k{i}"))  # fmt: skip

    class _K:  # the fields summarize reads of a roofline kernel
        def __init__(self, r: KernelRow):
            self.kind, self.detail, self.count, self.flops = r.kind, r.detail, r.count, r.flops
            self.bytes_read, self.bytes_written, self.wire_bytes = r.bytes, 0.0, 0.0
            self.name = r.name

    merged = summarize([_K(r) for r in rows])  # type: ignore[misc]
    cal = calibration_for(H100)
    assert cal is not None and len(merged) < len(rows)
    whole = calibrated_seconds(rows, H100, cal).seconds
    assert calibrated_seconds(merged, H100, cal).seconds == pytest.approx(whole, rel=1e-12)


def test_kernel_classes():
    assert kernel_class("matmul", "__cublas$lt$matmul", 1e9) == "gemm"
    assert kernel_class("attention", "__cudnn$fmhaSoftmax", 1e9) == "cudnn attention"
    assert kernel_class("attention", "tjx_flash_fwd", 1e9) == "attention"
    assert kernel_class("custom call", "tjx_ce_dx", 1e9) == "custom"
    assert kernel_class("custom fusion", "__custom_fusion", 0.0) == "copy"
    assert kernel_class("triton fusion", "__triton", 0.0) == "reduction"
    assert kernel_class("loop fusion", "kLoop", 0.0) == "elementwise"
    assert kernel_class("collective", "all-reduce over 8", 0.0) == "collective"


def test_a_class_with_no_measured_constants_is_priced_by_the_plain_roofline():
    cal = Calibration("h100", "m", {"gemm": ClassConstants(1e-6, 0.5, 1.0)})
    loss = KernelRow("custom call", "tjx_ce_dx", 2, {"bf16": 1e12}, 3e11)
    # the plain roofline: the slower of its FLOPs at the peak and its bytes at the bandwidth
    roof = max(1e12 / H100.peak.bf16, 3e11 / H100.hbm_bandwidth)
    assert cal.row_seconds(loss, H100) == pytest.approx(roof)
    gemm = KernelRow("matmul", "__cublas$lt$matmul", 1, {"bf16": 1e12}, 0.0)
    assert cal.row_seconds(gemm, H100) == pytest.approx(1e-6 + 2 * 1e12 / H100.peak.bf16)
    assert calibrated_seconds([loss, gemm], H100, cal).seconds == pytest.approx(
        2 * roof + cal.row_seconds(gemm, H100)
    )


# ---- the fit ----

#: Constants a synthetic GPU "measures" with: (floor s, flop_eff, bw_eff) per class.
TRUE = {
    "gemm": (3e-6, 0.7, 0.8),
    "reduction": (2e-6, 0.0, 0.6),
    "elementwise": (1.5e-6, 0.0, 0.85),
    "copy": (1e-6, 0.0, 0.9),
}


def test_the_fit_recovers_known_constants_from_noisy_kernels():
    rng = np.random.default_rng(1)
    for klass, (floor, flop_eff, bw_eff) in TRUE.items():
        n = 300
        memory = 10 ** rng.uniform(-8, -4, n)  # 10 ns .. 100 µs of bytes at the datasheet rate
        compute = 10 ** rng.uniform(-7, -3, n) if flop_eff else np.zeros(n)
        t = floor + memory / bw_eff + (compute / flop_eff if flop_eff else 0.0)
        t *= rng.normal(1.0, 0.02, n)  # 2 % timing noise
        got = fit_class(compute, memory, t, with_flops=bool(flop_eff))
        assert got.floor_s == pytest.approx(floor, rel=0.15), klass
        assert got.bw_eff == pytest.approx(bw_eff, rel=0.05), klass
        if flop_eff:
            assert got.flop_eff == pytest.approx(flop_eff, rel=0.05), klass
        else:
            assert got.flop_eff == 0.0
        assert "300 kernels" in got.provenance


def test_a_fit_never_returns_a_negative_constant():
    # Times that fall with size would need a negative bandwidth term: the fit drops the term.
    memory = np.linspace(1e-6, 1e-4, 50)
    t = 5e-5 - 0.1 * memory
    got = fit_class(np.zeros(50), memory, t)
    assert got.bw_eff == 0.0 and got.floor_s > 0


def _bench_rows(floor: float, flop_eff: float) -> list[dict]:
    """The kernel suite's attention rows of a cuDNN that runs at ``flop_eff`` of the peak."""
    rows = []
    for seq, batch in ((1024, 16), (2048, 8), (4096, 4), (8192, 2)):
        for causal in (True, False):
            product = 2.0 * batch * 32 * seq * seq * 64 / (2 if causal else 1)
            fwd = floor + 2 * product / (H100.peak.bf16 * flop_eff)
            bwd = floor + 5 * product / (H100.peak.bf16 * flop_eff)
            rows.append({"impl": "cudnn", "batch": batch, "heads": 32, "seq": seq,
                         "head_dim": 64, "causal": causal, "fwd_ms": fwd * 1e3,
                         "fwd_bwd_ms": (fwd + bwd) * 1e3})  # fmt: skip
    rows.append({"impl": "xla", "fwd_ms": None})  # another kernel, or one that failed: ignored
    return rows


def test_cudnn_attention_is_fitted_on_the_kernel_suites_timings():
    got = fit_attention_bench(_bench_rows(2e-5, 0.4), H100)
    assert got is not None
    assert got.flop_eff == pytest.approx(0.4, rel=0.02)
    assert got.floor_s == pytest.approx(2e-5, rel=0.1)
    assert fit_attention_bench(_bench_rows(2e-5, 0.4)[:1], H100) is None  # 2 timings: too few


def _names(kernels):
    return [k.name.replace(".", "_").replace("-", "_") for k in kernels]


def test_matching_pairs_renamed_reused_and_library_kernels_in_order():
    kernels = kernel_sequence((TEXTS / "h100_scan.hlo").read_text(), H100)
    assert len(kernels) > 10
    names = _names(kernels)
    trace = []
    for i, (name, k) in enumerate(zip(names, kernels, strict=True)):
        if k.detail.startswith("__cublas"):
            trace.append("nvjet_sm90_tst_128x128_64x6_2x1_v_bz_TNT")  # cuBLAS names its own
        elif k.kind == "copy":
            trace.append("memcpy32_post")
        elif i % 3 == 0:  # another XLA numbers its fusions differently: the family still pairs
            trace.append(name.rstrip("0123456789_") + "_977")
        else:
            trace.append(name)
        if i % 5 == 0:
            trace.append("Memset 0")  # no HLO kernel: left out of the pairs
    pairs = match_kernels(trace, kernels)
    assert [hi for _, hi in pairs] == list(range(len(kernels)))  # every kernel, once, in order
    assert all(not trace[ti].startswith("Memset") for ti, _ in pairs)


def _trace_file(kernels, times, steps: int = 3) -> bytes:
    events = [
        {"ph": "M", "pid": 1, "name": "process_name", "args": {"name": "/device:GPU:0"}},
        {"ph": "M", "pid": 2, "name": "process_name", "args": {"name": "/host:CPU"}},
    ]
    ts = 0.0
    for _ in range(steps):
        for name, t in zip(_names(kernels), times, strict=True):
            events.append({"ph": "X", "pid": 1, "tid": 7, "ts": ts, "dur": t * 1e6, "name": name,
                           "args": {"hlo_module": "jit_step"}})  # fmt: skip
            ts += t * 1e6 + 1.0
        events.append({"ph": "X", "pid": 1, "tid": 7, "ts": ts, "dur": 1.0, "name": "Memset 0",
                       "args": {"hlo_module": "jit_step"}})  # fmt: skip
        events.append({"ph": "X", "pid": 2, "tid": 1, "ts": ts, "dur": 5.0, "name": "host"})
        ts += 50.0
    return gzip.compress(json.dumps({"traceEvents": events}).encode())


def test_refit_recovers_the_constants_a_synthetic_profile_was_made_with(tmp_path):
    text = (TEXTS / "h100_scan.hlo").read_text()
    kernels = kernel_sequence(text, H100)
    truth = Calibration("h100", "synthetic", {k: ClassConstants(*v) for k, v in TRUE.items()})
    rows = rows_of(kernels)
    times = [truth.row_seconds(r, H100) for r in rows]
    run = tmp_path / "plugins" / "profile" / "run"
    run.mkdir(parents=True)
    (run / "host.trace.json.gz").write_bytes(_trace_file(kernels, times))
    # a .tar.gz of the folder reads the same
    archive = tmp_path / "profile.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(run / "host.trace.json.gz", arcname="profile/plugins/profile/run/x.trace.json.gz")
    for where in (tmp_path, archive):
        profile = read_profile(where)
        assert profile.module == "jit_step" and len(profile.steps) == 3 and profile.hlo_text is None
        cal, report = refit(where, text, H100, measured_step_s=sum(times) + 1e-3,
                            attention_bench=_bench_rows(1e-5, 0.5),
                            attention_bench_source="bench.json")  # fmt: skip
        assert cal.classes["cudnn attention"].provenance.startswith("bench.json: cuDNN's")
        assert report.hlo_matched == report.hlo_kernels == len(kernels)
        assert report.matched == len(kernels) and report.trace_kernels == len(kernels) + 1
        for klass, fitted in cal.classes.items():
            if klass == "cudnn attention":
                continue
            # a class with few kernels may trade its floor for its rate: its times must agree
            for r in rows:
                if r.klass == klass:
                    assert fitted.seconds(r.compute_seconds(H100), r.bytes / H100.hbm_bandwidth) \
                        == pytest.approx(truth.row_seconds(r, H100), rel=0.05)  # fmt: skip
        assert cal.step_overhead_s == pytest.approx(1e-3, rel=0.05)
        assert "given" in cal.notes[-1] and "synthetic" not in cal.measurement


def test_refit_without_any_hlo_says_to_pass_it(tmp_path):
    kernels = kernel_sequence((TEXTS / "h100_scan.hlo").read_text(), H100)
    path = tmp_path / "x.trace.json.gz"
    path.write_bytes(_trace_file(kernels, [1e-6] * len(kernels), steps=1))
    with pytest.raises(ValueError, match="carries no HLO of jit_step; pass the step's compiled"):
        refit(path, None, H100)
    with pytest.raises(FileNotFoundError):
        read_profile(tmp_path / "missing")


# ---- the xplane's HLO ----


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, value: bytes | int) -> bytes:
    if isinstance(value, int):
        return _varint(number << 3) + _varint(value)
    return _varint(number << 3 | 2) + _varint(len(value)) + value


def test_the_programs_hlo_is_read_from_the_xplane():
    def f(x):
        return jnp.sin(x) * 2.0

    lowered = jax.jit(f).lower(jax.ShapeDtypeStruct((8,), jnp.float32))
    module = lowered.compiler_ir("hlo").as_serialized_hlo_module_proto()
    stat = _field(1, 9) + _field(6, _field(1, module))  # XStat: metadata_id, bytes (HloProto)
    event_meta = _field(1, 5) + _field(2, b"jit_f(17)") + _field(5, stat)
    stat_meta = _field(1, 9) + _field(2, b"Hlo Proto")
    plane = (
        _field(2, b"/host:metadata")
        + _field(4, _field(1, 5) + _field(2, event_meta))  # map<int64, XEventMetadata>
        + _field(5, _field(1, 9) + _field(2, stat_meta))  # map<int64, XStatMetadata>
    )
    space = _field(1, _field(2, b"/device:GPU:0")) + _field(1, plane)
    text = hlo_of_xplane(space, "jit_f")
    assert text is not None and "ENTRY %" in text and "sine" in text
    assert hlo_of_xplane(space, "jit_g") is None


def test_a_profile_with_no_kernels_is_refused(tmp_path):
    path = tmp_path / "x.trace.json.gz"
    path.write_bytes(gzip.compress(json.dumps({"traceEvents": []}).encode()))
    with pytest.raises(ValueError, match="no GPU kernel of an XLA program"):
        read_profile(path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no \\*.trace.json.gz"):
        read_profile(empty)


ASYNC_SLICE = """HloModule m, is_scheduled=true

%fused_slice (p0: f32[4,8], p1: s32[]) -> f32[1,8] {
  %p0 = f32[4,8]{1,0} parameter(0)
  %p1 = s32[] parameter(1)
  %z = s32[] constant(0)
  ROOT %ds = f32[1,8]{1,0} dynamic-slice(%p0, %p1, %z), dynamic_slice_sizes={1,8}
}

ENTRY %main (a: f32[4,8], i: s32[]) -> f32[1,8] {
  %a = f32[4,8]{1,0} parameter(0)
  %i = s32[] parameter(1)
  FUSION_START
  ROOT %fd = f32[1,8]{1,0} fusion-done(%fs)
}
""".replace(
    "FUSION_START",
    "%fs = ((f32[4,8]{1,0}, s32[]), f32[1,8]{1,0}, u32[]) fusion-start(%a, %i), kind=kLoop, "
    "calls=%fused_slice",
)


def test_an_asynchronous_slice_counts_its_slice_and_is_a_copy():
    # Newer XLA (the GPU's 0.11.2) runs a loop's dynamic slice as an asynchronous fusion: its
    # shape holds its operands, so only the called fusion says what it moves (one [1, 8] row).
    [kernel] = kernel_sequence(ASYNC_SLICE, H100)
    # reads the row (32 bytes) and its index (4), writes the row
    assert kernel.detail == "fusion-start" and (kernel.bytes_read, kernel.bytes_written) == (36, 32)
    assert rows_of([kernel])[0].klass == "copy"
