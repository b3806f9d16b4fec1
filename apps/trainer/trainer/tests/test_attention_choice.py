"""A kernel that fails to lower or compile never ends a run with a traceback: ``auto`` goes on
with the next kernel in one line, a kernel named in the config is one error line (exit 2, no run
directory). The failures are real: tjx.kernels.testing's kernels fail in jax's lowering and in
XLA's compile, as a Triton error would."""

from __future__ import annotations

import json

import pytest
import yaml
from flax import nnx

import tjx.kernels.flash as flash
from tjx import kernels, nn
from tjx.kernels import choice, launch
from tjx.kernels.testing import failing_attention
from tjx.nn import stack as nn_stack
from tjx.nn.attention import layer as nn_attention
from trainer.cli import main
from trainer.config.settings import apply_overrides, load_config_data
from trainer.config.typed import read_config, resolve, step_config
from trainer.plan.first_compile import step_key
from trainer.plan.memory_fit import choose_attention
from trainer.step import state
from trainer.tests._tiny import TINY_RUN


@pytest.fixture(autouse=True)
def _rule_without_measurements(monkeypatch, tmp_path):
    """These tests are about the rule: the packaged table's H100 timings (the GPU suite's
    measurement) would decide otherwise; a test that measures writes its own table."""
    empty = tmp_path / "no_timings.json"
    empty.write_text(json.dumps({"schema": 1, "devices": {}}))
    monkeypatch.setenv(launch.ENV_VAR, str(empty))


SETS = [
    *TINY_RUN,
    "train.steps=1",
    "optimizer.schedule.warmup_steps=0",
    "sampling.max_new_tokens=4",
    "train.eval_every=1",
    "train.eval_batches=1",
    "train.sample_every=0",
    "train.checkpoint_every=1",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]
H100 = choice.Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))


def _argv(text, *sets):
    argv = ["--config", "tiny", "--run-dir", "run", "--data", str(text)]
    for item in [*SETS, *sets]:
        argv += ["--set", item]
    return argv


@pytest.fixture
def corpus(in_tmp):
    text = in_tmp / "corpus.txt"
    text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(200)))
    return text


@pytest.fixture
def pallas_measured_fastest(in_tmp, monkeypatch):
    """A pretend H100 whose launch table says Pallas is the fastest correct kernel (fp32 d<=64)."""
    monkeypatch.setattr(choice, "default_target", lambda: H100)
    path = in_tmp / "tables.json"
    table = {"source": "test", "entries": {}, "timings": {"fp32-64": {"pallas": 1.0, "xla": 2.0}}}
    path.write_text(json.dumps({"schema": 1, "devices": {H100.device_kind: table}}))
    monkeypatch.setenv(launch.ENV_VAR, str(path))
    launch.clear_launch_cache()
    yield
    launch.clear_launch_cache()


@pytest.mark.parametrize("stage", ["lower", "compile"])
def test_auto_goes_on_with_the_next_kernel_in_one_line(
    stage, corpus, in_tmp, monkeypatch, capsys, pallas_measured_fastest
):
    monkeypatch.setattr(flash, "flash_attention", failing_attention(stage))
    assert main(_argv(corpus, f"data.cache_dir={in_tmp / 'cache'}")) == 0
    captured = capsys.readouterr()
    lines = [ln for ln in captured.out.splitlines() if ln.startswith("attention:")]
    assert lines[0] == (
        "attention: pallas (auto: fastest measured on NVIDIA H100 80GB HBM3 for fp32-64: "
        "pallas 1 ms, xla 2 ms)"
    )
    error = "NotImplementedError: MLIR translation" if stage == "lower" else "JaxRuntimeError"
    assert lines[1].startswith(f"attention: pallas failed to lower or compile ({error}")
    assert lines[1].endswith("; using xla") and len(lines) == 2
    assert "Traceback" not in captured.err
    saved = yaml.safe_load((in_tmp / "run" / "config.yaml").read_text())
    assert saved["model"]["attention_impl"] == "xla"  # the kernel the run used


@pytest.mark.parametrize("stage", ["lower", "compile"])
def test_a_named_kernel_that_fails_is_one_error_line_and_nothing_written(
    stage, corpus, in_tmp, monkeypatch, capsys
):
    monkeypatch.setattr(flash, "flash_attention", failing_attention(stage))
    sets = (f"data.cache_dir={in_tmp / 'cache'}", "model.attention_impl=pallas")
    assert main(_argv(corpus, *sets)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "attention: pallas failed to lower or compile" in err[0]
    assert "set model.attention_impl=auto" in err[0]
    assert not (in_tmp / "run").exists()


def test_auto_on_cpu_is_xla_without_a_compile(capsys):
    cfg = read_config(apply_overrides(load_config_data("tiny"), SETS))

    def never(run):
        raise AssertionError("nothing to compile: XLA is the only candidate on a CPU")

    run = step_config(resolve(cfg, 257))
    chosen = choose_attention(run, build=never)
    assert chosen == run and chosen.model is run.model  # "auto" stays: nothing fell back
    assert chosen.attention is not None and chosen.attention.kernel("causal") == "xla"
    assert capsys.readouterr().out == "attention: xla (auto: no CUDA GPU; XLA on cpu)\n"


def test_the_runs_models_run_the_kernel_choices_resolution_and_resolve_nothing(monkeypatch):
    """The kernel is resolved once per run, by the choice: the models the run builds from its
    step config (the memory fit's, the run's) take that resolution into their layers."""
    monkeypatch.setattr(choice, "default_target", lambda: H100)
    sets = [*SETS, "model.compute_dtype=bfloat16"]
    cfg = read_config(apply_overrides(load_config_data("tiny"), sets))
    chosen = choose_attention(step_config(resolve(cfg, 257)), build=lambda run: None)
    assert chosen.model.attention_impl == "auto" and chosen.attention is not None
    assert chosen.attention.kernel("causal") is kernels.AttentionKernel.CUDNN

    def again(*args, **kwargs):
        raise AssertionError("a model of the run resolved its kernels again")

    monkeypatch.setattr(nn_stack, "resolve_attention", again)
    monkeypatch.setattr(nn_attention, "resolve_attention", again)
    for run in (chosen, chosen.with_model(remat="full")):  # full remat: the same kernels
        assert run.attention is chosen.attention
        model = nnx.eval_shape(lambda run=run: state.run_model(run))
        layers = [m for _, m in nnx.iter_graph(model) if isinstance(m, nn.Attention)]
        assert layers and all(m.kernel is kernels.AttentionKernel.CUDNN for m in layers)
        state.abstract_state(run)
    # Another kernel named: its model resolves its own (the choice's kernels do not serve it).
    assert chosen.with_model(attention_impl="xla").attention is None


def test_the_compiled_steps_key_reads_the_choice_without_ranking_again(monkeypatch):
    """The run's ``auto`` step and the choice's compile of the kernel it took are one program
    (one `step_key`), read from the choice's resolution: tjx.kernels does not rank again."""
    monkeypatch.setattr(choice, "default_target", lambda: H100)
    sets = [*SETS, "model.compute_dtype=bfloat16"]
    cfg = read_config(apply_overrides(load_config_data("tiny"), sets))
    run = step_config(resolve(cfg, 257))
    chosen = choose_attention(run, build=lambda r: None, say=lambda line: None)
    named = run.with_model(attention_impl="cudnn")

    def again(*args, **kwargs):
        raise AssertionError("the kernel was ranked again")

    monkeypatch.setattr(kernels, "auto_order", again)
    assert step_key(chosen) == step_key(named)


def test_with_no_measurement_auto_tries_cudnn_then_xla(monkeypatch):
    monkeypatch.setattr(choice, "default_target", lambda: H100)
    sets = [*SETS, "model.compute_dtype=bfloat16"]
    cfg = read_config(apply_overrides(load_config_data("tiny"), sets))
    tried, said = [], []

    def build(run):
        tried.append(run.model.attention_impl)
        raise RuntimeError("cuDNN: no kernel for this call\nmore detail")

    chosen = choose_attention(step_config(resolve(cfg, 257)), build=build, say=said.append)
    assert tried == ["cudnn"] and chosen.model.attention_impl == "xla"
    saved = cfg.with_step(chosen).to_dict()  # what config.yaml saves
    assert saved["model"]["attention_impl"] == "xla"
    assert said == [
        "attention: cudnn (auto: no tjx measurement for NVIDIA H100 80GB HBM3 yet)",
        "attention: cudnn failed to lower or compile (RuntimeError: cuDNN: no kernel for this "
        "call); using xla",
    ]
