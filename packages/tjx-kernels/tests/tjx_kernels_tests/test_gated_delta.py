"""The gated delta rule: chunked and one-token forms against a float64 NumPy recurrence."""

from __future__ import annotations

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.kernels import custom_call_cost
from tjx.kernels.choice import Target
from tjx.kernels.costs import GATED_DELTA_KERNELS
from tjx.kernels.gated_delta import (
    gated_delta_auto,
    gated_delta_implementation,
    gated_delta_recurrent,
    gated_delta_step,
)
from tjx.kernels.gated_delta import gated_delta_rule as _rule

from ._ref import measured_table

# One compile per call shape (op by op, the chunked form's set-up dispatches dozens of kernels).
gated_delta_rule = jax.jit(_rule, static_argnames=("chunk_size", "scale"))


def _reference(q, k, v, g, beta, s0=None, scale=None):
    """float64 NumPy, token by token: S = αS + βkᵀ(v - αkS), o = q S (the module's formula)."""
    q, k, v, g, beta = (np.asarray(x, np.float64) for x in (q, k, v, g, beta))
    b, t, h, dk = q.shape
    scale = dk**-0.5 if scale is None else scale
    s = np.zeros((b, h, dk, v.shape[-1])) if s0 is None else np.asarray(s0, np.float64).copy()
    out = np.zeros((b, t, h, v.shape[-1]))
    for i in range(t):
        for r in range(b):
            for j in range(h):
                kk, vv = k[r, i, j], v[r, i, j]
                decayed = np.exp(g[r, i, j]) * s[r, j]
                s[r, j] = decayed + beta[r, i, j] * np.outer(kk, vv - kk @ decayed)
                out[r, i, j] = scale * q[r, i, j] @ s[r, j]
    return out, s


def _inputs(rng, b=2, t=11, h=3, dk=4, dv=5, dtype=np.float64):
    q, k = rng.normal(size=(2, b, t, h, dk))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)  # unit keys, as Qwen3-Next's layer makes
    v = rng.normal(size=(b, t, h, dv))
    g = -rng.uniform(0.0, 1.0, (b, t, h))
    beta = rng.uniform(0.0, 1.0, (b, t, h))
    return tuple(jnp.asarray(x, dtype) for x in (q, k, v, g, beta))


@pytest.mark.parametrize("chunk", [1, 4, 6, 16])  # 6: not a power of two
def test_the_chunked_rule_is_the_recurrence_in_float64(chunk: int):
    rng = np.random.default_rng()
    with jax.enable_x64(True):
        xs = _inputs(rng)
        s0 = jnp.asarray(rng.normal(size=(2, 3, 4, 5)))
        want_o, want_s = _reference(*xs, s0=s0)
        o, s = gated_delta_rule(*xs, chunk_size=chunk, initial_state=s0)
        np.testing.assert_allclose(np.asarray(o), want_o, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(s), want_s, rtol=1e-10, atol=1e-10)
        o, s = jax.jit(gated_delta_recurrent)(*xs, initial_state=s0)
        np.testing.assert_allclose(np.asarray(o), want_o, rtol=1e-10, atol=1e-10)


def test_float32_inputs_stay_within_float32_rounding_of_the_float64_recurrence():
    rng = np.random.default_rng()
    xs = _inputs(rng, t=40, dtype=np.float32)
    want_o, want_s = _reference(*xs)
    o, s = gated_delta_rule(*xs, chunk_size=16)
    assert o.dtype == jnp.float32 and s.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(o), want_o, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(s), want_s, rtol=1e-4, atol=1e-4)
    o16, _ = gated_delta_rule(*(x.astype(jnp.bfloat16) for x in xs[:3]), *xs[3:], chunk_size=16)
    assert o16.dtype == jnp.bfloat16  # the output in v's dtype; the state float32
    np.testing.assert_allclose(np.asarray(o16, np.float32), want_o, rtol=5e-2, atol=5e-2)


def test_the_gradients_of_the_chunked_rule_are_the_recurrences():
    rng = np.random.default_rng()
    with jax.enable_x64(True):
        xs = _inputs(rng, t=9)
        s0 = jnp.asarray(rng.normal(size=(2, 3, 4, 5)))
        w = jnp.asarray(rng.normal(size=(2, 9, 3, 5)))
        ws = jnp.asarray(rng.normal(size=(2, 3, 4, 5)))

        # The random weights w and ws are arguments (not constants): the same programs on every
        # run, which the persistent compilation cache then serves.
        def objective(fn):
            def f(*args):
                o, s = fn(*args[:5], initial_state=args[5])
                return jnp.sum(o * args[6]) + jnp.sum(s * args[7])

            return f

        every = tuple(range(6))
        chunked = jax.jit(jax.grad(objective(lambda *a, **kw: _rule(*a, chunk_size=4, **kw)),
                                   argnums=every))(*xs, s0, w, ws)  # fmt: skip
        recurrent = jax.jit(jax.grad(objective(gated_delta_recurrent), argnums=every))(
            *xs, s0, w, ws
        )
        for got, want in zip(chunked, recurrent, strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-10)
        # ... and the recurrence's own gradient is the NumPy reference's (central differences).
        for arg, idx in ((3, (1, 4, 2)), (4, (0, 7, 1)), (2, (1, 2, 0, 3))):
            eps = 1e-6
            hi = [np.asarray(x) for x in (*xs, s0)]
            lo = [x.copy() for x in hi]
            hi[arg] = hi[arg].copy()
            hi[arg][idx] += eps
            lo[arg][idx] -= eps

            def value(a):
                o, s = _reference(*a[:5], s0=a[5])
                return np.sum(o * np.asarray(w)) + np.sum(s * np.asarray(ws))

            fd = (value(hi) - value(lo)) / (2 * eps)
            np.testing.assert_allclose(float(recurrent[arg][idx]), fd, rtol=1e-6, atol=1e-8)


def test_a_prefill_then_one_token_steps_continue_the_whole_sequence():
    rng = np.random.default_rng()
    xs = _inputs(rng, t=12, dtype=np.float32)
    whole, _ = gated_delta_rule(*xs, chunk_size=8)
    out, s = gated_delta_rule(*(x[:, :7] for x in xs), chunk_size=8)  # the prompt
    steps = [out]
    step = jax.jit(gated_delta_step)
    for i in range(7, 12):  # generation: one token at a time from the cached state
        o, s = step(s, *(x[:, i] for x in xs))
        steps.append(o[:, None])
    np.testing.assert_allclose(np.concatenate(steps, axis=1), np.asarray(whole), rtol=1e-5,
                               atol=1e-5)  # fmt: skip


def test_the_chunked_rule_and_its_gradient_lower_to_no_host_library_call():
    """Forward and backward are XLA's own operations: no custom call (a CPU's triangular solve
    is jaxlib's LAPACK ``trsm``, which waits on XLA's thread pool for its batch; 8 CPU devices
    calling it at once deadlocked that pool, which stalled a trainer's sampling)."""
    xs = _inputs(np.random.default_rng(), dtype=np.float32)

    def loss(*args):
        o, s = _rule(*args, chunk_size=4)
        return jnp.sum(o) + jnp.sum(s)

    text = jax.jit(jax.value_and_grad(loss, argnums=tuple(range(5)))).lower(*xs).as_text()
    assert "custom_call" not in text and "lapack" not in text.lower()


def test_bad_shapes_and_chunk_sizes_are_refused():
    rng = np.random.default_rng()
    q, k, v, g, beta = _inputs(rng, dtype=np.float32)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        gated_delta_rule(q, k, v, g, beta, chunk_size=0)
    with pytest.raises(AssertionError):
        gated_delta_rule(q, k[:, :, :2], v, g, beta)
    with pytest.raises(AssertionError):
        gated_delta_rule(q, k, v, g, beta, initial_state=jnp.zeros((2, 3, 5, 4)))


# The Pallas kernels of the sequential part (gated_delta_pallas), in Pallas' interpreter here.
@pytest.mark.parametrize("chunk,dv", [(4, 5), (6, 80)])  # 6: padded to 16; d_v 80: 2 blocks
def test_the_pallas_kernels_forward_is_the_recurrence_in_float64(chunk: int, dv: int):
    rng = np.random.default_rng()
    with jax.enable_x64(True):
        xs = _inputs(rng, t=11, dv=dv)
        s0 = jnp.asarray(rng.normal(size=(2, 3, 4, dv)))
        want_o, want_s = _reference(*xs, s0=s0)
        run = jax.jit(functools.partial(_rule, chunk_size=chunk, implementation="pallas"))
        o, s = run(*xs, initial_state=s0)
        np.testing.assert_allclose(np.asarray(o), want_o, rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(np.asarray(s), want_s, rtol=1e-10, atol=1e-10)


def test_the_pallas_kernels_gradients_are_the_xla_paths_in_float64():
    rng = np.random.default_rng()
    with jax.enable_x64(True):
        xs = _inputs(rng, t=9)
        s0 = jnp.asarray(rng.normal(size=(2, 3, 4, 5)))
        w = jnp.asarray(rng.normal(size=(2, 9, 3, 5)))
        ws = jnp.asarray(rng.normal(size=(2, 3, 4, 5)))

        def grads(impl: str) -> tuple[jax.Array, ...]:
            def f(*args):  # w and ws as arguments: the same program every run, cached
                o, s = _rule(*args[:5], chunk_size=4, initial_state=args[5], implementation=impl)
                return jnp.sum(o * args[6]) + jnp.sum(s * args[7])

            return jax.jit(jax.grad(f, argnums=tuple(range(6))))(*xs, s0, w, ws)

        for got, want in zip(grads("pallas"), grads("xla"), strict=True):
            np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-9, atol=1e-10)


def test_the_pallas_kernels_keep_a_float32_state_for_bfloat16_inputs():
    xs = _inputs(np.random.default_rng(), t=20, dtype=np.float32)
    want_o, want_s = _reference(*xs)
    low = (*(x.astype(jnp.bfloat16) for x in xs[:3]), *xs[3:])
    o, s = jax.jit(functools.partial(_rule, chunk_size=8, implementation="pallas"))(*low)
    assert o.dtype == jnp.bfloat16 and s.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(o, np.float32), want_o, rtol=5e-2, atol=5e-2)
    np.testing.assert_allclose(np.asarray(s), want_s, rtol=5e-2, atol=5e-2)


def test_auto_is_xla_on_every_device_until_a_gpu_measures_the_kernels(monkeypatch, tmp_path):
    # #68: no estimate chooses a kernel. With nothing measured (the conftest's empty table),
    # Hopper and Blackwell included, auto is XLA's scan and says why.
    hopper = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
    for t in (hopper, Target("gpu", "NVIDIA B200", (10, 0)), Target("gpu", "A100", (8, 0))):
        choice = gated_delta_auto(t)
        assert choice.order == ("xla",) and "no tjx measurement" in choice.reason, t
    assert gated_delta_auto(Target("cpu")).kernel == "xla"
    assert gated_delta_implementation("auto", Target("tpu")) == "xla"
    assert gated_delta_implementation("pallas", Target("cpu")) == "pallas"
    # Measured faster on that device kind, for that dtype: the kernels, the scan behind them.
    measured_table(monkeypatch, tmp_path, {"gdelta-bf16": {"pallas": 4.0, "xla": 6.5}})
    choice = gated_delta_auto(hopper)
    assert choice.order == ("pallas", "xla")
    assert choice.reason == (
        "fastest measured on NVIDIA H100 80GB HBM3 for gdelta-bf16: pallas 4 ms, xla 6.5 ms"
    )
    assert gated_delta_implementation("auto", hopper, jnp.float32) == "xla"  # not measured
    assert gated_delta_auto(Target("gpu", "NVIDIA H200", (9, 0))).kernel == "xla"  # another kind
    # Measured slower, or only one side measured: XLA.
    measured_table(monkeypatch, tmp_path, {"gdelta-bf16": {"pallas": 9.0, "xla": 6.5}})
    assert gated_delta_auto(hopper).order == ("xla", "pallas")
    measured_table(monkeypatch, tmp_path, {"gdelta-bf16": {"pallas": 1.0}})
    assert gated_delta_auto(hopper).order == ("xla",)
    q, k, v, g, beta = _inputs(np.random.default_rng(), dtype=np.float32)
    with pytest.raises(ValueError, match="implementation must be one of auto, xla, pallas"):
        _rule(q, k, v, g, beta, implementation="triton")


def test_a_bad_gated_delta_timing_names_its_bucket(monkeypatch, tmp_path):
    measured_table(monkeypatch, tmp_path, {"gdelta-int8": {"pallas": 1.0}})
    with pytest.raises(ValueError, match=r"'gdelta-<bf16\|fp16\|fp32>' \(the gated delta rule\)"):
        gated_delta_auto(Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)))


def test_an_empty_sequence_keeps_the_initial_state_whatever_the_implementation():
    rng = np.random.default_rng()
    q, k, v, g, beta = (x[:, :0] for x in _inputs(rng, dtype=np.float32))
    s0 = jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32)
    for impl in ("xla", "pallas"):
        o, s = _rule(q, k, v, g, beta, initial_state=s0, implementation=impl)
        assert o.shape == (2, 0, 3, 5)
        np.testing.assert_array_equal(np.asarray(s), np.asarray(s0))


def _kernel_calls(fn, *args) -> dict[str, tuple]:
    """name → (grid, operand (dtype, dims), result (dtype, dims)) of every pallas_call in fn's
    jaxpr (what a compiled program's custom call carries)."""
    hlo = {"float32": "f32", "float64": "f64"}

    def shape(aval):
        return hlo[aval.dtype.name], aval.shape

    found = {}

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name == "pallas_call":
                found[eqn.params["name"]] = (
                    eqn.params["grid_mapping"].grid,
                    [shape(v.aval) for v in eqn.invars],
                    [shape(v.aval) for v in eqn.outvars],
                )
            for sub in jax.extend.core.jaxprs_in_params(eqn.params):
                walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def test_the_kernels_prices_are_their_operands_read_once_per_column_block():
    b, t, h, dk, dv, c = 1, 40, 2, 16, 128, 16  # 3 chunks; d_v in 2 blocks of 64
    xs = _inputs(np.random.default_rng(), b=b, t=t, h=h, dk=dk, dv=dv, dtype=np.float32)

    def loss(*args):
        o, s = _rule(*args, chunk_size=c, implementation="pallas")
        return jnp.sum(o) + jnp.sum(s)

    calls = _kernel_calls(jax.grad(loss, argnums=tuple(range(5))), *xs)
    assert set(calls) == set(GATED_DELTA_KERNELS)
    n, rows, blocks = 3, 3 * c, 2
    for name, (grid, ops, res) in calls.items():
        assert tuple(grid) == (blocks, b, h)
        flops, read, written = custom_call_cost(name, grid, ops, res)
        fwd = name == "tjx_gdelta_fwd_h"
        keys_ops, value_ops = (2, 1) if fwd else (3, 2)
        want_read = 4 * b * h * (blocks * (keys_ops * rows * dk + n * dk) + value_ops * rows * dv
                                 + dk * dv)  # fmt: skip
        assert read == want_read
        assert written == 4 * b * h * (n * dk * dv + rows * dv + dk * dv)
        assert flops == {"f32": (4.0 if fwd else 6.0) * b * h * rows * dk * dv}


def test_the_pallas_kernels_run_on_each_devices_batch_rows_and_heads():
    """Under a batch- and head-sharded jit (8 CPU devices, tools/devtest) the kernels partition
    like the flash kernels: the answer is the unsharded XLA path's, and no device holds the
    per-chunk states of all batch rows and heads (they would be gathered without the rule)."""
    assert jax.device_count() == 8, "tools/devtest simulates 8 CPU devices"
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    xs = _inputs(np.random.default_rng(), b=2, t=10, h=4, dtype=np.float32)
    sharding = NamedSharding(mesh, PartitionSpec("data", None, "model"))
    placed = [jax.device_put(x, sharding) for x in xs]

    def loss(impl):
        def f(*args):
            o, s = _rule(*args, chunk_size=4, implementation=impl)
            return jnp.sum(o * o) + jnp.sum(s)

        return jax.value_and_grad(f, argnums=tuple(range(5)))

    compiled = jax.jit(loss("pallas")).lower(*placed).compile()
    got = compiled(*placed)
    want = jax.jit(loss("xla"))(*xs)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    # The per-chunk states [b, h, chunks, d_k', d_v'] = [2, 4, 3, 16, 16]: one row and head per
    # device, nothing gathered.
    hlo = compiled.as_text()
    assert "f32[1,1,3,16,16]" in hlo and "f32[2,4,3,16,16]" not in hlo
    assert "all-gather" not in hlo


def test_the_pallas_kernels_vmap_as_a_longer_batch():
    xs = _inputs(np.random.default_rng(), b=1, t=6, dtype=np.float32)
    stacked = [jnp.stack([x, 2.0 * x if i == 2 else x]) for i, x in enumerate(xs)]  # v doubled
    run = functools.partial(_rule, chunk_size=4, implementation="pallas")
    o, s = jax.jit(jax.vmap(run))(*stacked)
    for i in range(2):
        o_i, s_i = jax.jit(run)(*(x[i] for x in stacked))
        np.testing.assert_allclose(np.asarray(o[i]), np.asarray(o_i), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(s[i]), np.asarray(s_i), rtol=1e-6, atol=1e-6)
