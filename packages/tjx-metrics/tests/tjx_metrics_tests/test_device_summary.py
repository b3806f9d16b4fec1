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


def test_a_runs_device_notes_name_the_devices_the_cache_setting_and_a_cpus_pace(
    tmp_path, monkeypatch
) -> None:
    from tjx.metrics import device_notes

    cpu = "note: running on CPU — this works but is slow; a GPU runs the same command much faster."
    summary = f"devices: {device_summary()}"
    cache = f"compilation cache: {tmp_path} (train.compilation_cache; off to disable)"
    assert device_notes(tmp_path, "train.compilation_cache") == [summary, cache, cpu]
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert device_notes(None, "x") == [summary]
