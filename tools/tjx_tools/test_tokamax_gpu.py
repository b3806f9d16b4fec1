"""tools/tokamax_gpu.py on a CPU: the wheels it would carry agree with the pins elsewhere, and a
measurement runs to the end, with tjx's one-line refusal in tokamax's (and cuDNN's) rows and a
checked XLA row that becomes the launch table's timings."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import tokamax_gpu
from tjx_tokamax_env import PACKAGES


def test_the_wheels_are_the_tests_pins_and_the_resolves_for_python_312(tmp_path: Path) -> None:
    assert set(PACKAGES) <= set(tokamax_gpu.WHEELS)  # what the tests install, at their pins
    for extra in set(tokamax_gpu.WHEELS) - set(PACKAGES):  # the resolve's own versions
        name, version = extra.split("==")
        assert importlib.metadata.version(name) == version, extra
    # (tjx-kernels' `gpu` extra at this pin: tests-integration's test_wheels.py, on the wheel.)
    cmd = tokamax_gpu.download_command(tmp_path)
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--no-deps" in cmd
    assert cmd[cmd.index("--only-binary") + 1] == ":all:" and cmd[-len(tokamax_gpu.WHEELS) :] == (
        tokamax_gpu.WHEELS
    )


def test_a_measurement_on_a_cpu_says_why_each_fused_kernel_cannot_run() -> None:
    rows = tokamax_gpu.measure_cells([(16, 8)], kernels=("tokamax", "xla"), batch=1, heads=2,
                                     iters=1)  # fmt: skip
    by = {r["impl"]: r for r in rows}
    assert "needs an sm90 or sm100 GPU" in by["tokamax"]["error"] and not by["tokamax"]["correct"]
    assert by["xla"]["error"] is None and by["xla"]["correct"] and by["xla"]["fwd_bwd_ms"] > 0
    assert tokamax_gpu.launch_timings(rows) == {"bf16-64": {"xla": by["xla"]["fwd_bwd_ms"]}}
