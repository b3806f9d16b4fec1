"""The one-line fallback, the launch table's timings and the compilation cache setting."""

from __future__ import annotations

import json

import jax
import pytest

from tjx.kernels import KernelCompileError, first_that_compiles, launch
from tjx.kernels.choice import out_of_memory
from tjx.kernels.compile_cache import ENV_VAR, compilation_cache_dir, enable_compilation_cache
from tjx.kernels.testing import failing_attention


def test_first_that_compiles_says_each_failure_in_one_line_and_goes_on():
    said, built = [], []

    def build(kernel):
        built.append(kernel)
        if kernel == "pallas":
            raise RuntimeError("Triton: out of resources\nshared memory 300000 > 232448")

    assert (
        first_that_compiles(("pallas", "cudnn", "xla"), build, explicit=False, say=said.append)
        == "cudnn"
    )
    assert built == ["pallas", "cudnn"]
    assert said == [
        "attention: pallas failed to lower or compile (RuntimeError: Triton: out of resources); "
        "using cudnn"
    ]


def test_an_explicit_kernel_that_fails_raises_one_line_and_xla_is_not_built():
    def build(kernel):
        raise ValueError("")

    with pytest.raises(
        KernelCompileError, match=r"^attention: cudnn failed .*\(ValueError: \(no message\)\)$"
    ):
        first_that_compiles(("cudnn",), build, explicit=True, say=print)
    with pytest.raises(KernelCompileError, match="pallas failed"):
        first_that_compiles(("pallas",), build, explicit=False, say=lambda line: None)
    assert first_that_compiles(("xla",), build, explicit=True) == "xla"


def test_a_step_that_does_not_fit_the_device_is_no_kernel_failure():
    """A TPU's compiler refuses a step too big for its memory; that is the memory fit's to
    handle (remat), so the kernel is kept and nothing falls back."""
    said = []

    def build(kernel):
        raise RuntimeError(
            "RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm. Used 27.98G of 15.75G hbm."
        )

    assert first_that_compiles(("cudnn", "xla"), build, explicit=True, say=said.append) == "cudnn"
    assert said == []
    assert out_of_memory(RuntimeError("RESOURCE_EXHAUSTED: Ran out of memory"))
    assert not out_of_memory(RuntimeError("INTERNAL: Triton: RESOURCE_EXHAUSTED shared memory"))


def test_failing_attention_names_its_stages():
    with pytest.raises(ValueError, match="'lower' or 'compile'"):
        failing_attention("run")


def test_bad_timings_name_the_file_device_and_bucket(tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    table = {"source": "x", "entries": {}, "timings": {"bf16-64": {"pallas": -1.0}}}
    path.write_text(json.dumps({"schema": 1, "devices": {"GPU X": table}}))
    with pytest.raises(ValueError, match=r"device 'GPU X', timings 'bf16-64'"):
        launch.load_launch_tables(path)
    path.write_text(json.dumps({"schema": 1, "devices": {"GPU X": {**table, "timings": []}}}))
    with pytest.raises(ValueError, match="'timings' must be an object"):
        launch.load_launch_tables(path)
    launch.clear_launch_cache()


def test_merged_timings_replace_their_bucket_and_keep_the_others(tmp_path):
    path = tmp_path / "t.json"
    launch.merge_launch_table(path, "GPU X", {}, "a", timings={"bf16-64": {"xla": 2.0}})
    launch.merge_launch_table(path, "gpu  x", {}, "b", timings={"bf16-128": {"cudnn": 1.0}})
    launch.merge_launch_table(path, "gpu x", {}, "c", timings={"bf16-64": {"pallas": 1.5}})
    tables = launch.load_launch_tables(path)
    assert {k: dict(v) for k, v in tables["gpu x"].timings.items()} == {
        "bf16-64": {"pallas": 1.5},
        "bf16-128": {"cudnn": 1.0},
    }
    launch.clear_launch_cache()


def test_compilation_cache_is_gpu_only_by_default_and_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "cache"))
    assert compilation_cache_dir() == tmp_path / "cache"
    assert enable_compilation_cache() is None  # a CPU run is left alone
    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache(only_on_gpu=False) == tmp_path / "cache"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "cache")
        assert (tmp_path / "cache").is_dir()
    finally:
        jax.config.update("jax_compilation_cache_dir", before)
    monkeypatch.setenv(ENV_VAR, "off")
    assert compilation_cache_dir() is None and enable_compilation_cache(only_on_gpu=False) is None
    monkeypatch.delenv(ENV_VAR)
    assert str(compilation_cache_dir()).endswith(".cache/tjx/jax-compilation")


def test_a_named_compilation_cache_folder_wins_over_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "from-env"))
    assert compilation_cache_dir(tmp_path / "named") == tmp_path / "named"
    monkeypatch.setenv(ENV_VAR, "off")  # the caller's folder is still used
    assert compilation_cache_dir(str(tmp_path / "named")) == tmp_path / "named"
    assert compilation_cache_dir("Off") is None
    before = jax.config.jax_compilation_cache_dir
    try:
        assert enable_compilation_cache(tmp_path / "named", only_on_gpu=False) == tmp_path / "named"
        assert jax.config.jax_compilation_cache_dir == str(tmp_path / "named")
    finally:
        jax.config.update("jax_compilation_cache_dir", before)


def test_kernel_order_says_a_named_kernel_or_autos_ranking_in_one_line():
    from tjx.kernels import auto_order, kernel_order

    said = []
    assert kernel_order("pallas", jax.numpy.bfloat16, 64, named_by="m.impl", say=said.append) == (
        "pallas",
    )
    assert said == ["attention: pallas (m.impl)"]
    said.clear()
    # "auto" is auto_order's ranking on this device, said with its reason (on a CPU: XLA).
    expected = auto_order(jax.numpy.float32, 64)
    assert kernel_order("auto", jax.numpy.float32, 64, named_by="m.impl", say=said.append) == (
        expected.order
    )
    assert said == [expected.line()]


def test_the_choice_says_the_order_then_takes_the_first_that_builds():
    import jax.numpy as jnp

    from ._ref import choose

    said: list[str] = []

    def build(kernel: str) -> None:
        raise RuntimeError(f"{kernel} does not lower here")

    named = "model.attention_impl"
    got = choose("pallas", jnp.bfloat16, 64, lambda k: None, named_by=named, say=said.append)
    assert got == ("pallas", False) and said == ["attention: pallas (model.attention_impl)"]
    assert choose("xla", jnp.bfloat16, 64, build, named_by=named, say=said.append) == (
        "xla",
        False,
    )  # xla is never built
    with pytest.raises(KernelCompileError, match="pallas failed to lower or compile"):
        choose("pallas", jnp.bfloat16, 64, build, named_by=named, say=said.append)
    said.clear()
    kernel, fell_back = choose("auto", jnp.bfloat16, 64, build, named_by=named, say=said.append)
    assert (kernel, fell_back) == ("xla", False)  # on a CPU, auto's order is xla alone
    assert said and said[0].startswith("attention: xla (auto")


def test_the_choice_says_when_it_fell_back():
    import jax.numpy as jnp

    from tjx.kernels import target

    from ._ref import choose

    said: list[str] = []

    def build(kernel: str) -> None:
        if kernel == "cudnn":
            raise RuntimeError("no cuDNN here")

    with target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        kernel, fell_back = choose(
            "auto", jnp.bfloat16, 64, build, named_by="model.attention_impl", say=said.append
        )
    assert fell_back and kernel != "cudnn"
    assert any(line.startswith("attention: cudnn failed to lower or compile") for line in said)
