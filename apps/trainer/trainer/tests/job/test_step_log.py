"""A training loop's log line (StepLog) and its profiler window (ProfileWindow)."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import pytest

from tjx import metrics
from trainer.loop import step_log
from trainer.loop.step_log import ProfileWindow, StepLog


def _clock(times: list[float]):
    it = iter(times)
    return lambda: next(it)


def _sums(rng: np.random.Generator) -> dict[str, jnp.ndarray]:
    tokens = rng.integers(4, 16, size=2)
    return {
        "expert_tokens": jnp.asarray(rng.integers(0, 8, size=(2, 4)), jnp.int32),
        "dropped_tokens": jnp.asarray(rng.integers(0, 2, size=2), jnp.int32),
        "tokens": jnp.asarray(tokens, jnp.int32),
        "balance_loss_sum": jnp.asarray(rng.random(2) * tokens, jnp.float32),
        "z_loss_sum": jnp.asarray(rng.random(2) * tokens, jnp.float32),
    }


def test_a_log_line_holds_the_step_bits_per_byte_rate_and_mfu_over_its_interval():
    rng = np.random.default_rng()
    loss, norm = float(rng.uniform(1, 5)), float(rng.uniform(0, 2))
    meter = metrics.ThroughputMeter(
        flops_per_token=6.0, palm_flops_per_token=8.0, peak_flops_per_device=1e3,
        clock=_clock([0.0, 4.0]),
    )  # fmt: skip
    log = StepLog(meter, unit="tokens", bytes_per_token=3.5)
    for _ in range(2):
        out = log.step(100, {"loss": jnp.float32(loss), "grad_norm": jnp.float32(norm)})
    line = log.scalars(out)
    assert line["grad_norm"] == pytest.approx(norm, rel=1e-6)
    assert line["loss"] == pytest.approx(loss, rel=1e-6)
    assert line["bits_per_byte"] == pytest.approx(loss / math.log(2) / 3.5, rel=1e-6)
    assert line["tokens_per_s"] == pytest.approx(200 / 4.0)
    assert line["mfu"] == pytest.approx(50.0 * 6.0 / 1e3)
    assert line["mfu_palm"] == pytest.approx(50.0 * 8.0 / 1e3)


def test_a_line_without_a_peak_or_bytes_per_token_has_neither_mfu_nor_bits():
    log = StepLog(metrics.ThroughputMeter(clock=_clock([0.0, 1.0])), unit="images")
    line = log.scalars(log.step(8, {"loss": jnp.float32(0.5)}))
    assert set(line) == {"loss", "images_per_s"}
    assert line["images_per_s"] == pytest.approx(8.0)


def test_router_sums_add_over_the_lines_steps_exactly_then_start_again():
    rng = np.random.default_rng()
    a, b = _sums(rng), _sums(rng)
    log = StepLog(metrics.ThroughputMeter(), moe_layers=[1, 3])
    out = log.step(1, {"loss": jnp.float32(1.0), "moe": a})
    assert "moe" not in out  # the sums stay on the device until the line
    line = log.scalars(log.step(1, {"loss": jnp.float32(1.0), "moe": b}))
    total = {k: np.asarray(a[k]) + np.asarray(b[k]) for k in a}
    want = metrics.moe_metrics(total, per_layer=True, layers=[1, 3])
    assert {k: line[k] for k in want} == pytest.approx(want)
    assert not any(k.startswith("moe") for k in log.scalars({"loss": jnp.float32(1.0)}))


def test_the_profile_window_traces_from_its_first_step_to_its_last(monkeypatch, tmp_path):
    calls: list[str] = []
    monkeypatch.setattr("jax.profiler.start_trace", lambda folder: calls.append(f"start {folder}"))
    monkeypatch.setattr("jax.profiler.stop_trace", lambda: calls.append("stop"))
    window = ProfileWindow(tmp_path, (2, 4))
    for step in range(6):
        window.before(step)
        window.after(step + 1, jnp.zeros(2))
    window.close()  # already stopped: nothing more
    assert calls == [f"start {tmp_path}", "stop"]


def test_a_run_ending_inside_the_window_stops_the_trace_and_none_traces_nothing(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr("jax.profiler.start_trace", lambda folder: calls.append("start"))
    monkeypatch.setattr("jax.profiler.stop_trace", lambda: calls.append("stop"))
    window = ProfileWindow("p", (0, 10))
    window.before(0)
    window.after(1, None)
    window.close()
    idle = ProfileWindow("p", None)
    idle.before(0)
    idle.after(1, None)
    idle.close()
    assert calls == ["start", "stop"]


def test_a_log_on_the_devices_counts_every_device_and_its_dtypes_peak(monkeypatch):
    import jax

    asked = []

    def peak(dtype, device=None, *, warn=True):
        asked.append((dtype, warn))
        return 2e12

    monkeypatch.setattr(step_log, "compute_peak_flops", peak)
    log = StepLog.on_devices((6.0, 8.0), "bfloat16", unit="images", bytes_per_token=2.0)
    assert asked == [("bfloat16", False)]  # silent: a device without a figure logs no MFU
    meter = log.meter
    assert (meter.flops_per_token, meter.palm_flops_per_token) == (6.0, 8.0)
    assert (meter.peak_flops_per_device, meter.num_devices) == (2e12, jax.device_count())
    assert (log.unit, log.bytes_per_token, log.moe_layers) == ("images", 2.0, None)


def test_a_log_on_cpu_has_no_peak_and_says_nothing(recwarn):
    log = StepLog.on_devices((6.0, 8.0), "float32", moe_layers=[1, 3])
    assert log.meter.peak_flops_per_device is None and log.moe_layers == [1, 3]
    assert not recwarn.list
