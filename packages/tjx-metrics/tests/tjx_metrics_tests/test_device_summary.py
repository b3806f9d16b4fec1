"""device_summary: the devices in one line, for run logs and benchmark records."""

from __future__ import annotations

import random
from types import SimpleNamespace

import jax
import pytest

from tjx.metrics import device_summary


def _devices(n: int, kind: str, platform: str) -> list[SimpleNamespace]:
    return [SimpleNamespace(device_kind=kind, platform=platform) for _ in range(n)]


def test_counts_the_devices_of_one_kind() -> None:
    n = random.randint(1, 64)
    got = device_summary(_devices(n, "NVIDIA H100 80GB HBM3", "gpu"))
    assert got == f"{n} × NVIDIA H100 80GB HBM3 (gpu)"


def test_lists_several_kinds_in_order_of_first_appearance() -> None:
    devices = [*_devices(2, "TPU v5 lite", "tpu"), *_devices(1, "cpu", "cpu")]
    devices += _devices(1, "TPU v5 lite", "tpu")
    assert device_summary(devices) == "4 × TPU v5 lite, cpu (tpu, cpu)"


def test_defaults_to_this_processes_devices() -> None:
    first = jax.devices()[0]
    want = f"{jax.device_count()} × {first.device_kind} ({first.platform})"
    assert device_summary() == want


def test_no_device_is_an_error() -> None:
    with pytest.raises(ValueError, match="at least one device"):
        device_summary([])
