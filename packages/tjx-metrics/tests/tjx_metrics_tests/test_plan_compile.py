"""A plan for a device that is not here: the target, what its compiler needs, each step's compile
kept as a finding, the memory budget, and the roofline said in the plan's lines."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import jax
import pytest

from tjx.metrics import (
    CUBLAS_NOTE,
    Compiled,
    CustomCall,
    Target,
    accelerator,
    budget_bytes,
    check_packages,
    compile_lowered,
    deviceless,
    estimate,
    f32_dots,
    first_line,
    fit_compiled,
    gemm_operands,
    grouped_notes,
    quiet_native_stderr,
    refused_text,
    use_cpu_platform,
)

TEXTS = Path(__file__).parent / "hlo_texts"


def test_a_gpu_budget_is_the_share_jax_takes(monkeypatch):
    h100 = accelerator("h100")
    monkeypatch.delenv("XLA_PYTHON_CLIENT_MEM_FRACTION", raising=False)
    assert budget_bytes(h100)[0] == int(h100.memory_bytes * 0.75)
    monkeypatch.setenv("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.9")
    budget, why = budget_bytes(h100)
    assert budget == int(h100.memory_bytes * 0.9) and "=0.9" in why
    v5e = accelerator("v5e")
    assert budget_bytes(v5e)[0] == v5e.memory_bytes  # the compiler enforces it


def test_a_tpu_refusal_is_said_with_its_figures_when_it_gives_them():
    error = "RESOURCE_EXHAUSTED: HLO temporaries (27.98G) exceeds available HBM (15.75G)"
    assert refused_text(error) == (
        "27.98G of temporaries alone (the compiler refuses it; 15.75G free)"
    )
    assert refused_text("RESOURCE_EXHAUSTED") == "more than the chip has (the compiler refuses it)"


def test_float32_matmuls_are_named_by_their_operation():
    dims = "lhs_contracting_dims={1}, rhs_contracting_dims={0}"
    text = "\n".join([
        "HloModule m",
        "ENTRY %main (a: f32[2,2], b: bf16[2,2]) -> f32[2,2] {",
        "  %a = f32[2,2]{1,0} parameter(0)",
        "  %b = bf16[2,2]{1,0} parameter(1)",
        "  %c = bf16[2,2]{1,0} convert(%a)",
        f'  %d = f32[2,2]{{1,0}} dot(%a, %a), {dims}, metadata={{op_name="jit(f)/logits"}}',
        f'  ROOT %e = f32[2,2]{{1,0}} dot(%c, %b), {dims}, metadata={{op_name="jit(f)/mixed"}}',
        "}",
    ])  # fmt: skip
    assert f32_dots(text) == ["jit(f)/logits"]


def test_gemms_are_counted_by_their_operand_types_dots_and_cublas_calls_alike():
    # The shapes of an H100's float8 compile (#68): a Triton GEMM's dot inside its fusion over
    # float8 parameters, cuBLASLt's float8 call (a tuple result, scales after the operands), a
    # bf16 cuBLAS GEMM; other custom calls (attention) are not matrix products here.
    dims = "lhs_contracting_dims={1}, rhs_contracting_dims={0}"
    text = "\n".join([
        "%gemm_fusion (p0: f8e4m3fn[4,4], p1: f8e5m2[4,4]) -> bf16[4,4] {",
        "  %p0 = f8e4m3fn[4,4]{1,0} parameter(0)",
        "  %p1 = f8e5m2[4,4]{1,0} parameter(1)",
        "  %t = f8e5m2[4,4]{0,1} transpose(%p1), dimensions={1,0}",
        f"  ROOT %dot.1 = bf16[4,4]{{1,0}} dot(%p0, %t), {dims}",
        "}",
        "ENTRY %main (a: f8e4m3fn[4,4], b: f8e4m3fn[4,4], c: bf16[4,4]) -> bf16[4,4] {",
        "  %a = f8e4m3fn[4,4]{1,0} parameter(0)",
        "  %b = f8e4m3fn[4,4]{1,0} parameter(1)",
        "  %c = bf16[4,4]{1,0} parameter(2)",
        "  %s = f32[] constant(1)",
        '  %g = (bf16[4,4]{1,0}, s8[64]{0}) custom-call(%a, %b, %s, %s), '
        'custom_call_target="__cublas$lt$matmul$f8"',
        '  %h = (bf16[4,4]{1,0}, s8[64]{0}) custom-call(%c, %c), '
        'custom_call_target="__cublas$gemm"',
        '  %q = (bf16[4,4]{1,0}, u8[0]{0}) custom-call(%c, %c, %c), '
        'custom_call_target="__cudnn$fmhaSoftmax"',
        "  ROOT %f = bf16[4,4]{1,0} fusion(%a, %b), kind=kCustom, calls=%gemm_fusion",
        "}",
    ])  # fmt: skip
    assert gemm_operands(text) == {"bf16×bf16": 1, "f8e4m3fn×f8e4m3fn": 1, "f8e4m3fn×f8e5m2": 1}
    assert gemm_operands("") == {}


def test_an_untuned_triton_gemm_is_compiled_with_cublas_and_said():
    calls = []

    class Lowered:
        def compile(self, compiler_options=None):
            calls.append(compiler_options)
            if compiler_options is None:
                raise RuntimeError("INTERNAL: Couldn't find output tile sizes that satisfy hlo")
            return jax.jit(lambda x: x + 1).lower(1.0).compile()

    got = compile_lowered(lambda: Lowered(), "step", 0.0)
    assert calls == [None, {"xla_gpu_enable_triton_gemm": False}]
    assert got.error is None and got.note == CUBLAS_NOTE and got.peak is not None

    class Broken:
        def compile(self, compiler_options=None):
            raise RuntimeError("INTERNAL: ptxas failed\nmore lines")

    failed = compile_lowered(lambda: Broken(), "step")
    assert failed.error == "INTERNAL: ptxas failed" and failed.compiled is None
    assert failed.seconds >= 0 and not failed.out_of_memory


def test_a_step_that_does_not_lower_is_a_finding_not_an_exception():
    def lower():
        raise ValueError("\n  no kernel for this shape\nmore")

    got = compile_lowered(lower, "pallas")
    assert (got.label, got.error, got.compiled) == ("pallas", "no kernel for this shape", None)
    assert first_line(KeyError()) == "KeyError"  # no message: its type


def test_a_refusal_for_memory_is_out_of_memory():
    refused = Compiled("step", 1.0, error="RESOURCE_EXHAUSTED: Ran out of memory")
    assert refused.out_of_memory and not Compiled("step", 1.0, error="INTERNAL: x").out_of_memory


def test_notes_that_say_the_same_of_many_ops_are_one_line():
    notes = [f"conditional.{i}: conditional counted as its most expensive branch" for i in range(5)]
    notes += ["while.3: while loop with no known trip count, counted once", "a plain note"]
    assert grouped_notes(notes) == [
        "conditional counted as its most expensive branch: 5 of them (conditional.0, "
        "conditional.1, conditional.2, …)",
        "while.3: while loop with no known trip count, counted once",
        "a plain note",
    ]


def test_the_estimate_is_said_in_a_few_lines_and_recorded():
    lines: list[str] = []
    seen: list[CustomCall] = []

    def cost(call: CustomCall):
        seen.append(call)
        return {"f32": 1e9}, 1e6, 1e6

    text = (TEXTS / "h100_pallas.hlo").read_text()
    got = estimate(
        text, accelerator("h100"), 1, units=4096, unit="tokens", model_flops=(1e9, 2e9),
        say=lines.append, custom_call_cost=cost,
    )  # fmt: skip
    assert seen and lines[0] == "custom calls per step: tiny_add ×1"
    # The H100 has measured constants: the line says what they were fitted on, and the plain
    # roofline beside it; the launch floors are in the estimate, so no launch-overhead note.
    assert lines[1].startswith("estimate (calibrated on the H100 profile of 2026-11-25")
    assert "tokens/s" in lines[1] and "an estimate" in lines[1]
    assert "the roofline alone: " in lines[1]
    assert lines[2].startswith("  slowest kernels: ")
    assert not any("launch overhead" in line for line in lines)
    assert got["seconds"] > got["roofline_seconds"] and got["label"].startswith("estimate (cal")
    assert got["mfu_palm"] == pytest.approx(2 * got["mfu"])
    assert got["custom_calls"] == {"tiny_add": 1}
    assert got["tokens_per_s"] == pytest.approx(4096 / got["seconds"]) and got["collectives"] == []
    assert sum(row[2] for row in got["kernel_summary"]) == got["launches"]


def test_a_device_with_no_measurement_gets_the_plain_roofline_and_a_launch_note():
    lines: list[str] = []
    text = (TEXTS / "h100_pallas.hlo").read_text()
    got = estimate(
        text, accelerator("a100-80gb"), 1, units=4096, unit="tokens", model_flops=(1e9, 2e9),
        say=lines.append, custom_call_cost=lambda call: ({"f32": 1e6}, 1e3, 1e3),
    )  # fmt: skip
    assert lines[1].startswith("estimate: ") and "an estimate" in lines[1]
    assert any("launch overhead" in line for line in lines)  # a tiny program: launch-bound
    assert got["seconds"] == got["roofline_seconds"] and got["calibrated_by_class"] is None


def test_collectives_on_a_mesh_are_one_more_line():
    lines: list[str] = []
    text = (TEXTS / "h100x8_collectives.hlo").read_text()
    got = estimate(
        text, accelerator("h100"), 8, units=1, unit="tokens", model_flops=(1.0, 2.0),
        say=lines.append,
    )  # fmt: skip
    [line] = [ln for ln in lines if ln.startswith("  collectives (est., at ")]
    assert "all-reduce over 8 ×1" in line and len(got["collectives"]) == 4


def test_a_target_says_its_devices_and_the_kernels_platform():
    target = Target(accelerator("h100"), 8, [])
    assert target.describe() == "8 × H100 SXM (NVIDIA H100 80GB HBM3)"
    assert target.kernel_target == ("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
    assert Target(accelerator("v5e"), 1, []).kernel_target[0] == "tpu"


@pytest.mark.parametrize(
    "platform,words",
    [
        ("gpu", ["jax-cuda12-plugin==", "jax-cuda12-pjrt==", "nvidia-cudnn-cu12", "nvcc"]),
        ("tpu", ["jax[tpu]=="]),
    ],
)
def test_a_missing_package_says_what_to_install(platform, words, monkeypatch):
    monkeypatch.setattr(deviceless, "_find", lambda module: False)
    monkeypatch.setattr(deviceless.shutil, "which", lambda name: None)
    with pytest.raises(ImportError, match="^--plan: a .* plan needs") as err:
        check_packages(platform)
    assert "pip install" in str(err.value) and all(w in str(err.value) for w in words)


def test_packages_that_are_there_are_enough(monkeypatch):
    assert deviceless._find("no_such_parent.child") is False  # a parent that is not there
    monkeypatch.setattr(deviceless, "_find", lambda module: True)
    check_packages("gpu", "--x")
    check_packages("tpu", "--x")


def test_native_stderr_is_kept_off_the_terminal(capfd):
    with quiet_native_stderr():
        os.write(2, b"native chatter\n")
    print("after", file=sys.stderr)
    err = capfd.readouterr().err
    assert "native chatter" not in err and "after" in err


def test_the_cpu_platform_is_set_for_jax(monkeypatch):
    monkeypatch.setenv("JAX_PLATFORMS", "")
    use_cpu_platform()
    assert os.environ["JAX_PLATFORMS"] == "cpu" and jax.config.jax_platforms == "cpu"


def test_a_fit_takes_the_first_lighter_step_that_fits_and_says_each():
    v5e, lines, built = accelerator("v5e"), [], []
    refused = "RESOURCE_EXHAUSTED: HLO temporaries (27.98G) exceeds available HBM (15.75G)"

    def step(label: str, peak: int | None) -> tuple[str, object]:
        def compile_() -> Compiled:
            built.append(label)
            if peak is None:
                return Compiled(label, 1.0, error=refused)
            return Compiled(label, 1.0, compiled=object(), peak=peak)

        return label, compile_

    first = Compiled("as configured", 1.0, error=refused)
    lighter = [step("remat", 40 * 2**30), step("micro", 2 * 2**30), step("never", 1)]
    key, got, record = fit_compiled(first, lighter, v5e, lines.append)
    assert (key, got.label, built) == ("micro", "micro", ["remat", "micro"])  # "never" not built
    assert record["fits"] and [t["change"] for t in record["tried"]] == ["as configured", *built]
    assert lines[0].startswith("memory: as configured: 27.98G of temporaries alone")
    assert lines[1].endswith("does not fit") and lines[2].endswith(": fits")


def test_a_fit_that_never_fits_goes_on_with_the_step_as_configured():
    first = Compiled("as configured", 1.0, compiled=object(), peak=10**15)
    lighter = [("remat", lambda: Compiled("remat", 1.0, error="INTERNAL: boom"))]
    lines: list[str] = []
    key, got, record = fit_compiled(first, lighter, accelerator("h100"), lines.append)
    assert key is None and got is first and not record["fits"]
    assert len(lines) == 1  # a step that fails to compile is not sized: no memory line
    broken = Compiled("as configured", 1.0, error="INTERNAL: boom")
    assert (
        fit_compiled(broken, [("x", lambda: first)], accelerator("h100"), lines.append)[0] is None
    )
