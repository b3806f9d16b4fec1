"""``resolve_attention`` (the kernel chosen once) and the ``attention`` dispatcher that runs it:
selection rules, errors at resolution, the cuDNN plumbing."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import tjx.kernels.dispatch as dispatch
from tjx.kernels import (
    AttentionKernel,
    AttentionMask,
    attention,
    reference_attention,
    resolve_attention,
)
from tjx.kernels.choice import Target, auto_order, current_target, target

from ._ref import (
    choose,
    emulate_cudnn,
    measured_table,
    np_attention,
    np_mask,
    pretend_h100,
    rel_err,
)


def _x(shape, dtype=jnp.float32, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


H100 = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
A100 = Target("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))
CPU, TPU = Target("cpu"), Target("tpu", "TPU v5 lite")


def _select(dtype=jnp.bfloat16, d=64, *, impl="auto", segs=None, needs_xla=False, gpu=True, t=None):
    """The kernel a call runs: its resolution, then XLA for a bias or dropout (``needs_xla``);
    segment ids never change it (``segs`` is here to show that)."""
    del segs
    kernel = resolve_attention(impl, dtype, d, target=t if t is not None else H100 if gpu else CPU)
    return "xla" if needs_xla else kernel


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
    got = attention(q, k, v, mask=AttentionMask(causal=True, segment_ids=ids))
    ref = reference_attention(q, k, v, mask=AttentionMask(causal=True, segment_ids=ids))
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
    got = jax.jit(
        lambda q, k, v: attention(q, k, v, mask=AttentionMask(causal=True, kv_lengths=lengths))
    )(q, k, v)
    assert calls[-1][0] == "cudnn" and calls[-1][1]["is_causal"]
    ref = reference_attention(q, k, v, mask=AttentionMask(causal=True, kv_lengths=lengths))
    assert rel_err(got.astype(jnp.float32), ref.astype(jnp.float32)) <= 2e-2

    ids = jnp.asarray([[1, 1, 1, 2, 2, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 1]], jnp.int32)
    pair = (ids, ids[:, ::-1])  # cross-attention ids: the boolean mask (test_cudnn_segments
    # covers self-attention ids, which take cuDNN's packed layout)
    got = jax.jit(
        lambda q, k, v: attention(
            q, k, v, mask=AttentionMask(segment_ids=pair), implementation="cudnn"
        )
    )(q, k, v)
    assert calls[-1][1]["mask"] is not None
    ref = reference_attention(q, k, v, mask=AttentionMask(segment_ids=pair))
    assert rel_err(got.astype(jnp.float32), ref.astype(jnp.float32)) <= 2e-2


def test_cudnn_rows_that_see_no_key_are_zero(monkeypatch):
    """jax's own (XLA) dot_product_attention averages over all keys on a fully masked row; the
    cuDNN path must give the tjx convention (zeros), as XLA and Pallas do."""
    emulate_cudnn(monkeypatch)
    q = _x((2, 8, 4, 16), jnp.bfloat16, 9)
    k, v = _x((2, 8, 2, 16), jnp.bfloat16, 10), _x((2, 8, 2, 16), jnp.bfloat16, 11)
    ids = jnp.asarray([[1, 1, 1, 2, 2, 0, 0, 0], [0, 0, 0, 0, 0, 0, 0, 0]], jnp.int32)
    lengths = jnp.asarray([8, 0], jnp.int32)
    run = lambda **kw: jax.jit(
        lambda q, k, v: attention(q, k, v, AttentionMask(**kw), implementation="cudnn")
    )
    for kw in (
        {"segment_ids": ids},  # packed layout (test_cudnn_segments)
        {"segment_ids": (ids, ids)},  # a pair: the boolean mask
        {"kv_lengths": lengths},
        {"causal": True, "kv_lengths": lengths},
    ):
        got = np.asarray(run(**kw)(q, k, v).astype(jnp.float32))
        ref = np.asarray(reference_attention(q, k, v, AttentionMask(**kw)).astype(jnp.float32))
        assert rel_err(got, ref) <= 2e-2, kw
        assert np.all(got[1] == 0.0), kw  # row 1 sees nothing under each of the three
    got = np.asarray(run(segment_ids=ids)(q, k, v).astype(jnp.float32))
    assert np.all(got[0, 5:] == 0.0) and np.all(np.abs(got[0, :5]).sum(-1) > 0)


def test_on_cuda_gpu_is_false_on_cpu():
    assert dispatch.on_cuda_gpu() is False


def test_a_kernel_refused_while_tracing_falls_back_once_at_resolution_never_per_call(monkeypatch):
    """jax's cuDNN checks refuse while tracing: the kernel choice (what a model's name resolves
    to before it is built) takes the next kernel with one line; a call given cuDNN only runs it,
    so the refusal surfaces there, with no warning and no fallback."""

    def refuse(*args, **kwargs):
        raise NotImplementedError("cuDNN: unsupported compute capability")

    monkeypatch.setattr(jax.nn, "dot_product_attention", refuse)
    pretend_h100(monkeypatch)
    q = _x((1, 16, 2, 16), jnp.float16, 8)

    def build(kernel):
        return jax.jit(
            lambda q: attention(q, q, q, mask=AttentionMask(causal=True), implementation=kernel)
        ).lower(q)

    said: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning anywhere: the fallback is said in one line
        chosen = choose("auto", jnp.float16, 16, build, named_by="m", say=said.append)
    assert chosen == ("xla", True)
    assert said == [
        "attention: cudnn (auto: no tjx measurement for NVIDIA H100 80GB HBM3 yet)",
        "attention: cudnn failed to lower or compile (NotImplementedError: cuDNN: unsupported "
        "compute capability); using xla",
    ]
    got = jax.jit(
        lambda q: attention(q, q, q, mask=AttentionMask(causal=True), implementation=chosen[0])
    )(q)
    ref = reference_attention(q, q, q, mask=AttentionMask(causal=True))
    assert rel_err(got.astype(jnp.float32), ref.astype(jnp.float32)) <= 5e-3
    for given in ("auto", AttentionKernel.CUDNN, "cudnn"):  # resolved to cuDNN: it runs, or raises
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(NotImplementedError):
                attention(q, q, q, mask=AttentionMask(causal=True), implementation=given)


def test_a_resolved_kernel_runs_without_the_choice_being_consulted(monkeypatch):
    """An AttentionKernel is run as given: neither the resolution nor the target is consulted."""
    from tjx.kernels import choice

    def never(*args, **kwargs):
        raise AssertionError("the kernel choice was consulted per call")

    monkeypatch.setattr(dispatch, "resolve_attention", never)
    monkeypatch.setattr(choice, "auto_order", never)
    monkeypatch.setattr(choice, "current_target", never)
    q, k, v = _x((2, 8, 4, 16), seed=12), _x((2, 8, 2, 16), seed=13), _x((2, 8, 2, 16), seed=14)
    for kernel in (AttentionKernel.XLA, AttentionKernel.PALLAS):  # Pallas: interpret mode
        got = attention(q, k, v, mask=AttentionMask(causal=True), implementation=kernel)
        ref = reference_attention(q, k, v, mask=AttentionMask(causal=True))
        assert rel_err(got, ref) <= 1e-5, kernel
    with pytest.raises(AssertionError, match="consulted per call"):
        attention(q, k, v, implementation="auto")  # a name is resolved: the check can fail


def test_an_invalid_choice_is_refused_at_resolution_in_one_line():
    for name, match in (
        ("flash", "`implementation` must be one of auto, xla, cudnn, pallas, tokamax; got 'flash'"),
        ("cudnn", "implementation='cudnn' needs a CUDA GPU; this run's device is cpu"),
    ):
        with pytest.raises(ValueError) as err:
            resolve_attention(name, jnp.bfloat16, 64, target=CPU)
        assert str(err.value) == match and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="`softcap` is not supported by implementation 'cudnn'"):
        resolve_attention("cudnn", jnp.bfloat16, 64, target=H100, softcap=True)
    with pytest.raises(ValueError, match="`window` without `causal`"):
        resolve_attention("cudnn", jnp.bfloat16, 64, target=H100, bidirectional_window=True)
    # auto leaves cuDNN out where it cannot serve: never a refusal.
    assert resolve_attention("auto", jnp.bfloat16, 64, target=H100) == "cudnn"
    assert resolve_attention("auto", jnp.bfloat16, 64, target=H100, bidirectional_window=True) == (
        AttentionKernel.XLA
    )


def test_the_per_call_selection_is_gone() -> None:
    """`select_implementation` (deprecated in 0.11: `resolve_attention` resolves once) went in
    0.15, past its deadline (0.12): no longer in `tjx.kernels`, `.dispatch` or `.choice`."""
    import tjx.kernels
    from tjx.kernels import choice, dispatch

    for module in (tjx.kernels, dispatch, choice):
        assert not hasattr(module, "select_implementation"), module
