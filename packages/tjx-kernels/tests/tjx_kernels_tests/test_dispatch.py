"""The ``attention`` dispatcher: selection rules, fallbacks, errors and the cuDNN plumbing."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tjx.kernels.dispatch as dispatch
from tjx.kernels import attention, reference_attention, select_implementation
from tjx.kernels._checks import check_qkv
from tjx.kernels.choice import Target, auto_order, current_target, target

from ._ref import emulate_cudnn, measured_table, np_attention, np_mask, pretend_h100, rel_err


def _x(shape, dtype=jnp.float32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


H100 = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
A100 = Target("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))
CPU, TPU = Target("cpu"), Target("tpu", "TPU v5 lite")


def _select(dtype=jnp.bfloat16, d=64, *, impl="auto", segs=None, needs_xla=False, gpu=True, t=None):
    q = jnp.ones((1, 8, 4, d), dtype)
    kv = jnp.ones((1, 8, 2, d), dtype)
    shapes = check_qkv(q, kv, kv)
    return select_implementation(
        q,
        shapes,
        implementation=impl,
        segment_ids=segs,
        needs_xla=needs_xla,
        target=t if t is not None else H100 if gpu else CPU,
    )


def test_auto_with_no_measurement_is_cudnn_where_it_serves_else_xla():
    ids = jnp.ones((1, 8), jnp.int32)
    assert _select(gpu=False) == "xla"
    assert _select() == "cudnn"
    assert _select(jnp.float16, 128) == "cudnn"
    assert _select(segs=ids) == "cudnn"  # packed batches: segment ids as cuDNN's mask
    assert _select(jnp.bfloat16, 256) == "cudnn"  # Hopper: cuDNN serves head_dim up to 256
    assert _select(jnp.bfloat16, 256, t=A100) == "xla"  # before Hopper: 128
    assert _select(jnp.float32) == "xla"  # no fp32 cuDNN; unmeasured Pallas only by name
    assert _select(jnp.float32, 300) == "xla"
    assert _select(needs_xla=True) == "xla"
    assert _select(impl="pallas", needs_xla=True) == "xla"  # bias/dropout: XLA path
    assert _select(impl="pallas", gpu=False) == "pallas"  # explicit: interpret mode on CPU
    assert _select(impl="xla") == "xla"


def test_auto_takes_the_fastest_measured_kernel_and_unmeasured_never_wins(monkeypatch, tmp_path):
    measured_table(monkeypatch, tmp_path, {"bf16-64": {"pallas": 1.0, "cudnn": 1.5}})
    assert _select() == "pallas"
    assert auto_order(jnp.bfloat16, 64, H100).order == ("pallas", "cudnn", "xla")
    measured_table(monkeypatch, tmp_path, {"bf16-64": {"xla": 2.0}, "fp32-64": {"pallas": 4.0}})
    assert auto_order(jnp.bfloat16, 64, H100).order == ("xla", "cudnn")  # cuDNN unmeasured
    assert _select(jnp.float32) == "pallas"  # measured correct and faster than nothing measured
    assert _select(t=A100) == "cudnn"  # another device kind: H100 figures do not count
    choice = auto_order(jnp.bfloat16, 64, H100)
    assert choice.line() == (
        "attention: xla (auto: fastest measured on NVIDIA H100 80GB HBM3 for bf16-64: xla 2 ms)"
    )


def test_auto_says_why_once():
    assert auto_order(jnp.bfloat16, 64, H100).line() == (
        "attention: cudnn (auto: no tjx measurement for NVIDIA H100 80GB HBM3 yet)"
    )
    assert auto_order(jnp.bfloat16, 64, TPU).line().startswith("attention: xla (auto: fused")


def test_auto_rule_does_not_depend_on_the_device_count(monkeypatch):
    """Both fused kernels partition on a mesh, so the choice is the same on any device count."""
    ids = jnp.ones((1, 8), jnp.int32)
    for count in (1, 2, 8):
        monkeypatch.setattr(jax, "device_count", lambda count=count: count)
        assert _select(segs=ids) == "cudnn"
        assert _select() == "cudnn"
        assert _select(gpu=False, segs=ids) == "xla"


@pytest.mark.parametrize(
    "dtype,d,impl,t,match",
    [
        (jnp.bfloat16, 64, "cudnn", CPU, "CUDA GPU"),
        (jnp.float32, 64, "cudnn", H100, "bfloat16, float16"),
        (jnp.bfloat16, 36, "cudnn", H100, "multiples of 8"),
        (jnp.bfloat16, 256, "cudnn", A100, "up to 128"),
        (jnp.float32, 300, "pallas", H100, "head_dim"),
        (jnp.bfloat16, 64, "triton", H100, "implementation"),
        (jnp.bfloat16, 64, "pallas", TPU, "on a TPU use 'auto' or 'xla'"),
        (jnp.bfloat16, 64, "cudnn", TPU, "needs a CUDA GPU; this run's device is tpu"),
    ],
)
def test_explicit_kernel_that_cannot_serve_raises(dtype, d, impl, t, match):
    with pytest.raises(ValueError, match=match):
        _select(dtype, d, impl=impl, t=t)


def test_target_block_overrides_the_default_device():
    assert current_target().platform == "cpu"
    with target("gpu", "NVIDIA H100", (9, 0)) as t:
        assert current_target() == t and dispatch.on_cuda_gpu()
    assert not dispatch.on_cuda_gpu()


def test_pallas_rejects_float64():
    with jax.enable_x64(True):
        q = jnp.ones((1, 4, 1, 8), jnp.float64)
        with pytest.raises(ValueError, match="float64"):
            attention(q, q, q, implementation="pallas")


def test_auto_on_cpu_equals_reference_and_float64():
    q, k, v = _x((2, 9, 4, 16), seed=1), _x((2, 9, 2, 16), seed=2), _x((2, 9, 2, 16), seed=3)
    ids = jnp.asarray([[1] * 6 + [0] * 3, [1] * 4 + [2] * 5], jnp.int32)
    got = attention(q, k, v, causal=True, segment_ids=ids)
    ref = reference_attention(q, k, v, causal=True, segment_ids=ids)
    np.testing.assert_array_equal(got, ref)
    mask = np_mask(2, 9, 9, causal=True, q_ids=np.asarray(ids), kv_ids=np.asarray(ids))
    assert rel_err(got, np_attention(np.asarray(q), np.asarray(k), np.asarray(v), mask)) <= 1e-5
    assert got.dtype == q.dtype


def test_bias_and_dropout_route_to_xla_even_when_pallas_is_requested():
    q = _x((1, 8, 2, 16))
    bias = _x((1, 2, 8, 8), seed=4)
    got = attention(q, q, q, bias=bias, implementation="pallas")
    np.testing.assert_array_equal(got, reference_attention(q, q, q, bias=bias))
    key = jax.random.key(0)
    got = attention(q, q, q, dropout_rate=0.5, dropout_rng=key, implementation="pallas")
    ref = reference_attention(q, q, q, dropout_rate=0.5, dropout_rng=key)
    np.testing.assert_array_equal(got, ref)


def test_attention_validates_before_dispatch():
    q = jnp.ones((1, 4, 3, 8))
    kv = jnp.ones((1, 4, 2, 8))
    with pytest.raises(ValueError, match="multiple"):
        attention(q, kv, kv)
    with pytest.raises(ValueError, match="implementation"):
        attention(q, q, q, implementation="flash")  # type: ignore[arg-type]


def test_cudnn_plumbing_with_segments_and_lengths(monkeypatch):
    """On CPU, swap cuDNN for XLA inside jax.nn to check masks/lengths are passed through."""
    calls = []
    real = jax.nn.dot_product_attention

    def fake(*args, implementation=None, **kwargs):
        calls.append((implementation, kwargs))
        return real(*args, implementation="xla", **kwargs)

    monkeypatch.setattr(jax.nn, "dot_product_attention", fake)
    pretend_h100(monkeypatch)
    q = _x((2, 8, 4, 16), jnp.bfloat16, 5)
    k, v = _x((2, 8, 2, 16), jnp.bfloat16, 6), _x((2, 8, 2, 16), jnp.bfloat16, 7)
    lengths = jnp.asarray([8, 5], jnp.int32)
    got = jax.jit(lambda q, k, v: attention(q, k, v, causal=True, kv_lengths=lengths))(q, k, v)
    assert calls[-1][0] == "cudnn" and calls[-1][1]["is_causal"]
    ref = reference_attention(q, k, v, causal=True, kv_lengths=lengths)
    assert rel_err(got.astype(jnp.float32), ref.astype(jnp.float32)) <= 2e-2

    ids = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 1]], jnp.int32)
    pair = (ids, ids[:, ::-1])  # cross-attention ids: the boolean mask (test_cudnn_segments
    # covers self-attention ids, which take cuDNN's packed layout)
    got = jax.jit(lambda q, k, v: attention(q, k, v, segment_ids=pair, implementation="cudnn"))(
        q, k, v
    )
    assert calls[-1][1]["mask"] is not None
    ref = reference_attention(q, k, v, segment_ids=pair)
    assert rel_err(got.astype(jnp.float32), ref.astype(jnp.float32)) <= 2e-2


def test_cudnn_rows_that_see_no_key_are_zero(monkeypatch):
    """jax's own (XLA) dot_product_attention averages over all keys on a fully masked row; the
    cuDNN path must give the tjx convention (zeros), as XLA and Pallas do."""
    emulate_cudnn(monkeypatch)
    q = _x((2, 8, 4, 16), jnp.bfloat16, 9)
    k, v = _x((2, 8, 2, 16), jnp.bfloat16, 10), _x((2, 8, 2, 16), jnp.bfloat16, 11)
    ids = jnp.asarray([[1, 1, 1, 2, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]], jnp.int32)
    lengths = jnp.asarray([8, 0], jnp.int32)
    run = lambda **kw: jax.jit(lambda q, k, v: attention(q, k, v, implementation="cudnn", **kw))
    for kw in (
        {"segment_ids": ids},  # packed layout (test_cudnn_segments)
        {"segment_ids": (ids, ids)},  # a pair: the boolean mask
        {"kv_lengths": lengths},
        {"causal": True, "kv_lengths": lengths},
    ):
        got = np.asarray(run(**kw)(q, k, v).astype(jnp.float32))
        ref = np.asarray(reference_attention(q, k, v, **kw).astype(jnp.float32))
        assert rel_err(got, ref) <= 2e-2, kw
        assert np.all(got[1] == 0.0), kw  # row 1 sees nothing under each of the three
    got = np.asarray(run(segment_ids=ids)(q, k, v).astype(jnp.float32))
    assert np.all(got[0, 5:] == 0.0) and np.all(np.abs(got[0, :5]).sum(-1) > 0)


def test_on_cuda_gpu_is_false_on_cpu():
    assert dispatch.on_cuda_gpu() is False


def test_auto_falls_back_when_cudnn_refuses_while_tracing(monkeypatch):
    def refuse(*args, **kwargs):
        raise NotImplementedError("cuDNN: unsupported compute capability")

    monkeypatch.setattr(jax.nn, "dot_product_attention", refuse)
    pretend_h100(monkeypatch)
    q = _x((1, 16, 2, 16), jnp.float16, 8)
    with pytest.warns(RuntimeWarning, match="cudnn refused this call .*; using xla"):
        got = jax.jit(lambda q: attention(q, q, q, causal=True))(q)  # cuDNN refuses → XLA
    ref = reference_attention(q, q, q, causal=True)
    assert rel_err(got.astype(jnp.float32), ref.astype(jnp.float32)) <= 5e-3
    with pytest.raises(NotImplementedError):
        attention(q, q, q, implementation="cudnn")  # an explicit request surfaces the refusal
