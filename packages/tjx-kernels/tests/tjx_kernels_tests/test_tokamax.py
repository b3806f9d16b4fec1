"""``attention_impl: tokamax`` (OpenXLA tokamax's Mosaic GPU attention, `tjx.kernels.tokamax_ops`).

On a CPU the Mosaic GPU kernel cannot run (it has no interpret mode), so tjx's wrapper — the
layout, GQA, scale, causal, segment ids as a mask, key lengths, windows, the soft cap, zeros for
rows that see nothing — is checked through **tokamax's own XLA implementation**
(``implementation="xla"``, its reference path: the same public ``dot_product_attention`` call
with the same arguments), forward and gradients in float64 against the NumPy reference (1e-10).
tokamax comes from a scratch folder (tests-support's `tjx_tokamax_env`: never the resolve).
The kernel itself compiles for an H100 in tests-integration's deviceless plan test.
The rule (where the name is refused, that ``auto`` needs a measurement) needs no tokamax.
"""

from __future__ import annotations

import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import (
    AttentionKernel,
    AttentionMask,
    attention,
    auto_order,
    choice,
    reference_attention,
    tokamax_ops,
)
from tjx.kernels._checks import check_qkv

from ._ref import masked, measured_table, np_attention, np_mask, pretend_h100, rel_err
from .test_flash import _inputs, _segments

F64 = jnp.float64
H100 = choice.Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
B200 = choice.Target("gpu", "NVIDIA B200", (10, 0))
A100 = choice.Target("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))


def _target(t):
    return choice.target(t.platform, t.device_kind, t.compute_capability)


@pytest.fixture(scope="module")
def tokamax():
    from tjx_tokamax_env import on_path

    on_path()
    return tokamax_ops.load()


def _through_tokamax_xla(monkeypatch):
    """Route ``attention(..., implementation=TOKAMAX)`` to the wrapper with tokamax's XLA path,
    recording each call (the dispatcher's own route, only the last step changed)."""
    real, calls = tokamax_ops.tokamax_attention, []

    def xla(*args, **kw):
        calls.append(kw)
        return real(*args, **kw, implementation="xla")

    monkeypatch.setattr(tokamax_ops, "tokamax_attention", xla)
    return calls


CASES = {
    # name: (sq, sk, h, hkv, causal, ids, kv_lengths, window)
    "causal": (24, 24, 4, 4, True, False, None, None),
    "causal, packed with padding, GQA": (24, 24, 4, 2, True, True, None, None),
    "bidirectional, packed, MQA": (20, 20, 4, 1, False, True, None, None),
    "causal window, GQA": (24, 24, 4, 2, True, False, None, 5),
    "bidirectional window, packed": (20, 20, 2, 2, False, True, None, 4),
    "key lengths (one row sees nothing)": (8, 16, 2, 1, False, False, (11, 0), None),
    "decode-shaped window (q_len != kv_len)": (4, 16, 2, 2, False, False, None, 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_wrapper_matches_float64_through_tokamax_xla(name, tokamax, monkeypatch):
    sq, sk, h, hkv, causal, packed, lengths, window = CASES[name]
    calls = _through_tokamax_xla(monkeypatch)
    with jax.enable_x64(True):
        q, k, v, do = _inputs(len(name) + sq, 2, sq, sk, h, hkv, 16, F64)
        ids = _segments(sq, 2, sq) if packed else None
        kv_lengths = None if lengths is None else np.asarray(lengths, np.int32)
        mask = np_mask(2, sq, sk, causal=causal, q_ids=ids, kv_ids=ids, kv_lengths=kv_lengths,
                       window=window)  # fmt: skip
        want = np_attention(q, k, v, mask, scale=0.3, d_out=do)
        kw = masked(
            causal=causal,
            segment_ids=None if ids is None else jnp.asarray(ids),
            kv_lengths=None if kv_lengths is None else jnp.asarray(kv_lengths),
            scale=0.3,
            window=window,
            implementation=AttentionKernel.TOKAMAX,
        )
        out, vjp = jax.vjp(lambda q, k, v: attention(q, k, v, **kw), *map(jnp.asarray, (q, k, v)))
        got = (out, *vjp(jnp.asarray(do)))
    assert len(calls) == 1 and calls[0]["scale"] == 0.3
    for part, g, w in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert np.isfinite(np.asarray(g)).all(), part
        assert rel_err(g, w) <= 1e-10, f"{name}: {part}"
    assert out.dtype == F64


def test_a_soft_cap_matches_the_float64_reference(tokamax, monkeypatch):
    """Gemma 2's cap: tjx's XLA reference in float64 (its autodiff) is the reference."""
    _through_tokamax_xla(monkeypatch)
    with jax.enable_x64(True):
        q, k, v, do = (jnp.asarray(x) for x in _inputs(3, 2, 16, 16, 4, 2, 8, F64, 4.0))
        kw = masked(causal=True, softcap=5.0, window=6)
        ref = jax.vjp(lambda q, k, v: reference_attention(q, k, v, **kw), q, k, v)
        got = jax.vjp(
            lambda q, k, v: attention(q, k, v, implementation=AttentionKernel.TOKAMAX, **kw),
            q, k, v,
        )  # fmt: skip
        for part, g, w in zip(("dq", "dk", "dv"), got[1](do), ref[1](do), strict=True):
            assert rel_err(g, w) <= 1e-10, part
        assert rel_err(got[0], ref[0]) <= 1e-10


def test_the_kernel_is_tokamaxs_mosaic_gpu_implementation(tokamax, monkeypatch):
    """What ``attention_impl: tokamax`` calls: tokamax's public ``dot_product_attention`` with
    ``implementation="mosaic_gpu"`` (registered under that name), tjx's arguments mapped."""
    assert "mosaic_gpu" in tokamax._src.ops.attention.api.IMPLEMENTATIONS
    seen = {}

    def record(q, k, v, **kw):
        seen.update(kw)
        return jnp.zeros(q.shape, q.dtype)

    monkeypatch.setattr(tokamax, "dot_product_attention", record)
    q = jnp.ones((1, 8, 2, 16), jnp.bfloat16)
    shapes = check_qkv(q, q, q)
    out = tokamax_ops.tokamax_attention(
        q, q, q, AttentionMask(causal=True, kv_lengths=jnp.array([5]), window=4), scale=0.25,
        shapes=shapes, softcap=30.0,
    )  # fmt: skip
    assert out.dtype == jnp.bfloat16 and not out[0, 0].any()
    assert seen["implementation"] == "mosaic_gpu" and seen["is_causal"]
    assert seen["local_window_size"] == (3, 0) and seen["logits_soft_cap"] == 30.0
    assert seen["mask"] is None and seen["scale"] == 0.25  # no ids: no dense mask
    assert seen["key_value_seq_lengths"].tolist() == [5]


def test_cross_lowering_makes_tokamax_see_the_target(tokamax):
    """Under ``tjx.kernels.target`` naming an sm90 GPU on this CPU host, tokamax's checks see
    that GPU (its absl flag, and the capability hook); outside it they see the CPU again."""
    from absl import flags  # pants: no-infer-dep

    gpu_utils = sys.modules["tokamax._src.gpu_utils"]
    assert not gpu_utils.is_sm90()
    with _target(H100):
        tokamax_ops.cross_lowering_hooks()
        assert flags.FLAGS.tokamax_cross_compile and gpu_utils.has_mosaic_gpu_support()
        assert gpu_utils.is_sm90() and not gpu_utils.is_sm100()
    with _target(B200):
        assert gpu_utils.is_sm100()
    assert not gpu_utils.is_sm90()  # the CPU's answer again


# -- the rule: where the name is served, and auto ------------------------------------------


@pytest.mark.parametrize(
    "target,dtype,head_dim,sinks,wanted",
    [
        (choice.Target("cpu"), jnp.bfloat16, 64, False, "this run's device is cpu"),
        (A100, jnp.bfloat16, 64, False, "needs an sm90 or sm100 GPU"),
        (H100, jnp.float32, 64, False, "dtype float32 is not supported"),
        (H100, jnp.bfloat16, 320, False, "head_dim 320 is not supported"),
        (H100, jnp.bfloat16, 64, True, "`sinks` (attention sinks)"),
    ],
)
def test_naming_tokamax_where_it_cannot_run_is_one_line(target, dtype, head_dim, sinks, wanted):
    with pytest.raises(ValueError) as err:
        choice.resolve_attention("tokamax", dtype, head_dim, target=target, sinks=sinks)
    assert wanted in str(err.value) and "\n" not in str(err.value)


def test_without_the_package_naming_tokamax_says_what_to_install(monkeypatch, tmp_path):
    measured_table(monkeypatch, tmp_path, {"bf16-64": {"tokamax": 1.0, "cudnn": 2.0}})
    monkeypatch.setattr(choice, "installed", lambda: False)
    monkeypatch.setattr(tokamax_ops, "installed", lambda: False)
    monkeypatch.setattr(tokamax_ops, "_READY", [])  # not imported yet (as in a fresh process)
    monkeypatch.setitem(sys.modules, "tokamax", None)
    with pytest.raises(ValueError, match=r"^attention_impl 'tokamax' needs the tokamax package: "
                       r"pip install 'tjx-kernels\[gpu\]' \(tokamax==0\.0\.12\)$"):  # fmt: skip
        choice.resolve_attention("tokamax", jnp.bfloat16, 64, target=H100)
    with pytest.raises(ImportError, match="pip install 'tjx-kernels"):
        tokamax_ops.load()
    # auto on an H100 whose table measured tokamax fastest: not installed, so not ranked
    assert "tokamax" not in auto_order(jnp.bfloat16, 64, H100).order


def test_on_an_h100_with_tokamax_installed_the_name_resolves(monkeypatch):
    monkeypatch.setattr(choice, "installed", lambda: True)
    kernel = choice.resolve_attention("tokamax", jnp.bfloat16, 128, target=H100, softcap=True,
                                      bidirectional_window=True)  # fmt: skip
    assert kernel is AttentionKernel.TOKAMAX and kernel == "tokamax"


def test_auto_takes_tokamax_only_where_it_was_measured_fastest(monkeypatch, tmp_path):
    monkeypatch.setattr(choice, "installed", lambda: True)
    pretend_h100(monkeypatch)
    assert auto_order(jnp.bfloat16, 64).order == ("cudnn", "xla")  # unmeasured: never
    measured_table(monkeypatch, tmp_path, {"bf16-64": {"tokamax": 1.2, "pallas": 1.4}})
    choice_ = auto_order(jnp.bfloat16, 64)
    assert choice_.order == ("tokamax", "pallas", "cudnn", "xla")
    assert choice_.line() == (
        "attention: tokamax (auto: fastest measured on NVIDIA H100 80GB HBM3 for bf16-64: "
        "tokamax 1.2 ms, pallas 1.4 ms)"
    )
    # measured, but slower than cuDNN: cuDNN first
    measured_table(monkeypatch, tmp_path, {"bf16-128": {"tokamax": 2.0, "cudnn": 1.3}})
    assert auto_order(jnp.bfloat16, 128).order[:2] == ("cudnn", "tokamax")
    # another device kind's measurement does not count
    monkeypatch.setattr(choice, "default_target", lambda: choice.Target("gpu", "NVIDIA H200",
                                                                       (9, 0)))  # fmt: skip
    assert "tokamax" not in auto_order(jnp.bfloat16, 128).order


def test_a_resolved_tokamax_kernel_refuses_sinks_at_the_call():
    q = jnp.ones((1, 4, 2, 8), jnp.bfloat16)
    with pytest.raises(ValueError, match="sinks"):
        attention(
            q, q, q, mask=AttentionMask(sinks=jnp.zeros(2)), implementation=AttentionKernel.TOKAMAX
        )


# -- the price of its calls in a compiled program (tjx.metrics' estimate) --------------------

#: The op names tokamax wrote into its three calls of a causal [2, 1024, 12, 64] bf16 forward
#: and backward compiled for an H100 (2026-11-28), cut to the keys the price reads.
_FWD = (
    'jit(loss)/jvp()/tokamax:{"op":{"__type":"tokamax._src.ops.attention.'
    'pallas_mosaic_gpu.PallasMosaicGpuFlashAttention","config":{"block_q":64,'
    '"block_kv":128}},"arguments":{"mask":{"is_causal":true}}}/vmap()/mpmd_map'
)
_BWD = ("jit(loss)/transpose(jvp())/tokamax:{\"op\":{\"__type\":\"tokamax._src.ops.attention."
        "pallas_mosaic_gpu_vjp.PallasMosaicGpuFlashAttentionVjp\",\"config\":{\"block_q_dkv\":64,"
        "\"block_kv_dkv\":64,\"block_q_dq\":64,\"block_kv_dq\":64}},\"arguments\":{\"mask\":"
        "{\"is_causal\":true}}}/vmap()/mpmd_map")  # fmt: skip


def test_tokamaxs_calls_are_priced_as_attention_from_their_op_names():
    from types import SimpleNamespace

    from tjx.kernels.costs import roofline_costs

    b, s, h, d, bf16 = 2, 1024, 12, 64, 2
    x = ("bf16", (b, s, h, d))
    stats = ("f32", (b, h, s))
    price = roofline_costs(causal=False, device_kind=None, compute_capability=(9, 0))

    def call(op_name, operands, results):
        arrays = [[SimpleNamespace(dtype=t, dims=dims) for t, dims in z]
                  for z in (operands, results)]  # fmt: skip
        return SimpleNamespace(kernel=None, target="mosaic_gpu_v2", grid=(1, 1, 1),
                               operands=arrays[0], results=arrays[1], op_name=op_name)  # fmt: skip

    # by hand: query tile i (64 rows) visits keys up to its last row rounded up to 128
    keys = sum(min(s, -(-(i + 1) * 64 // 128) * 128) for i in range(s // 64))
    flops, read, written, name = price(call(_FWD, [x, x, x], [x, stats, stats]))
    assert name == "tokamax attention fwd (mosaic_gpu_v2, tjx's flash formulas)"
    assert flops == {"bf16": 4.0 * b * h * 64 * d * keys}  # causal read from the op name
    assert read == b * h * (s * d + 2 * keys * d) * bf16
    assert written == b * h * s * d * bf16 + 2 * b * h * s * 4
    dq_keys = sum(min(s, (i + 1) * 64) for i in range(s // 64))
    flops, read, written, name = price(call(_BWD, [x] * 4 + [stats] * 3, [x]))
    assert name.startswith("tokamax attention bwd dq") and written == b * h * s * d * bf16
    assert flops == {"bf16": 6.0 * b * h * 64 * d * dq_keys}
    flops, _, written, name = price(call(_BWD, [x] * 4 + [stats] * 3, [x, x]))
    assert name.startswith("tokamax attention bwd dk dv") and written == 2 * b * h * s * d * bf16
    assert flops == {"bf16": 8.0 * b * h * 64 * d * dq_keys}  # square tiles: the same walk
    # another library's Mosaic GPU call, or one without a tokamax op name: not priced here
    assert price(call("jit(f)/pallas_call", [x, x, x], [x])) is None


def test_a_jax_without_the_kernel_aliases_tokamax_spells_gets_them_renamed(monkeypatch):
    # jax 0.11 dropped ``plgpu.kernel``'s out_shape/scratch_shapes aliases tokamax 0.0.12 still
    # passes (every tokamax call failed on an H200 with jax 0.11.2 until this wrapper).
    import importlib

    plgpu = importlib.import_module("jax.experimental.pallas.mosaic_gpu")
    real = plgpu.kernel
    tokamax_ops._kernel_aliases()  # this jax (0.10) keeps the aliases: nothing wrapped
    assert plgpu.kernel is real
    seen = []

    def kernel_011(body=None, *, out_type=None, scratch_types=None, **mesh):
        seen.append((body, out_type, scratch_types, mesh))
        return "launched"

    monkeypatch.setattr(plgpu, "kernel", kernel_011)
    tokamax_ops._kernel_aliases()
    assert plgpu.kernel is not kernel_011
    body = object()
    assert plgpu.kernel(body, out_shape=1, scratch_shapes=[2], grid=(3,)) == "launched"
    assert seen == [(body, 1, [2], {"grid": (3,)})]
