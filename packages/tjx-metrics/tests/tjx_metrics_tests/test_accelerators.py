"""The device table: targets by name, their peaks per dtype, topologies and GPU target configs."""

from __future__ import annotations

import re

import pytest

from tjx.metrics import (
    ACCELERATORS,
    accelerator,
    accelerator_of,
    gpu_target_config,
    parse_target,
    peak_flops,
)
from tjx.metrics.accelerators import has_fp8_units


def test_a_target_is_a_device_or_a_count_of_them():
    h100, one = parse_target("h100")
    assert (h100.key, one) == ("h100", 1)
    a100, eight = parse_target(" 8xA100-40GB ")
    assert (a100.key, eight, a100.memory_bytes) == ("a100-40gb", 8, 42331013120)


@pytest.mark.parametrize("text", ["h800", "8xh800", "8 x h100"])
def test_an_unknown_target_lists_the_known_ones(text: str):
    with pytest.raises(ValueError) as err:
        parse_target(text)
    for key in ACCELERATORS:
        assert key in str(err.value)


@pytest.mark.parametrize("text", ["3xh100", "0xh100", "512xv5e"])
def test_a_device_count_must_be_a_power_of_two(text: str):
    with pytest.raises(ValueError, match="power of two"):
        parse_target(text)


def test_topologies_are_the_ones_the_deviceless_apis_take():
    assert accelerator("h100").topology(1) == "1x1x1"
    assert accelerator("h100").topology(8) == "1x1x8"
    assert accelerator("h100").topology(16) == "1x2x8"
    assert accelerator("v5e").topology(1) == "v5e:2x2"  # libtpu refuses v5e:1x1
    assert accelerator("v5e").topology(8) == "v5e:2x4"
    assert accelerator("v6e").topology(16) == "v6e:4x4"
    assert accelerator("v5p").topology(8) == "v5p:2x2x2"


def test_matmul_peaks_follow_xla_precision_per_platform():
    h100, v5e = accelerator("h100"), accelerator("v5e")
    assert h100.matmul_peak("bf16") == peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    assert h100.matmul_peak("f32") == h100.peak.tf32  # TF32 tensor cores at default precision
    assert h100.matmul_peak("f32", "highest") == h100.peak.fp32
    assert h100.matmul_peak("f8e4m3fn") == 2 * h100.peak.bf16
    assert v5e.matmul_peak("f32") == v5e.peak.bf16  # one bf16 pass on the MXU
    assert v5e.matmul_peak("f32", "highest") == v5e.peak.bf16 / 6
    assert v5e.matmul_peak("s32") == v5e.peak.bf16  # no figure: bf16's


@pytest.mark.parametrize("key", [k for k, a in ACCELERATORS.items() if a.platform == "gpu"])
def test_a_gpu_target_config_agrees_with_the_table(key: str):
    acc = accelerator(key)
    text = gpu_target_config(acc)
    field = lambda name: re.search(rf"^\s*{name}: (.+)$", text, re.M).group(1)  # type: ignore[union-attr]
    assert int(field("device_memory_size")) == acc.memory_bytes
    assert float(field("memory_bandwidth")) == acc.hbm_bandwidth
    assert field("device_description_str").strip('"') == acc.device_kind
    assert int(field("major")) == acc.compute_capability[0]  # type: ignore[index]
    # jaxlib 0.10.2's proto refuses this field (the XLA spec has it).
    assert not re.search(r"^\s*collective_memory_granularity:", text, re.M)


def test_a_tpu_has_no_gpu_target_config():
    with pytest.raises(ValueError, match="not a GPU"):
        gpu_target_config(accelerator("v5e"))


def test_a_devices_kind_finds_its_entry():
    assert accelerator_of("NVIDIA H100 80GB HBM3") is accelerator("h100")
    assert accelerator_of("TPU v5 lite") is accelerator("v5e")
    # An H200's jax device_kind as measured on one (2026-11-28), not the datasheet's full name.
    assert accelerator_of("NVIDIA H200") is accelerator("h200")
    assert accelerator_of("NVIDIA H100 PCIe") is None and accelerator_of("cpu") is None


def test_fp8_units_are_hopper_and_blackwell_gpus_only():
    with_fp8 = {key for key, acc in ACCELERATORS.items() if acc.fp8_units}
    assert with_fp8 == {"h100", "h200", "b200"}  # A100's 8-bit figure is int8; TPUs: int8
    # A running device: a GPU by its compute capability (Ada 8.9 has them, Ampere 8.6 not).
    assert has_fp8_units("gpu", "NVIDIA GeForce RTX 4090", "8.9")
    assert not has_fp8_units("gpu", "NVIDIA A10", "8.6")
    assert not has_fp8_units("tpu", "TPU v5 lite", None)
    assert not has_fp8_units("cpu", "cpu", None)
    assert has_fp8_units("gpu", "NVIDIA H100 80GB HBM3", None)  # by the table's entry


def test_every_gpu_target_declares_the_cuda_12_runtime_float8_gemms_need():
    # Without it XLA's GEMM rewriter refuses cuBLASLt float8 GEMMs in a deviceless compile
    # ("FP8 Custom Calls require CUDA 12.0 or newer"), #54.
    for acc in ACCELERATORS.values():
        if acc.platform == "gpu":
            text = gpu_target_config(acc)
            assert re.search(r"runtime_version \{\s*major: 12\s*minor: \d+\s*\}", text), acc.key
