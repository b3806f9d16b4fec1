import dataclasses
import warnings
from types import SimpleNamespace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import (
    DEVICE_PEAKS,
    ThroughputMeter,
    compute_peak_flops,
    device_peak_flops,
    flops_per_token_from_config,
    mfu,
    peak_flops,
    transformer_flops_per_token,
)
from tjx.metrics.devices import normalize_dtype

# GPT-2 small: 124,439,808 parameters (tied embeddings, learned positions), 12 layers, d=768.
N, L, D, S = 124_439_808, 12, 768, 1024


def test_gpt2_small_flops_per_token():
    # The default counts causal attention at half (MaxText, torchtitan); PaLM counts it whole.
    causal = transformer_flops_per_token(num_params=N, num_layers=L, d_model=D, seq_len=S)
    assert causal == 6 * N + 6 * L * D * S == 803_261_952
    palm = transformer_flops_per_token(
        num_params=N, num_layers=L, d_model=D, seq_len=S, causal_discount=False
    )
    assert palm == 6 * N + 12 * L * D * S == 859_885_056
    forward = transformer_flops_per_token(
        num_params=N, num_layers=L, d_model=D, seq_len=S, training=False, causal_discount=False
    )
    assert forward == 2 * N + 4 * L * D * S
    assert palm == pytest.approx(3 * forward)


@dataclasses.dataclass
class TinyConfig:
    vocab_size: int = 50257
    max_seq_len: int = 1024
    d_model: int = 768
    num_layers: int = 12
    num_heads: int = 12


def test_flops_from_config():
    assert flops_per_token_from_config(TinyConfig(), num_params=N) == 803_261_952
    assert flops_per_token_from_config(TinyConfig(), num_params=N, causal_discount=False) == (
        859_885_056
    )
    assert flops_per_token_from_config(TinyConfig(), num_params=N, seq_len=512) == (
        6 * N + 6 * L * D * 512
    )
    # An explicit head_dim (e.g. a model with d_model != heads·head_dim) sets the attention width.
    cfg = SimpleNamespace(num_layers=2, d_model=64, num_heads=4, head_dim=32, max_seq_len=16)
    assert flops_per_token_from_config(cfg, num_params=1000) == 6 * 1000 + 6 * 2 * 128 * 16
    with pytest.raises(ValueError, match="num_layers"):
        flops_per_token_from_config(SimpleNamespace(d_model=8, max_seq_len=4), num_params=10)


def test_flops_bad_input():
    for field, value in (
        ("num_params", 0),
        ("num_layers", 1.5),
        ("d_model", True),
        ("seq_len", -1),
    ):
        kwargs: dict[str, Any] = {
            "num_params": N,
            "num_layers": L,
            "d_model": D,
            "seq_len": S,
            field: value,
        }
        with pytest.raises(ValueError, match=field):
            transformer_flops_per_token(**kwargs)
    base: dict[str, Any] = {"num_params": N, "num_layers": L, "d_model": D, "seq_len": S}
    with pytest.raises(ValueError, match="causal_discount"):
        transformer_flops_per_token(**{**base, "causal_discount": "yes"})
    with pytest.raises(ValueError, match="training"):
        transformer_flops_per_token(**{**base, "training": 1})


@pytest.mark.parametrize(
    ("kind", "dtype", "expected"),
    [
        ("NVIDIA H100 80GB HBM3", "bf16", 989.5e12),
        ("NVIDIA H100 80GB HBM3", "fp32", 67e12),
        ("NVIDIA H100 PCIe", jnp.bfloat16, 756.5e12),
        ("NVIDIA H100 PCIe", "tf32", 378e12),
        ("NVIDIA H100 NVL", "bfloat16", 835.5e12),
        ("NVIDIA H200", "bf16", 989.5e12),
        ("NVIDIA H200 NVL", "bf16", 835.5e12),
        ("NVIDIA GH200 480GB", "fp16", 989.5e12),
        ("NVIDIA A100-SXM4-80GB", "bf16", 312e12),
        ("NVIDIA A100 80GB PCIe", np.float32, 19.5e12),
        ("NVIDIA A100-PCIE-40GB", "float16", 312e12),
        ("TPU v4", "bf16", 275e12),
        ("TPU v5 lite", "bf16", 197e12),
        ("TPU v5e", "bf16", 197e12),
        ("TPU v5", "bf16", 459e12),
        ("TPU v5p", "bf16", 459e12),
        ("TPU v6 lite", "bf16", 918e12),
    ],
)
def test_peak_flops_table(kind, dtype, expected):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert peak_flops(kind, dtype) == expected


def test_unknown_devices_give_none_with_warning():
    for kind in ("NVIDIA A10G", "TPU v4 lite", "NVIDIA GeForce RTX 4090", "Tesla V100-SXM2-16GB"):
        with pytest.warns(UserWarning, match="no peak FLOP/s known"):
            assert peak_flops(kind, "bf16") is None
    with pytest.warns(UserWarning, match="no fp32 peak"):
        assert peak_flops("TPU v5p", "fp32") is None
    assert peak_flops("cpu") is None
    assert set(DEVICE_PEAKS) >= {"H100 SXM", "H100 PCIe", "H200 SXM", "A100", "TPU v4", "TPU v5e"}


@pytest.mark.parametrize(
    ("compute_dtype", "key"),
    [("bfloat16", "bf16"), ("float16", "fp16"), ("float32", "tf32"), (jnp.float32, "tf32")],
)
def test_compute_peak_flops_is_the_default_precision_peak(compute_dtype, key):
    """float32 matmuls run as TF32 at JAX's default precision: MFU against the tf32 peak."""
    h100 = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    assert compute_peak_flops(compute_dtype, h100) == getattr(DEVICE_PEAKS["H100 SXM"], key)
    assert compute_peak_flops("float32", h100) != peak_flops(h100.device_kind, "fp32")


def test_compute_peak_flops_unknown_and_cpu():
    rtx = SimpleNamespace(platform="gpu", device_kind="NVIDIA GeForce RTX 4090")
    with pytest.warns(UserWarning, match="no peak FLOP/s known"):
        assert compute_peak_flops("bfloat16", rtx) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warn=False: a training loop's every start stays quiet
        assert compute_peak_flops("bfloat16", rtx, warn=False) is None
        tpu = SimpleNamespace(platform="tpu", device_kind="TPU v5p")
        assert compute_peak_flops("float32", tpu, warn=False) is None  # TPUs have no TF32
        assert compute_peak_flops("float32") is None  # this CPU
    with pytest.raises(ValueError, match="dtype"):
        compute_peak_flops("int8", rtx)


def test_device_peak_flops_on_cpu_and_user_peak():
    cpu = jax.devices()[0]
    assert cpu.platform == "cpu"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # CPU → None silently: expected, not a misconfiguration
        assert device_peak_flops(cpu, "bf16") is None
        assert device_peak_flops() is None
    assert device_peak_flops(cpu, "bf16", peak=2e12) == 2e12
    gpu = SimpleNamespace(platform="gpu", device_kind="NVIDIA H100 80GB HBM3")
    assert device_peak_flops(gpu, "bf16") == 989.5e12
    with pytest.raises(ValueError, match="peak"):
        device_peak_flops(cpu, peak=-1.0)
    with pytest.raises(ValueError, match="dtype"):
        device_peak_flops(cpu, "int8")
    with pytest.raises(ValueError, match="dtype"):
        normalize_dtype(object())
    with pytest.raises(ValueError, match="device_kind"):
        peak_flops(None)  # type: ignore[arg-type]


def test_mfu_gpt2_small_on_h100s():
    flops = transformer_flops_per_token(
        num_params=N, num_layers=L, d_model=D, seq_len=S, causal_discount=False
    )
    peak = peak_flops("NVIDIA H100 80GB HBM3", "bf16")
    tokens_per_s = 400_000.0
    got = mfu(tokens_per_s, flops, peak, num_devices=8)
    # 400k tok/s × 859.885 MFLOP/tok = 343.95 TFLOP/s over 8 × 989.5 TFLOP/s = 4.345 %.
    assert got == pytest.approx(400_000 * 859_885_056 / (8 * 989.5e12), rel=1e-12)
    assert got == pytest.approx(0.04345, abs=1e-5)
    assert mfu(tokens_per_s, flops, None) is None
    with pytest.raises(ValueError, match="num_devices"):
        mfu(1.0, 1.0, 1.0, num_devices=0)
    with pytest.raises(ValueError, match="peak"):
        mfu(1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="tokens_per_s"):
        mfu(-1.0, 1.0, 1.0)


def test_throughput_meter_with_fake_clock():
    now = [100.0]
    flops = 859_885_056.0
    meter = ThroughputMeter(
        flops_per_token=flops, peak_flops_per_device=989.5e12, num_devices=2, clock=lambda: now[0]
    )
    for _ in range(4):
        meter.update(tokens=np.int64(8 * 1024))  # numpy ints are host values too
        now[0] += 0.5
    report = meter.report()
    assert report["tokens_per_s"] == pytest.approx(4 * 8 * 1024 / 2.0)
    assert report["tokens_per_s_per_device"] == pytest.approx(4 * 8 * 1024 / 4.0)
    assert report["steps_per_s"] == pytest.approx(2.0)
    assert report["step_time_s"] == pytest.approx(0.5)
    assert report["tflops_per_device"] == pytest.approx(16384 * flops / 2 / 1e12)
    assert report["mfu"] == pytest.approx(16384 * flops / (2 * 989.5e12))
    # A new interval starts after each report; totals keep counting.
    meter.update(tokens=100)
    now[0] += 1.0
    second = meter.report(reset=False)
    assert second["tokens_per_s"] == pytest.approx(100.0)
    assert second["total_tokens"] == 4 * 8192 + 100
    # No time elapsed → undefined rates (NaN), never a division by zero.
    meter.reset()
    empty = meter.report()
    assert np.isnan(empty["tokens_per_s"]) and np.isnan(empty["step_time_s"])
    assert empty["mfu"] is None
    # No peak (CPU): MFU None, throughput still reported.
    cpu_meter = ThroughputMeter(flops_per_token=flops, clock=lambda: now[0])
    cpu_meter.update(tokens=10)
    now[0] += 2.0
    assert cpu_meter.report()["mfu"] is None
    assert "mfu" not in ThroughputMeter(clock=lambda: now[0]).report()


def test_the_meter_reports_palms_mfu_beside_the_default():
    now = [0.0]
    half = transformer_flops_per_token(num_params=N, num_layers=L, d_model=D, seq_len=S)
    full = transformer_flops_per_token(
        num_params=N, num_layers=L, d_model=D, seq_len=S, causal_discount=False
    )
    meter = ThroughputMeter(
        flops_per_token=half,
        palm_flops_per_token=full,
        peak_flops_per_device=989.5e12,
        clock=lambda: now[0],
    )
    meter.update(tokens=16 * 1024)
    now[0] = 0.05
    report = meter.report()
    assert report["mfu"] == pytest.approx(16 * 1024 / 0.05 * half / 989.5e12, rel=1e-12)
    assert report["mfu_palm"] == pytest.approx(report["mfu"] * full / half, rel=1e-12)
    assert "mfu_palm" not in ThroughputMeter(flops_per_token=half, clock=lambda: 1.0).report()
    with pytest.raises(ValueError, match="palm_flops_per_token"):
        ThroughputMeter(flops_per_token=half, palm_flops_per_token=-1.0)


def test_throughput_meter_bad_input():
    with pytest.raises(ValueError, match="num_devices"):
        ThroughputMeter(num_devices=0)
    with pytest.raises(ValueError, match="flops_per_token"):
        ThroughputMeter(flops_per_token=0.0)
    with pytest.raises(ValueError, match="peak_flops_per_device"):
        ThroughputMeter(peak_flops_per_device=-5.0)
    meter = ThroughputMeter()
    with pytest.raises(ValueError, match="tokens"):
        meter.update(tokens=jnp.int32(5))  # a device value would force a sync: refuse it
    with pytest.raises(ValueError, match="steps"):
        meter.update(tokens=5, steps=-1)
