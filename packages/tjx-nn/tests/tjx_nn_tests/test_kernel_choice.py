"""The attention kernel a model takes, read from its config: ``auto`` ranked by tjx.kernels and
tried with the caller's compile (one line per kernel that fails), xla silent unless asked, and a
split sequence's block kernel said with nothing compiled."""

from __future__ import annotations

import json

import pytest

from tjx import kernels
from tjx import nn as tnn
from tjx.kernels import launch
from tjx_nn_tests._helpers import gpt2_tiny, llama_tiny

H100 = "NVIDIA H100 80GB HBM3"


def never(kernel: str) -> object:
    raise AssertionError(f"nothing to compile; asked for {kernel}")


@pytest.fixture
def h100(tmp_path, monkeypatch):
    """An H100 as the kernel target, with nothing measured in its launch table."""
    empty = tmp_path / "tables.json"
    empty.write_text(json.dumps({"schema": 1, "devices": {}}))
    monkeypatch.setenv(launch.ENV_VAR, str(empty))
    launch.clear_launch_cache()
    with kernels.target("gpu", H100, (9, 0)):
        yield
    launch.clear_launch_cache()


def test_auto_on_a_cpu_is_xla_with_nothing_compiled():
    said: list[str] = []
    got = tnn.choose_attention_kernel(gpt2_tiny(), never, said.append)
    assert got == ("xla", False)
    assert said == ["attention: xla (auto: no CUDA GPU; XLA on cpu)"]


def test_xla_by_name_needs_no_choice_and_is_said_only_when_asked():
    said: list[str] = []
    cfg = gpt2_tiny(attention_impl="xla")
    assert tnn.choose_attention_kernel(cfg, never, said.append) == ("xla", False)
    assert said == []
    assert tnn.choose_attention_kernel(cfg, never, said.append, say_xla=True) == ("xla", False)
    assert said == ["attention: xla (model.attention_impl)"]


def test_a_kernel_that_fails_falls_back_in_one_line(h100):
    said, tried = [], []

    def build(kernel: str) -> object:
        tried.append(kernel)
        raise RuntimeError("cuDNN: no kernel for this call\nmore detail")

    cfg = gpt2_tiny(precision="bf16")
    assert tnn.choose_attention_kernel(cfg, build, said.append) == ("xla", True)
    assert tried == ["cudnn"]
    assert said == [
        f"attention: cudnn (auto: no tjx measurement for {H100} yet)",
        "attention: cudnn failed to lower or compile (RuntimeError: cuDNN: no kernel for this "
        "call); using xla",
    ]


def test_a_named_kernel_that_fails_raises_naming_the_setting(h100):
    def build(kernel: str) -> object:
        raise RuntimeError("Triton: out of shared memory")

    cfg = gpt2_tiny(attention_impl="pallas")
    with pytest.raises(kernels.KernelCompileError, match="attention: pallas failed"):
        tnn.choose_attention_kernel(cfg, build, lambda line: None)


def test_a_soft_capped_model_leaves_cudnn_out(h100):
    said: list[str] = []
    cfg = llama_tiny(attn_logit_softcap=50.0, precision="bf16")
    kernel, _ = tnn.choose_attention_kernel(cfg, lambda k: None, said.append)
    assert kernel != "cudnn" and "cudnn skipped: it cannot soft-cap the logits" in said[0]


def test_a_split_sequence_says_its_block_kernel_and_compiles_nothing(h100):
    said: list[str] = []
    got = tnn.choose_attention_kernel(
        gpt2_tiny(), never, said.append, context_ways=4, context_strategy="all_gather"
    )
    assert got == ("auto", False)
    assert said == [
        "attention: pallas blocks, all_gather across mesh.context=4 (model.attention_impl=auto; "
        "cuDNN has no split forward and backward)"
    ]


def test_a_windowed_split_takes_the_xla_blocks_and_the_line_names_the_setting():
    cfg = llama_tiny(sliding_window=4)
    line = tnn.split_kernel_line(cfg, 2, "ring", named_by="the run's model.attention_impl")
    assert line == (
        "attention: xla blocks, ring across mesh.context=2 (windowed, the run's "
        "model.attention_impl=auto; cuDNN has no split forward and backward)"
    )
    assert tnn.split_kernel_line(cfg, 1, "ring") is None  # not split
    with pytest.raises(ValueError, match="cuDNN has no separate forward"):
        tnn.split_kernel_line(gpt2_tiny(attention_impl="cudnn"), 2, "ring")
