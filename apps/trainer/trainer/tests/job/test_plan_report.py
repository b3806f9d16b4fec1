"""A plan's report over an app's steps: the kernel choice, each step's compile kept as a finding,
the memory fit, the estimate and the eval step, each in its line and in ``data``; the one error
line that ends a plan; and the targets a plan is for."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import jax
import pytest

from tjx.metrics import GIB, Compiled, Target, accelerator, deviceless
from trainer.plan.plan_report import does_not_fit, local_target, open_target, plan_report

TEXTS = Path(__file__).parent / "hlo_texts"
REFUSED = "RESOURCE_EXHAUSTED: HLO temporaries (27.98G) exceeds available HBM (15.75G)"


class Program:
    """A compiled program as far as a plan reads it: its optimized HLO."""

    def as_text(self) -> str:
        return (TEXTS / "h100_pallas.hlo").read_text()


def run_of(kernel: str = "auto", remat: str = "none", micro: int = 1) -> SimpleNamespace:
    return SimpleNamespace(
        kernel=kernel, model=SimpleNamespace(remat=remat), optimizer=SimpleNamespace(micro=micro)
    )


class App:
    """An app's side of a plan: steps compiled from ``peaks`` by (kernel, remat, micro-batches)
    (None: refused for memory; a string: that compile error; a pair: the peak and how it was
    compiled), everything compiled recorded."""

    def __init__(self, peaks: dict[tuple[str, str, int], Any], eval_error: str | None = None):
        self.peaks, self.eval_error, self.compiled = peaks, eval_error, []

    def choose(self, build, say) -> str:
        say("attention: pallas (auto: fastest measured)")
        try:
            build("pallas")
        except RuntimeError as err:
            if str(err).startswith("RESOURCE_EXHAUSTED"):  # sized: the memory fit decides
                return "pallas"
            say(f"attention: pallas failed to lower or compile ({err}); using xla")
            return "xla"
        return "pallas"

    def compile_step(self, run, label: str, train: bool) -> Compiled:
        self.compiled.append((label, train))
        if not train:
            if self.eval_error:
                return Compiled(label, 1.0, error=self.eval_error)
            return Compiled(label, 2.0, compiled=Program(), peak=GIB)
        peak = self.peaks[(run.kernel, run.model.remat, run.optimizer.micro)]
        if peak is None:
            return Compiled(label, 1.0, error=REFUSED)
        if isinstance(peak, str):
            return Compiled(label, 1.0, error=peak)
        peak, note = peak if isinstance(peak, tuple) else (peak, None)
        return Compiled(label, 3.0, compiled=Program(), peak=peak, note=note)

    def report(self, say, target: Target | None = None):
        def lighter(run):
            yield run_of(run.kernel, "full", run.optimizer.micro), "model.remat=full"
            yield run_of(run.kernel, "full", 2), "optimizer.accumulation_steps=2"

        return plan_report(
            "tiny",
            target or Target(accelerator("v5e"), 1, []),
            "v5e",
            say,
            choose=self.choose,
            with_kernel=lambda kernel: run_of(kernel),
            compile_step=self.compile_step,
            lighter=lighter,
            settings={"remat": "model.remat", "accumulation_steps": "optimizer.micro"},
            estimate_args=lambda run: {"units": 4096, "unit": "tokens", "model_flops": (1e9, 2e9)},
            eval_rows=lambda run: 16,
        )


def test_a_plan_that_fits_says_each_finding_and_records_it():
    app, lines = App({("pallas", "none", 1): 2 * GIB}), []
    result = app.report(lines.append)
    assert result.error is None and (result.target, result.config) == ("v5e", "tiny")
    assert lines[0].startswith("plan: tiny on 1 × TPU v5e") and "nothing written" in lines[0]
    assert lines[1] == "attention: pallas (auto: fastest measured)"
    assert lines[2] == "train step: compiles (3.0 s)"
    assert lines[3].startswith("memory: as configured: 2.00 GiB per device") and "fits" in lines[3]
    assert lines[4] == "custom calls per step: tiny_add ×1"
    assert lines[5].startswith("estimate: ")
    assert lines[-1] == "eval step: compiles in 2.0 s; 1.00 GiB per device for a batch of 16"
    data = json.loads(json.dumps(result.data, default=str))
    assert list(data) == [
        "target", "device", "devices", "config", "attention", "memory", "train", "estimate", "eval"
    ]  # fmt: skip
    assert data["attention"] == {
        "kernel": "pallas", "line": "attention: pallas (auto: fastest measured)"
    }  # fmt: skip
    train = data["train"]
    assert list(train) == [
        "compiles", "compile_s", "compiled_before", "peak_bytes", "changes", "f32_dots",
        "gemm_operands", "note", "remat", "accumulation_steps", "custom_calls",
    ]  # fmt: skip
    assert train["compiled_before"] is False
    assert train["remat"] == "none" and train["accumulation_steps"] == 1
    assert train["gemm_operands"] == {}  # the stand-in step's HLO has no GEMM
    assert train["custom_calls"] == {"tiny_add": 1} and "custom_calls" not in data["estimate"]
    assert data["eval"] == {"compiles": True, "peak_bytes": GIB}
    # The chosen kernel's step was compiled once, for the choice; then the eval step.
    assert app.compiled == [("pallas", True), ("the eval step", False)]


def test_a_step_compiled_unusually_says_how_under_its_line():
    lines: list[str] = []
    result = App({("pallas", "none", 1): (GIB, "compiled with cuBLAS GEMMs")}).report(lines.append)
    assert lines[2:4] == ["train step: compiles (3.0 s)", "  note: compiled with cuBLAS GEMMs"]
    assert result.data["train"]["note"] == "compiled with cuBLAS GEMMs"


def test_a_kernel_that_fails_is_one_line_and_the_plan_goes_on_with_the_next():
    app, lines = App({("pallas", "none", 1): "INTERNAL: no tiles", ("xla", "none", 1): GIB}), []
    result = app.report(lines.append)
    line = "attention: pallas failed to lower or compile (INTERNAL: no tiles); using xla"
    assert lines[1:3] == ["attention: pallas (auto: fastest measured)", line]
    assert result.data["attention"]["kernel"] == "xla"
    assert result.data["attention"]["line"].endswith("; " + line)
    assert app.compiled[:2] == [("pallas", True), ("xla", True)] and result.error is None


def test_a_train_step_that_does_not_compile_ends_the_plan_in_one_line():
    failing = {
        ("pallas", "none", 1): "INTERNAL: no tiles",
        ("xla", "none", 1): "INTERNAL: ptxas failed",
    }
    app, lines = App(failing), []
    result = app.report(lines.append)
    assert result.error == "--plan v5e: the train step does not compile: INTERNAL: ptxas failed"
    assert lines[-1] == "train step: does not compile (INTERNAL: ptxas failed)"
    assert result.data["train"] == {"compiles": False, "error": "INTERNAL: ptxas failed"}
    assert "memory" not in result.data and "eval" not in result.data


def test_a_step_refused_for_memory_is_fitted_with_the_lighter_settings():
    peaks = {("pallas", "none", 1): None, ("pallas", "full", 1): 4 * GIB}
    lines: list[str] = []
    result = App(peaks).report(lines.append)
    assert lines[2] == f"train step: the compiler refuses it for memory ({REFUSED[:120]})"
    assert any(ln.startswith("memory: with model.remat=full: 4.00 GiB") for ln in lines)
    train = result.data["train"]
    assert train["changes"] == "model.remat=full" and train["remat"] == "full"
    assert result.error is None and result.data["memory"]["fits"]


def test_a_step_that_never_fits_is_the_error_line_saying_by_how_much():
    v5e = accelerator("v5e")
    big = {
        ("pallas", r, m): v5e.memory_bytes + (m + 1) * GIB for r in ("none", "full") for m in (1, 2)
    }
    result = App(big).report(lambda line: None)
    # by the smallest peak tried: as configured and with full remat, 2 GiB over
    assert result.error is not None and "does not fit by 2.00 GiB per device" in result.error
    assert "even with model.remat=full, optimizer.accumulation_steps=2" in result.error
    assert result.data["train"]["changes"] == "pallas"  # the plan goes on as configured
    assert result.data["eval"]["compiles"]


def test_an_eval_step_that_does_not_compile_is_said_and_ends_the_plan():
    app, lines = App({("pallas", "none", 1): GIB}, eval_error="INTERNAL: eval broke"), []
    result = app.report(lines.append)
    assert lines[-1] == "eval step: does not compile (INTERNAL: eval broke)"
    assert result.error == "--plan v5e: the eval step does not compile"
    assert result.data["eval"] == {"compiles": False, "peak_bytes": None}


def test_the_advice_shards_over_four_times_the_devices():
    target = Target(accelerator("h100"), 2, [])
    memory = {
        "budget_bytes": 10 * GIB,
        "tried": [
            {"change": "xla", "peak_bytes": None, "error": REFUSED},
            {"change": "model.remat=full", "peak_bytes": 12 * GIB, "error": None},
        ],
    }
    assert does_not_fit("2xh100", target, memory, "--x") == (
        "--x 2xh100: the train step does not fit by 2.00 GiB per device even with "
        "model.remat=full; lower data.batch_size or data.seq_len, or shard the parameters and "
        "optimizer state over more devices (--x 8xh100 --set mesh.strategy=fsdp --set "
        "mesh.data=1 --set mesh.fsdp=-1)"
    )
    memory["tried"] = memory["tried"][:1]  # nothing sized, nothing lighter tried
    assert "does not fit per device; lower" in does_not_fit("h100", target, memory)


def test_a_target_opens_the_abstract_devices_of_its_platform(monkeypatch):
    monkeypatch.setattr(deviceless, "_find", lambda module: True)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    calls: list[tuple] = []

    def abstract_devices(platform, topology, **kw):
        calls.append((platform, topology, sorted(kw)))
        return ["d0", "d1", "d2", "d3"]

    tpu = open_target("v5e", abstract_devices)
    assert tpu.devices == ["d0"] and tpu.count == 1  # one chip of the smallest slice
    gpu = open_target("2xh100", abstract_devices)
    assert gpu.devices == ["d0", "d1"] and gpu.device.key == "h100"
    assert calls == [("tpu", "v5e:2x2", []), ("cuda", "1x1x2", ["target_config"])]


def test_a_target_keeps_its_compiles_in_the_compilation_cache_setting_folder(monkeypatch, tmp_path):
    monkeypatch.setattr(deviceless, "_find", lambda module: True)
    monkeypatch.setenv("TJX_COMPILATION_CACHE_DIR", str(tmp_path / "env"))
    opened = lambda text, **kw: open_target(text, lambda *a, **k: ["d0", "d1"], **kw)
    one, two, tpu = opened("h100"), opened("2xh100"), opened("v5e")
    assert one.findings is not None and two.findings is not None and tpu.findings is not None
    assert one.findings.folder == tmp_path / "env" / "deviceless"
    assert len({one.findings.target, two.findings.target, tpu.findings.target}) == 3
    named = opened("h100", compilation_cache=str(tmp_path / "named")).findings
    assert named is not None and named.folder == tmp_path / "named" / "deviceless"
    assert named.target == one.findings.target  # the same target, another folder
    assert opened("h100", compilation_cache="off").findings is None


def test_a_target_that_cannot_be_opened_is_one_line(monkeypatch):
    with pytest.raises(ValueError, match="^--plan: unknown target 'h800'; known: h100"):
        open_target("h800", lambda *a, **k: [])
    with pytest.raises(ValueError, match="^--y: "):
        open_target("3xh100", lambda *a, **k: [], "--y")
    monkeypatch.setattr(deviceless, "_find", lambda module: False)
    with pytest.raises(ImportError, match="^--plan: a TPU plan needs libtpu"):
        open_target("v5e", lambda *a, **k: [])


def test_this_machine_is_a_target_only_as_a_table_entry():
    found = local_target("v5e")
    assert found.device.key == "v5e" and found.devices == jax.devices()
    assert found.count == len(jax.devices())
    with pytest.raises(ValueError, match="no entry for 'cpu'; pass device="):
        local_target()
