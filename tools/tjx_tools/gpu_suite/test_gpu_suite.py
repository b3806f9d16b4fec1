"""The GPU suite end to end on CPU (``--smoke``), so it cannot rot between GPU sessions.

The smoke runs go through ``tools/gpu_suite`` exactly as on the GPU machine (the launcher script,
a fresh interpreter, one device), with ``datasets``, ``wandb`` and ``tensorboardX`` made
unimportable: the suite's path must not need them (the GPU machine does not have them). Two runs:
``--part all`` (the one prepared device call, #68: test_one_call.py) and ``--part full`` (the
kernel, train and startup parts in turn, here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tjx.kernels import LaunchDefaults, default_launch
from tjx.kernels.launch import clear_launch_cache, load_launch_tables
from tjx_tools.gpu_suite import attention, fold, kernels, train_step
from tjx_tools.gpu_suite.__main__ import main
from tjx_tools.gpu_suite.report import Report, Section

REPO = Path(__file__).resolve().parents[3]
SECTIONS = ["environment", "kernels", "tune", "attention", "train_step", "train_run", "startup"]
H100 = "NVIDIA H100 80GB HBM3"
BLOCKED = ("datasets", "wandb", "tensorboardX")


def smoke_run(
    tmp: Path, part: str, extra_env: dict[str, str] | None = None
) -> tuple[Path, dict[str, Any], str]:
    """``tools/gpu_suite run --smoke --part PART`` in ``tmp``: (out folder, results.json, its
    stdout)."""
    blocker = tmp / "blocked"
    blocker.mkdir()
    for name in BLOCKED:
        (blocker / f"{name}.py").write_text(
            f"raise ImportError('{name} is blocked by this test')\n"
        )
    drop = ("XLA_FLAGS", "TJX_CACHE", train_step.TORCH_PYTHON_ENV)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    # One device, as on the GPU machine; the tests' compile-speed flags (pants.toml: LLVM at -O1)
    # stay, for the smoke run's tiny programs are mostly compile time (its figures are not
    # performance figures).
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    if flags:
        env["XLA_FLAGS"] = " ".join(flags)
    paths = [str(blocker), *(os.path.abspath(p or os.curdir) for p in sys.path)]
    env.update(PYTHONPATH=os.pathsep.join(paths), TJX_PYTHON=sys.executable, JAX_PLATFORMS="cpu")
    env["TJX_CACHE"] = str(tmp / "cache")  # nothing may be downloaded into the user's cache
    env.update(extra_env or {})
    out = tmp / "out"
    proc = subprocess.run(
        ["bash", str(REPO / "tools" / "gpu_suite"), "run", "--smoke", "--part", part, "--out",
         str(out)],  # fmt: skip
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, json.loads((out / "results.json").read_text()), proc.stdout


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any], str]:
    """One smoke run of the kernel, train and startup parts (``--part full``)."""
    return smoke_run(tmp_path_factory.mktemp("gpu_suite"), "full")


def test_every_section_runs_and_is_reported(smoke: tuple[Path, dict[str, Any], str]) -> None:
    out, doc, stdout = smoke
    assert list(doc["sections"]) == SECTIONS
    assert {s["status"] for s in doc["sections"].values()} == {"ok"}
    assert doc["smoke"] is True and doc["meta"]["backend"] == "cpu"
    md = (out / "results.md").read_text()
    for name in SECTIONS:
        assert f"## {name} (" in md
    assert "smoke run (CPU, tiny shapes): not performance figures" in md
    assert md in stdout  # the report is also printed for the device tool's output


def test_kernel_checks_cover_the_cases(smoke: tuple[Path, dict[str, Any], str]) -> None:
    rows = smoke[1]["sections"]["kernels"]["rows"]
    measured = [r for r in rows if "pass" in r]
    assert {r["impl"] for r in measured} == {"pallas", "xla"}
    assert {r["case"] for r in measured} == {c.name for c in kernels.cases(smoke=True)}
    assert all(r["pass"] and r["out"] < 1e-5 for r in measured)  # float32 against float64
    assert all("CUDA GPU" in r["unsupported"] for r in rows if r["impl"] == "cudnn")


def test_tuned_table_is_a_valid_launch_table(smoke: tuple[Path, dict[str, Any], str]) -> None:
    out, doc, _ = smoke
    tables = load_launch_tables(out / "launch_table.json")
    (kind,) = tables
    assert kind == doc["meta"]["device_kind"]
    best = doc["sections"]["tune"]["rows"][0]
    assert best["best_fwd_ms"] > 0 and best["best_fwd_bwd_ms"] > 0


def test_attention_train_step_and_run_measured(smoke: tuple[Path, dict[str, Any], str]) -> None:
    out, doc, _ = smoke
    attn = doc["sections"]["attention"]["rows"]
    assert all(r["fwd_ms"] > 0 for r in attn if r["impl"] in ("pallas", "xla"))
    assert all("cuDNN needs a CUDA GPU" in r["error"] for r in attn if r["impl"] == "cudnn")
    # JAX's Mosaic GPU kernel is called with float16 inputs (its tiles are float16).
    assert {r["dtype"] for r in attn if r["impl"] == "jax-mgpu"} == {"float16"}
    run = doc["sections"]["train_run"]["summary"]
    assert run["steps"] == 16 and run["last_loss"] < run["first_loss"]
    assert run["last_val_loss"] is not None
    assert (out / "loss_curve.png").stat().st_size > 0
    assert (out / "profile.tar.gz").stat().st_size > 0


def test_matmul_probe_reports_both_outputs_and_its_method(
    smoke: tuple[Path, dict[str, Any], str],
) -> None:
    _, doc, _ = smoke
    env = doc["sections"]["environment"]["summary"]
    assert env["matmul_tflops_bf16_out"] > 0 and env["matmul_tflops_f32_out"] > 0
    assert env["matmul_tflops"] == max(env["matmul_tflops_bf16_out"], env["matmul_tflops_f32_out"])
    assert "back-to-back" in env["matmul_method"] and "rotating" in env["matmul_method"]


def test_each_step_row_is_compiled_once_and_reads_its_kernels(
    smoke: tuple[Path, dict[str, Any], str],
) -> None:
    out, doc, stdout = smoke
    sec = doc["sections"]["train_step"]
    steps = sec["rows"]
    # The same batch by name, then the largest batch that fits (4 rows of tiny's smoke shape).
    assert [r["label"] for r in steps] == ["auto", "pallas", "xla", "auto, batch 4"]
    assert [r["attention_kernel"] for r in steps] == ["xla", "pallas", "xla", "xla"]  # CPU: XLA
    assert steps[-1]["tokens_per_step"] == 2 * steps[0]["tokens_per_step"]
    for r in steps:
        assert r["loss_finite"] and r["tokens_per_s"] > 0 and r["pipelined_step_s"] > 0
        # From the one compiled executable: its peak, its kernels, the roofline of its HLO.
        assert r["peak_bytes"] > 0 and r["kernels_per_step"] > 10 and r["est_step_s"] > 0
        assert sum(r["launches_by_kind"].values()) == r["kernels_per_step"]
    assert "kernels/step" in sec["markdown"]
    with tarfile.open(out / train_step.PROFILE) as tar:  # the auto step's profile
        assert any(name.endswith("xplane.pb") for name in tar.getnames())
    assert (out / train_step.PROFILE).stat().st_size < train_step.FILE_LIMIT
    if train_step.torch_available():
        assert sec["summary"]["peer"]["tokens_per_s"] > 0
    else:
        assert "peer: torch is not importable by this python" in " ".join(sec["notes"])
    fits = sec["summary"]["fits"]
    assert [f["step"] for f in fits] == ["tiny"] and fits[0]["peak_bytes"] > 0
    assert isinstance(fits[0]["fits"], bool) and fits[0]["kernels_per_step"] > 10
    assert [f["step"] for f in sec["summary"]["batch_fit"]] == ["tiny batch 4"]
    assert sec["summary"]["largest_batch"] == 4


def test_startup_times_a_cold_and_a_warm_start_to_step_one(
    smoke: tuple[Path, dict[str, Any], str],
) -> None:
    _, doc, _ = smoke
    sec = doc["sections"]["startup"]
    rows = sec["rows"]
    assert [(r["config"], r["cache"], r["status"]) for r in rows] == [
        ("tiny", "cold", "ok"),
        ("tiny", "warm", "ok"),
    ]
    assert all(0 < r["seconds"] < r["limit_s"] for r in rows)
    assert sec["summary"]["total_s"] >= sum(r["seconds"] for r in rows)
    assert "to step 1 (s)" in sec["markdown"]


def test_a_start_past_its_limit_is_killed_and_said(tmp_path: Path) -> None:
    from tjx_tools.gpu_suite import startup

    corpus = tmp_path / "c.txt"
    corpus.write_text("x\n")
    row = startup.time_to_first_step("tiny", tmp_path / "cache", str(corpus), True, 0.5)
    assert row["status"] == "> limit" and row["seconds"] is None


def test_fold_writes_benchmarks_and_launch_table(
    smoke: tuple[Path, dict[str, Any], str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, doc, _ = smoke
    bench = tmp_path / "BENCHMARKS.md"
    bench.write_text("# tjx benchmarks\n\nCPU figures.\n")
    table = tmp_path / "launch_tables.json"
    table.write_text('{"schema": 1, "devices": {}}\n')
    cases = tmp_path / "measured.json"  # never the repository's: a test writes its own
    kw: dict[str, Any] = dict(benchmarks=bench, launch_tables=table, measured_cases=cases)
    with pytest.raises(SystemExit, match="smoke results"):
        fold.fold([out], **kw)
    key = fold.fold([out], **kw, allow_smoke=True)
    first = bench.read_text()
    assert first.startswith("# tjx benchmarks\n\nCPU figures.\n") and fold.SECTION in first
    assert first.count(f"<!-- gpu_suite {key} begin -->") == 1
    # The train part's steps are calibration cases too (a smoke run's are never compiled).
    assert len(json.loads(cases.read_text())["cases"]) == len(doc["sections"]["train_step"]["rows"])
    fold.fold([out], **kw, allow_smoke=True)
    assert bench.read_text() == first  # folding the same run again replaces its block
    # The folded table is what the kernels now use on that device kind.
    monkeypatch.setenv("TJX_FLASH_LAUNCH_TABLES", str(table))
    clear_launch_cache()
    tuned = doc["sections"]["tune"]["rows"][0]
    got = default_launch(tuned["head_dim"], "float32", device_kind=doc["meta"]["device_kind"])
    assert got == LaunchDefaults(**tuned["best"])
    clear_launch_cache()


def test_fold_puts_a_newer_run_above_an_older_one() -> None:
    text = fold.fold_markdown("# B\n", "2026-01-01 gpu A", "old figures")
    text = fold.fold_markdown(text, "2026-02-01 gpu A", "new figures")
    assert text.index("new figures") < text.index("old figures")
    assert text.count(fold.SECTION) == 1 and text.count(fold.INTRO) == 1
    text = fold.fold_markdown(text, "2026-01-01 gpu A", "old, corrected")
    assert "old figures" not in text and text.index("new figures") < text.index("old, corrected")


def test_a_kernel_worse_than_allowed_fails_loudly() -> None:
    base = {"case": "c", "dtype": "bfloat16", "head_dim": 64}
    xla = {**base, "impl": "xla", "out": 1e-3, "dq": 2e-3, "dk": 2e-3, "dv": 1e-3}
    good = {**base, "impl": "pallas", "out": 1e-3, "dq": 3e-3, "dk": 2e-3, "dv": 1e-3}
    bad = {**base, "impl": "cudnn", "out": 1e-3, "dq": 0.2, "dk": 2e-3, "dv": 1e-3}
    failures = kernels.judge([xla, good, bad])
    assert good["pass"] and not bad["pass"]
    assert failures == ["cudnn c bfloat16 d64: error 2.00e-01 > allowed 3.00e-02"]


def test_a_crashing_section_is_recorded_and_saved(tmp_path: Path) -> None:
    report = Report(tmp_path, smoke=True, budget_s=10.0)
    with report.section("first") as sec:
        sec.rows.append({"x": 1})
    with report.section("second"):
        raise RuntimeError("boom")
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["sections"]["first"]["status"] == "ok"
    assert saved["sections"]["second"]["notes"] == ["error: RuntimeError: boom"]
    assert report.failed


def test_run_without_a_gpu_needs_smoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--out", str(tmp_path)]) == 2
    assert "no GPU here" in capsys.readouterr().err
    assert not (tmp_path / "results.json").exists()


def test_past_the_budget_cells_are_skipped_and_said() -> None:
    sec = Section("attention")
    attention.run(sec, smoke=True, deadline=0.0)
    assert sec.rows == []
    assert sec.notes == [
        f"{len(attention.IMPLS) * len(attention.grid(smoke=True))} cells skipped: the time "
        "budget was spent"
    ]
    sec = Section("train_step")
    train_step.run(sec, smoke=True, meta={}, deadline=0.0)
    assert sec.rows == [] and sec.summary.get("largest_batch") is None
    peer = (
        "skipped (time budget): peer (nanoGPT recipe)"
        if train_step.torch_available()
        else "peer: torch is not importable by this python; nanoGPT's recipe was not measured"
    )
    assert sec.notes == [
        "skipped (time budget): throughput, tiny auto",
        peer,
        "skipped (time budget): throughput, tiny pallas",
        "skipped (time budget): throughput, tiny xla",
        "skipped (time budget): memory fits",
    ]


def test_auto_ranks_by_the_timings_at_the_presets_sequence_length() -> None:
    # H100, 2026-11-25 (ms, fwd+bwd, head_dim 64, causal): Pallas wins at 1,024, loses above;
    # summed over the sequences it would lose, and gpt2_small (seq 1,024) would get cuDNN.
    measured = {1024: (1.47, 1.67, 9.6), 2048: (2.01, 1.88, 17.7), 4096: (3.57, 3.37, 33.6)}
    rows = [
        {"head_dim": 64, "seq": seq, "causal": True, "impl": impl, "fwd_bwd_ms": ms}
        for seq, times in measured.items()
        for impl, ms in zip(("pallas", "cudnn", "xla"), times, strict=True)
    ]
    correct = {("pallas", 64), ("cudnn", 64), ("xla", 64)}
    got = attention.timings(rows, correct, "bfloat16")
    assert got == {"bf16-64": {"pallas": 1.47, "cudnn": 1.67, "xla": 9.6}}
    # Without a cell at that length: the sum over the cells every kernel measured.
    longer = [r for r in rows if r["seq"] != attention.TIMING_SEQ]
    assert attention.timings(longer, correct, "bfloat16")["bf16-64"]["cudnn"] == pytest.approx(
        1.88 + 3.37
    )
    # A kernel the correctness checks failed gets no time (auto never ranks it).
    assert (
        "pallas" not in attention.timings(rows, correct - {("pallas", 64)}, "bfloat16")["bf16-64"]
    )


def test_the_packaged_table_makes_auto_take_what_the_h100_measured_for_gpt2_small() -> None:
    from tjx import kernels, nn
    from trainer import load_config, resolve

    clear_launch_cache()
    model = resolve(load_config("gpt2_small", []), 50304).model
    built: list[str] = []
    with kernels.target("gpu", H100, (9, 0)):
        resolved = nn.resolve_attention(model, build=built.append, say=lambda _: None)
    chosen, fell_back = resolved.name, resolved.fell_back
    # The suite measured Pallas fwd+bwd 1.13x cuDNN at gpt2_small's shape (bf16, d 64, seq 1024).
    assert (chosen, fell_back, built) == ("pallas", False, ["pallas"])
    h100 = kernels.Target("gpu", H100, (9, 0))
    assert kernels.auto_order("bfloat16", 128, h100).kernel == "cudnn"  # 1.20x Pallas at d 128


def test_fold_adds_a_jsonl_table_and_calls_the_calibration_hook(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    peers = tmp_path / "peers.jsonl"
    peers.write_text(
        'using fused AdamW: True\n{"peer": "p", "batch": 16, "tokens_per_s": 419780.3}\n'
    )
    table = fold.jsonl_table(peers)
    assert table.splitlines()[0] == "| peer | batch | tokens_per_s |"
    assert table.splitlines()[2] == "| p | 16 | 419,780.3 |"
    empty = tmp_path / "empty.jsonl"
    empty.write_text("no json here\n")
    with pytest.raises(SystemExit, match="no JSON object lines"):
        fold.jsonl_table(empty)
    assert fold.calibrate([tmp_path], ("tjx_tools_no_such_module", "refit")) is None
    assert "no tjx_tools_no_such_module.refit yet" in capsys.readouterr().out
    seen: list[Any] = []
    hook = type(sys)("calib_hook_for_test")
    hook.refit = lambda outs: seen.append(outs) or "refitted 3 constants"  # type: ignore
    monkeypatch.setitem(sys.modules, "calib_hook_for_test", hook)
    assert fold.calibrate([tmp_path], ("calib_hook_for_test", "refit")) == "refitted 3 constants"
    assert seen == [[tmp_path]]


def test_a_failing_cell_is_one_note_and_earlier_rows_are_already_saved(tmp_path: Path) -> None:
    report = Report(tmp_path, smoke=True, budget_s=60.0)
    with report.section("cells") as sec:
        sec.add_row({"cell": 1})
        saved = json.loads((tmp_path / "results.json").read_text())
        assert saved["sections"]["cells"]["rows"] == [{"cell": 1}]  # before the section ends
        with sec.cell("pallas d128"):
            raise RuntimeError("Triton: out of shared memory\ndetails")
        sec.add_row({"cell": 2})  # the section goes on
    assert sec.status == "FAIL" and [r["cell"] for r in sec.rows] == [1, 2]
    assert sec.notes == ["FAIL: pallas d128: RuntimeError: Triton: out of shared memory"]


def test_a_kernel_that_fails_to_compile_is_a_failed_row(monkeypatch: pytest.MonkeyPatch) -> None:
    import tjx.kernels.flash as flash
    from tjx.kernels.testing import failing_attention

    monkeypatch.setattr(flash, "flash_attention", failing_attention("compile"))
    rows = kernels.check_case(kernels.cases(smoke=True)[1], "float32", 32, seed=1)
    pallas = next(r for r in rows if r["impl"] == "pallas")
    assert pallas["error"].startswith("JaxRuntimeError")
    assert next(r for r in rows if r["impl"] == "xla")["out"] < 1e-5  # the others still ran
    failures = kernels.judge(rows)
    assert len(failures) == 1 and failures[0].startswith("pallas mha causal float32 d32")


def test_the_launcher_turns_preallocation_off() -> None:
    text = (REPO / "tools" / "gpu_suite").read_text()
    assert 'export XLA_PYTHON_CLIENT_PREALLOCATE="${XLA_PYTHON_CLIENT_PREALLOCATE:-false}"' in text
