"""``tools/gpu_suite run --part all`` (#68's one prepared device call) end to end on CPU, its
budget, its fold (launch table, calibration cases) and the pieces it is built from.

The smoke run names the scratch PyTorch venv (`PEER_VENV`, made by the HF peer tests and the
nanoGPT side-by-side) for the PyTorch peers when it exists, so its peers run on CPU too; without
it they are notes, which the tests expect instead.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import types
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx_tools.gpu_suite import (
    ce_rows,
    environment,
    fold,
    one_call,
    speculative,
    tokamax_parts,
    train_step,
    versus_torch,
)
from tjx_tools.gpu_suite.report import Report, Section
from tjx_tools.gpu_suite.test_gpu_suite import REPO, smoke_run

PEER_VENV = Path.home() / ".cache" / "tjx" / "torch-peer-venv" / "bin" / "python"
SECTIONS = ["environment", "steps", "attention_vs_torch", "speculative", "kernel_sets", "search",
            "tokamax_parts", "ce_rows", "fp8", "gated_delta"]  # fmt: skip
COMMAND = (
    "PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false tools/gpu_suite run --part all "
    "--out $OUT"
)


@pytest.fixture(scope="module")
def torch_peers() -> bool:
    """Whether the smoke run has an interpreter with torch for the peers."""
    return PEER_VENV.is_file() or train_step.torch_available()


@pytest.fixture(scope="module")
def run_all(
    tmp_path_factory: pytest.TempPathFactory, torch_peers: bool
) -> tuple[Path, dict[str, Any], str]:
    env = {train_step.TORCH_PYTHON_ENV: str(PEER_VENV)} if PEER_VENV.is_file() else {}
    return smoke_run(tmp_path_factory.mktemp("gpu_suite_all"), "all", env)


def test_every_cell_of_the_one_call_runs_in_order(run_all: tuple) -> None:
    out, doc, stdout = run_all
    assert list(doc["sections"]) == SECTIONS
    assert {s["status"] for s in doc["sections"].values()} == {"ok"}, {
        n: s["notes"] for n, s in doc["sections"].items()
    }
    assert (out / "results.md").read_text() in stdout


def test_the_steps_stand_beside_their_pytorch_peers(run_all: tuple, torch_peers: bool) -> None:
    out, doc, _ = run_all
    sec = doc["sections"]["steps"]
    mine = [(r["config"], r["label"]) for r in sec["rows"] if r["label"] != "peer"]
    assert mine == [("tiny", "auto"), ("llama_small", "auto")]
    assert (out / train_step.PROFILE).stat().st_size > 0  # gpt2's auto step, profiled
    for r in sec["rows"]:
        if r["label"] != "peer":
            assert r["median_step_s"] > 0 and r["loss_finite"] and r["kernels_per_step"] > 10
            assert sum(r["gemm_operands"].values()) > 0
    peers = {r["config"]: r for r in sec["rows"] if r["label"] == "peer"}
    if torch_peers:
        assert set(peers) == {"nanoGPT recipe", "PyTorch Llama"}
        # The Llama peer has llama_small's shape as tjx resolves it (smoke: its tiny version).
        assert peers["PyTorch Llama"]["params"] > 0 and peers["PyTorch Llama"]["batch"] == 2
        assert set(sec["summary"]) == {"gpt2 auto / nanoGPT recipe", "llama auto / PyTorch Llama"}
    else:
        assert not peers and any("nanoGPT" in n for n in sec["notes"])
        assert any("torch is not importable" in n and "Llama" not in n for n in sec["notes"])


def test_attention_stands_beside_torch_and_the_program_is_kept(
    run_all: tuple, torch_peers: bool
) -> None:
    out, doc, _ = run_all
    sec = doc["sections"]["attention_vs_torch"]
    jax_rows = [r for r in sec["rows"] if r["side"] == "jax"]
    assert {(r["impl"], r["seq"]) for r in jax_rows} == {
        (i, s) for i in ("pallas", "cudnn", "xla") for s in (48, 64)
    }
    assert all(r["fwd_bwd_ms"] > 0 for r in jax_rows if r["impl"] != "cudnn")
    # Back to back too: the time both sides measure alike.
    assert all(r["fwd_bwd_pipelined_ms"] > 0 for r in jax_rows if r["impl"] != "cudnn")
    for program in sec["summary"]["programs"]:  # XLA's here: no cuDNN on a CPU
        assert (out / program["file"]).stat().st_size > 0 and program["entry_ops"]
    torch_rows = [r for r in sec["rows"] if r["side"] == "torch"]
    if torch_peers:
        assert {(r["layout"], r["seq"]) for r in torch_rows} == {
            (lay, s) for lay in ("bshd", "bhsd") for s in (48, 64)
        }
        assert sec["summary"]["torch_versions"]["torch"]
        assert all(r["fwd_bwd_pipelined_ms"] > 0 for r in torch_rows if not r.get("error"))
    else:
        assert not torch_rows


def test_tokamax_parts_time_xla_s_side_of_each_case_in_the_smoke_run(run_all: tuple) -> None:
    _, doc, _ = run_all
    sec = doc["sections"]["tokamax_parts"]
    assert [(r["case"], r["impl"]) for r in sec["rows"]] == [
        (c.name, "xla") for c in tokamax_parts.cases(smoke=True)
    ]
    assert all(r["fwd_bwd_pipelined_ms"] > 0 for r in sec["rows"])
    assert any("GPU only" in n for n in sec["notes"])


@pytest.mark.parametrize("case", tokamax_parts.cases(smoke=True), ids=lambda c: c.kind)
def test_tokamax_parts_check_passes_the_formula_in_bf16_and_fails_a_wrong_kernel(
    case: tokamax_parts.Case,
) -> None:
    """The check a tokamax kernel must pass on the GPU: the formula itself in bf16 passes it
    (the tolerance is bf16's), a kernel off by a little (the GLU's gate without its
    activation, LayerNorm without its centring, RMSNorm with its scale ignored) fails it."""
    seed = int(np.random.default_rng().integers(1 << 30))  # fresh inputs each run
    assert tokamax_parts.check(case, tokamax_parts.xla_fn(case), seed) <= tokamax_parts.TOLERANCE
    right = tokamax_parts.xla_fn(case)
    rms = tokamax_parts.xla_fn(dataclasses.replace(case, kind="rms_norm"))

    def wrong(x: jax.Array, *weights: jax.Array) -> jax.Array:
        if case.kind == "swiglu":  # the gate without its activation
            return jnp.einsum("td,dkh->kth", x, weights[0]).prod(axis=0)
        if case.kind == "layer_norm":  # no centring
            return rms(x, weights[0]) + weights[1]
        return right(x, jnp.ones_like(weights[0]))  # the scale ignored

    assert tokamax_parts.check(case, wrong, seed) > tokamax_parts.TOLERANCE


def test_fp8_is_measured_against_bf16_on_both_shapes(run_all: tuple) -> None:
    _, doc, _ = run_all
    sec = doc["sections"]["fp8"]
    assert [(r["config"], r["label"]) for r in sec["rows"]] == [
        ("llama_small", "fp8"),
        ("llama3_8b", "bf16"),
        ("llama3_8b", "fp8"),
    ]
    assert all("model.precision.matmul=fp8" in r["sets"] for r in sec["rows"][::2])
    assert set(sec["summary"]) == {"llama_small", "Llama-3-8B proxy"}
    assert all(v["fp8_speedup"] > 0 for v in sec["summary"].values())
    assert "fp8 **" in sec["markdown"]


def test_the_gated_delta_kernels_are_checked_then_timed(run_all: tuple) -> None:
    _, doc, _ = run_all
    sec = doc["sections"]["gated_delta"]
    check = sec["summary"]["check"]
    assert check["pass"] and check["worst"] < 1e-4 and check["pallas_vs_recurrence"] < 1e-3
    assert set(sec["summary"]["timings"]["gdelta-bf16"]) == {"xla", "pallas"}


def test_the_loss_heads_row_kernel_is_checked_then_timed_beside_xla(run_all: tuple) -> None:
    _, doc, _ = run_all
    sec = doc["sections"]["ce_rows"]
    checks = [r for r in sec["rows"] if r["kind"] == "check"]
    assert [(r["impl"], r["z_loss"]) for r in checks] == [("xla", 0.0), ("pallas_rows", 0.0)]
    assert all(max(r["loss"], r["dh"], r["dw"]) < 1e-5 for r in checks)  # interpreted, float32
    assert set(sec["summary"]["timings"]["ce-bf16"]) == {"xla", "pallas_rows"}
    assert "× XLA" in sec["markdown"]


def test_a_wrong_row_kernel_fails_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check can fail: a head whose gradient is off (the hidden states' doubled) is out."""
    real = ce_rows.linear_cross_entropy

    def doubled(h: Any, *a: Any, **kw: Any) -> Any:
        out = real(h, *a, **kw)
        if kw["implementation"] == "xla":
            return out
        return out._replace(loss=out.loss + jax.lax.stop_gradient(-out.loss) + out.loss)

    monkeypatch.setattr(ce_rows, "linear_cross_entropy", doubled)
    rows = ce_rows.check(smoke=True, seed=3)
    assert [r["pass"] for r in rows] == [True, False]


def test_the_search_winner_is_measured_against_its_preset(run_all: tuple) -> None:
    _, doc, _ = run_all
    sec = doc["sections"]["search"]
    (winner,) = sec["rows"]
    assert winner["config_arg"] == "tools/tjx_tools/gpu_suite/configs/llama_small-h100-search.yaml"
    assert sec["summary"]["measured_winner_over_preset"] > 0
    assert sec["summary"]["estimated_winner_over_preset"] == pytest.approx(40.4 / 42.8)
    kernels = doc["sections"]["kernel_sets"]["rows"]
    assert [(r["config"], r["attention_kernel"]) for r in kernels] == [("tiny", "pallas")]
    spec = doc["sections"]["speculative"]["summary"]
    assert spec["same_tokens"] and spec["greedy_tokens_per_s"] > 0  # the hook's row


def test_fold_writes_gated_delta_timings_and_the_measured_steps(
    run_all: tuple, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, doc, _ = run_all
    bench, table = tmp_path / "B.md", tmp_path / "launch.json"
    bench.write_text("# B\n")
    table.write_text('{"schema": 1, "devices": {}}\n')
    cases = tmp_path / "measured.json"
    fold.fold([out], benchmarks=bench, launch_tables=table, allow_smoke=True,
              measured_cases=cases, fixture=None)  # fmt: skip
    printed = capsys.readouterr().out
    assert "#### gated_delta" in printed and "#### steps" in printed  # the block, shown
    assert "calibration fixture: not compiled (--no-fixture)" in printed
    written = json.loads(table.read_text())["devices"][doc["meta"]["device_kind"]]
    assert set(written["timings"]["gdelta-bf16"]) == {"xla", "pallas"}
    assert "gated delta fwd+bwd timings" in written["source"]
    found = json.loads(cases.read_text())["cases"]
    steps = [r for n in fold.STEP_SECTIONS for r in doc["sections"].get(n, {}).get("rows", [])
             if r["label"] != "peer"]  # fmt: skip
    assert len(found) == len(steps) == 7  # 2 steps, 3 fp8, the winner, 1 kernel set
    winner = next(c for n, c in found.items() if n.endswith("search winner"))
    assert winner["config"].endswith("llama_small-h100-search.yaml") and winner["measured_s"] > 0
    # Each case compiles the kernel its step ran (``auto`` would resolve by today's table).
    for name, case in found.items():
        row = next(r for r in steps if name.endswith(f"{r['config']} {r['label']}"))
        kernels = [s for s in case["sets"] if s.startswith("model.attention_impl=")]
        assert kernels[-1] == f"model.attention_impl={row['attention_kernel']}", name
    # calibration_fixture.py reads them as its cases (what it compiles into the fixture).
    sys.path.insert(0, str(REPO / "tools"))
    import calibration_fixture

    read = calibration_fixture.measured_cases(cases)
    assert set(read) == set(found) and read[next(iter(read))].device == "v5e"
    assert "#### calibration" not in bench.read_text()  # not compiled: no check table


def test_the_calibration_check_names_the_cases_outside_ten_percent() -> None:
    names = ["pallas b16", "h100 2026-11-26: llama_small", "no such case"]
    table, outside = fold.calibration_check(names, fold.FIXTURE)
    assert outside == ["h100 2026-11-26: llama_small"]  # 1.14× its measurement
    assert "| pallas b16 | 46.80 |" in table and "within ±10 %" in table
    assert "not compiled into the fixture" in table


def test_past_the_budget_every_cell_of_the_call_is_skipped_and_said(tmp_path: Path) -> None:
    report = Report(tmp_path, smoke=False, budget_s=0.0)
    one_call.run_all(report, smoke=False, meta={}, out=tmp_path)
    assert list(report.sections) == SECTIONS[1:]
    notes = [n for s in report.sections.values() for n in s.notes]
    assert all(n.startswith(("skipped (time budget)", "peer: torch")) for n in notes), notes
    assert sum(n.startswith("skipped") for n in notes) >= 10
    assert not any(s.rows for s in report.sections.values())


def test_the_committed_search_winner_is_the_preset_with_the_searched_kernels() -> None:
    from trainer import load_config

    winner = load_config(str(one_call.SEARCH_CONFIG), [])
    preset = load_config("llama_small", ["model.attention_impl=cudnn",
                                         "model.cross_entropy_impl=xla"])  # fmt: skip
    assert winner.to_dict() == preset.to_dict()
    assert "--search's winner for llama_small" in one_call.SEARCH_CONFIG.read_text()


def test_the_device_call_is_written_where_a_session_looks() -> None:
    assert COMMAND in " ".join(one_call.__doc__.split()) if one_call.__doc__ else False
    assert COMMAND in (REPO / "BENCHMARKS.md").read_text()
    assert 'carry=[".gpu"]' in (REPO / "BENCHMARKS.md").read_text()


def test_jax_cuda_libraries_are_recorded_from_the_plugin(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("jax_cuda13_plugin._versions")

    def broken() -> int:
        raise RuntimeError("no GPU")

    fake.cudnn_get_version = lambda: 91000  # type: ignore[attr-defined]
    fake.cudnn_build_version = lambda: 90800  # type: ignore[attr-defined]
    fake.cublas_get_version = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "jax_cuda13_plugin", types.ModuleType("jax_cuda13_plugin"))
    monkeypatch.setitem(sys.modules, "jax_cuda13_plugin._versions", fake)
    got = environment.cuda_libraries()
    assert got["plugin"] == "jax_cuda13_plugin"
    assert got["cudnn_get_version"] == 91000 and got["cudnn_build_version"] == 90800
    assert "cublas_get_version" not in got  # a library that cannot be asked is left out


def test_ratios_on_torch_cudnn_are_taken_per_call_and_back_to_back() -> None:
    cell = {"seq": 1024, "head_dim": 64}
    rows = [
        {**cell, "side": "torch", "impl": "cudnn", "layout": "bshd", "fwd_bwd_ms": 1.0,
         "fwd_bwd_pipelined_ms": 0.9},
        {**cell, "side": "torch", "impl": "cudnn", "layout": "bhsd", "fwd_bwd_ms": 5.0,
         "fwd_bwd_pipelined_ms": 5.0},  # another layout: not the base
        {**cell, "side": "jax", "impl": "pallas", "layout": "bshd", "fwd_bwd_ms": 1.6,
         "fwd_bwd_pipelined_ms": 1.2},
        {"seq": 4096, "head_dim": 128, "side": "jax", "impl": "pallas", "fwd_bwd_ms": 3.0},
    ]  # fmt: skip
    versus_torch.add_ratios(rows)
    assert rows[2]["fwd_bwd_x_torch_cudnn"] == pytest.approx(1.0 / 1.6)
    assert rows[2]["pipelined_x_torch_cudnn"] == pytest.approx(0.9 / 1.2)
    assert rows[3]["fwd_bwd_x_torch_cudnn"] is None and rows[3]["pipelined_x_torch_cudnn"] is None


def test_a_run_missing_a_kernel_keeps_that_buckets_timings_and_the_gated_delta_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kernel that failed in a run (tokamax, 2026-11-30) must not drop out of ``auto``'s
    ranking: its bucket keeps the older timings, all of one run; a complete bucket is replaced,
    and the gated delta rule's note stays beside the timings it names."""
    table = tmp_path / "launch.json"
    kind = "NVIDIA H200"
    older = {
        "bf16-64": {"cudnn": 1.5, "pallas": 1.4, "tokamax": 1.3},
        "bf16-128": {"cudnn": 2.4, "pallas": 4.3},
        "gdelta-bf16": {"pallas": 5.4, "xla": 9.0},
    }
    source = ("tjx gpu_suite tune, old; fwd+bwd timings (causal, seq 1024 at head_dim 64, 4096 at "
              "128): tjx gpu_suite attention, day 1; gated delta fwd+bwd timings: tjx gpu_suite "
              "gated_delta, day 1")  # fmt: skip
    table.write_text(json.dumps({"schema": 1, "devices": {
        kind: {"source": source, "entries": {}, "timings": older}}}))  # fmt: skip
    now = {
        "bf16-64": {"cudnn": 1.3, "pallas": 1.35, "xla": 7.0},  # no tokamax: kept
        "bf16-128": {"cudnn": 2.42, "pallas": 4.19, "xla": 15.2},  # all of the old: taken
    }
    doc = {
        "meta": {"device_kind": kind, "date": "day 2"},
        "smoke": False,
        "sections": {"attention_vs_torch": {"summary": {"timings": now}}},
    }
    assert fold.fold_launch_tables([doc], table) == [kind]
    written = json.loads(table.read_text())["devices"][kind]
    assert written["timings"]["bf16-64"] == older["bf16-64"]
    assert written["timings"]["bf16-128"] == now["bf16-128"]
    assert written["timings"]["gdelta-bf16"] == older["gdelta-bf16"]
    assert written["source"] == (
        "tjx gpu_suite tune, old; fwd+bwd timings (causal, seq 1024 at head_dim 64, 4096 at 128): "
        "tjx gpu_suite attention, day 2; gated delta fwd+bwd timings: tjx gpu_suite gated_delta, "
        "day 1"
    )
    assert capsys.readouterr().out == (
        "launch tables: NVIDIA H200: bf16-64 kept as it was: this run has no timing of tokamax\n"
    )


@pytest.mark.parametrize("near_tie", [True, False])
def test_speculative_fails_only_where_float32_tells_the_parted_tokens_apart(
    near_tie: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The H200's random model parted from greedy (2026-11-30): a near tie is a note, a token
    float32 can tell apart is a failure; the table says which."""
    parted = {"row": 3, "token": 17, "greedy": 5, "speculative": 8, "margin": 0.002 if near_tie
              else 1.5, "noise": 0.01, "near_tie": near_tie}  # fmt: skip
    rows = [
        {"model": name, "call": "c", "greedy_tokens_per_s": 1.0, "speculative_tokens_per_s": 1.0,
         "speedup": 1.0, "acceptance_rate": 0.0, "greedy_main_passes": 4,
         "speculative_main_passes": 4, "same_tokens": divergence is None,
         "divergence": divergence}
        for name, divergence in (("random", parted), ("copying", None))
    ]  # fmt: skip
    monkeypatch.setattr(speculative, "measure", lambda smoke: rows)
    sec = Section("speculative")
    speculative.run(sec, smoke=False, deadline=float("inf"))
    cell = ("no: row 3 parts at new token 17 (5 vs 8), "
            + ("a near tie: float32 margin 0.002" if near_tie else "NOT a near tie: float32 "
               "margin 1.5") + ", the model's own logits within 0.01 of float32")  # fmt: skip
    assert cell in sec.markdown and "| yes |" in sec.markdown
    assert sec.status == ("ok" if near_tie else "FAIL")
    assert any(cell in note for note in sec.notes)


def test_the_fixtures_compile_has_tokamax_on_its_path_where_installed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A step that ran tokamax (``auto`` on an H200) compiles only with tokamax importable: the
    fold's compile of the 2026-11-30 cases failed for want of it."""
    import tjx_tokamax_env

    from tjx.kernels.tokamax_ops import TOKAMAX_VERSION

    monkeypatch.setenv("TJX_TOKAMAX_CACHE", str(tmp_path))
    seen: list[dict[str, str]] = []
    monkeypatch.setattr(fold.subprocess, "run", lambda argv, **kw: seen.append(kw["env"]))
    fold.compile_cases(["a case"], tmp_path / "fixture.json", tmp_path / "deviceless")
    folder = tmp_path / f"tokamax{TOKAMAX_VERSION}"
    assert str(folder) not in seen[-1]["PYTHONPATH"].split(os.pathsep)  # not installed: absent
    folder.mkdir()
    (folder / tjx_tokamax_env.MARKER).write_text("{}")
    fold.compile_cases(["a case"], tmp_path / "fixture.json", tmp_path / "deviceless")
    paths = seen[-1]["PYTHONPATH"].split(os.pathsep)
    assert paths[0] == str(tmp_path / "deviceless") and paths[-1] == str(folder)


def test_a_tokamax_row_is_not_timed_again_where_auto_ran_tokamax(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the H200 ``auto`` takes tokamax: its row is the tokamax step (the 2026-11-30 call
    timed both twice, 148 s, and skipped five cells); where ``auto`` took another kernel the
    tokamax row is measured."""
    taken = {"gpt2": "tokamax", "llama": "cudnn"}
    steps: list[str] = []

    def step(self: one_call.Call, sec: Section, key: str, label: str, *a: Any, **kw: Any) -> Any:
        steps.append(key)
        self.rows[key] = {"attention_kernel": taken[key.split()[0]], "label": label}
        return self.rows[key]

    monkeypatch.setattr(one_call.Call, "step", step)
    monkeypatch.setattr(one_call.Call, "peer", lambda self, sec, *a: None)
    monkeypatch.setattr(one_call.train_step, "keep_profile", lambda *a: None)
    call = one_call.Call(Report(tmp_path, smoke=False, budget_s=1e9), False, {}, tmp_path)
    sec = Section("steps")
    one_call.run_steps(call, sec, one_call.shapes(False))
    assert steps == ["gpt2 auto", "llama auto", "llama tokamax"]
    assert "gpt2 tokamax: the auto row ran tokamax (not timed twice)" in sec.notes
