"""A run's first lines about where it runs: the devices, the compilation cache, a CPU's pace."""

from __future__ import annotations

import jax

from tjx.metrics import device_summary
from trainer.start.device_notes import device_notes


def test_a_runs_device_notes_name_the_devices_the_cache_setting_and_a_cpus_pace(
    tmp_path, monkeypatch
) -> None:
    cpu = "note: running on CPU — this works but is slow; a GPU runs the same command much faster."
    summary = f"devices: {device_summary()}"
    cache = f"compilation cache: {tmp_path} (train.compilation_cache; off to disable)"
    assert device_notes(tmp_path, "train.compilation_cache") == [summary, cache, cpu]
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert device_notes(None, "x") == [summary]
