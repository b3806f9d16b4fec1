"""A kernel that fails to lower or compile never ends an evaluation with a traceback: ``auto``
goes on with the next kernel in one line, a kernel the run's model names is one error line."""

from __future__ import annotations

import json

import pytest

import tjx.kernels.flash as flash
from eval.cli import main
from tjx import nn
from tjx.kernels import choice, launch
from tjx.kernels.testing import failing_attention

H100 = choice.Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
ARGS = ["--batch-size", "4", "--max-batches", "1", "--attention-png", "none"]


def _set_impl(run, impl):
    path = run / "model.json"
    desc = json.loads(path.read_text())
    desc["fields"]["attention_impl"] = impl
    path.write_text(json.dumps(desc))


@pytest.mark.parametrize("stage", ["lower", "compile"])
def test_auto_goes_on_with_the_next_kernel_in_one_line(
    run_dir, tmp_path, monkeypatch, capsys, stage
):
    run, _ = run_dir
    monkeypatch.setattr(choice, "default_target", lambda: H100)
    tables = tmp_path / "tables.json"
    table = {"source": "test", "entries": {}, "timings": {"fp32-64": {"pallas": 1.0}}}
    tables.write_text(json.dumps({"schema": 1, "devices": {H100.device_kind: table}}))
    monkeypatch.setenv(launch.ENV_VAR, str(tables))
    launch.clear_launch_cache()
    monkeypatch.setattr(flash, "flash_attention", failing_attention(stage))
    built = []  # the kernels each model build was given (None: it resolved its own)
    build_model = nn.build_model
    monkeypatch.setattr(
        nn,
        "build_model",
        lambda *a, **kw: built.append(kw.get("attention")) or build_model(*a, **kw),
    )
    assert main(["--checkpoint", str(run), *ARGS]) == 0
    launch.clear_launch_cache()
    # The fallback's model runs the choice's resolution: the last build is given it.
    assert built[-1] is not None and (built[-1].name, built[-1].fell_back) == ("xla", True)
    assert built[-1].kernel("causal") == "xla"
    out = capsys.readouterr().out
    lines = [ln for ln in out.splitlines() if ln.startswith("attention:")]
    assert lines[0].startswith("attention: pallas (auto: fastest measured on NVIDIA H100")
    assert lines[1].startswith("attention: pallas failed to lower or compile (")
    assert lines[1].endswith("; using xla") and len(lines) == 2
    assert "loss" in out  # the evaluation went on, with XLA


@pytest.mark.parametrize("stage", ["lower", "compile"])
def test_a_named_kernel_that_fails_is_one_error_line(run_dir, monkeypatch, capsys, stage):
    run, _ = run_dir
    _set_impl(run, "pallas")
    monkeypatch.setattr(flash, "flash_attention", failing_attention(stage))
    assert main(["--checkpoint", str(run), *ARGS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("eval: error: attention: pallas failed to lower")
