"""The gated delta rule's Pallas kernels outside interpret mode: correctness against XLA, then time.

``auto`` takes tjx-kernels' Pallas kernels for the gated delta rule only where a GPU measured
them faster than XLA's scan (#68, `tjx.kernels.gated_delta_auto`); this section is that
measurement. First the kernels are checked against the scan (the same chunked form, only the
walk across chunks differs) in float32, XLA's products at ``HIGHEST`` precision (no TF32; the
kernels' own products are Triton's, which may be TF32: the tolerance is TF32's): the outputs,
the final state and the gradients of a random projection of both with respect to ``q, k, v, g,
beta``, each by the norm-wise relative error ``max|a − e| / max|e|`` (`TOLERANCE`), and both
against the token-by-token recurrence (`gated_delta_recurrent`, the reference). Then, only if
they passed, both implementations are timed at one Qwen3-Next-80B-A3B layer's shape (the shape
``tools/bench_gated_delta.py`` estimated: 2 × 4,096 tokens, 16 key heads repeated to 32 value
heads of 128, chunk 64, bf16 ``q, k, v``, float32 decays and strengths): the forward, and the
forward and backward (``jax.grad`` of the output's sum), each the median of jitted calls after a
warm-up, each waited for. The forward+backward times are the launch table's ``gdelta-bf16``
``timings`` the fold writes (``summary["timings"]``); a kernel that failed gets none.
``--smoke``: tiny shapes, interpreted kernels: a check of the harness.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.kernels import gated_delta_recurrent, gated_delta_rule
from tjx_tools.gpu_suite.report import Section, fmt, md_table

#: Norm-wise relative error allowed between the kernels and the scan (float32): TF32's, as the
#: kernels section's float32 rule (`kernels.TOLERANCE`): Triton may take the kernels' float32
#: products as TF32 whatever XLA's matmul precision says.
TOLERANCE = 5e-3
#: ... and between the kernels and the token-by-token recurrence (another summation order).
REFERENCE_TOLERANCE = 5e-3
#: The launch-table bucket the timings become (`tjx.kernels.launch.GDELTA_KEY`).
BUCKET = "gdelta-bf16"


def shapes(smoke: bool) -> dict[str, Any]:
    """The correctness shape (a ragged last chunk) and the timed one, and the chunk size."""
    if smoke:
        return {"check": (1, 20, 2, 8, 8), "chunk": 8, "time": (1, 24, 2, 2, 8, 8), "iters": 2}
    # Timed: (batch, seq, key heads, value heads, d_k, d_v), Qwen3-Next-80B-A3B's linear layer.
    return {"check": (2, 200, 4, 64, 64), "chunk": 64, "time": (2, 4096, 16, 32, 128, 128),
            "iters": 10}  # fmt: skip


def _inputs(key: jax.Array, b: int, t: int, h: int, dk: int, dv: int, dtype: Any) -> tuple:
    """q, k (unit rows, as the layer normalises them), v in ``dtype``; log-decays g ≤ 0 and
    strengths β in (0, 1), float32."""
    ks = jax.random.split(key, 5)
    q, k = (jax.random.normal(x, (b, t, h, dk), jnp.float32) for x in ks[:2])
    q, k = (x / jnp.linalg.norm(x, axis=-1, keepdims=True) for x in (q, k))
    v = jax.random.normal(ks[2], (b, t, h, dv), jnp.float32)
    g = -jax.nn.softplus(jax.random.normal(ks[3], (b, t, h), jnp.float32))
    beta = jax.nn.sigmoid(jax.random.normal(ks[4], (b, t, h), jnp.float32))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype), g, beta


def rel_err(got: Any, want: Any) -> float:
    """``max|got − want| / max|want|`` in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def check(smoke: bool, seed: int) -> dict[str, Any]:
    """The kernels against the scan and both against the recurrence (module doc): one row."""
    b, t, h, dk, dv = shapes(smoke)["check"]
    chunk = shapes(smoke)["chunk"]
    xs = _inputs(jax.random.key(seed), b, t, h, dk, dv, jnp.float32)
    proj = jax.random.normal(jax.random.key(seed + 1), (b, t, h, dv), jnp.float32)
    proj_s = jax.random.normal(jax.random.key(seed + 2), (b, h, dk, dv), jnp.float32)

    def results(impl: str) -> tuple[Any, Any, tuple[Any, ...]]:
        def loss(*a: jax.Array) -> jax.Array:
            o, s = gated_delta_rule(*a, chunk_size=chunk, implementation=impl)
            return jnp.sum(o * proj) + jnp.sum(s * proj_s)

        def run(*a: jax.Array) -> tuple[Any, Any, tuple[Any, ...]]:
            o, s = gated_delta_rule(*a, chunk_size=chunk, implementation=impl)
            return o, s, jax.grad(loss, argnums=tuple(range(5)))(*a)

        with jax.default_matmul_precision("highest"):
            return jax.block_until_ready(jax.jit(run)(*xs))

    row: dict[str, Any] = {"shape": f"{b} × {t}, {h} heads, d_k {dk}, d_v {dv}, chunk {chunk}",
                           "dtype": "float32"}  # fmt: skip
    scan = results("xla")
    with jax.default_matmul_precision("highest"):
        ref_o, ref_s = jax.jit(gated_delta_recurrent)(*xs)
    row["xla_vs_recurrence"] = max(rel_err(scan[0], ref_o), rel_err(scan[1], ref_s))
    kern = results("pallas")
    row["out"] = rel_err(kern[0], scan[0])
    row["state"] = rel_err(kern[1], scan[1])
    names = ("dq", "dk", "dv", "dg", "dbeta")
    row.update({n: rel_err(a, e) for n, a, e in zip(names, kern[2], scan[2], strict=True)})
    row["pallas_vs_recurrence"] = max(rel_err(kern[0], ref_o), rel_err(kern[1], ref_s))
    worst = max(row[n] for n in ("out", "state", *names))
    row["pass"] = worst <= TOLERANCE and row["pallas_vs_recurrence"] <= REFERENCE_TOLERANCE
    row["worst"] = worst
    return row


def median_ms(fn: Callable[..., Any], args: tuple, iters: int) -> float:
    """Median wall ms of ``fn(*args)``, each call waited for, after one warm-up (compile)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def timed(impl: str, smoke: bool) -> dict[str, Any]:
    """Forward, and forward+backward, ms of ``impl`` at the timed shape (module doc)."""
    b, t, hk, hv, dk, dv = shapes(smoke)["time"]
    chunk, iters = shapes(smoke)["chunk"], shapes(smoke)["iters"]
    q, k, _, _, _ = _inputs(jax.random.key(7), b, t, hk, dk, dv, jnp.bfloat16)
    _, _, v, g, beta = _inputs(jax.random.key(8), b, t, hv, dk, dv, jnp.bfloat16)

    def rule(q: jax.Array, k: jax.Array, v: jax.Array, g: jax.Array, beta: jax.Array) -> Any:
        reps = hv // hk  # the key heads repeated to the value heads, as the layer does
        q, k = jnp.repeat(q, reps, axis=2), jnp.repeat(k, reps, axis=2)
        return gated_delta_rule(q, k, v, g, beta, chunk_size=chunk, implementation=impl)[0]

    def loss(*a: jax.Array) -> jax.Array:
        return jnp.sum(rule(*a).astype(jnp.float32))

    args = (q, k, v, g, beta)
    fwd = median_ms(jax.jit(rule), args, iters)
    both = median_ms(jax.jit(jax.grad(loss, argnums=tuple(range(5)))), args, iters)
    return {"impl": impl, "shape": f"{b} × {t}, {hk}→{hv} heads of {dk}, chunk {chunk}, bf16",
            "fwd_ms": fwd, "fwd_bwd_ms": both}  # fmt: skip


def run(sec: Section, smoke: bool, deadline: float) -> None:
    """Correctness, then (kernels passed, time left) both implementations timed."""
    seed = int(np.random.default_rng().integers(1 << 30))  # fresh inputs each run
    checked: dict[str, Any] | None = None
    with sec.cell("gated delta kernels against the scan"):
        checked = check(smoke, seed)
        sec.add_row({"kind": "check", **checked})
        if not checked["pass"]:
            sec.fail(
                f"gated delta kernels: error {checked['worst']:.2e} against the scan "
                f"(allowed {TOLERANCE:.0e}), {checked['pallas_vs_recurrence']:.2e} against the "
                f"recurrence (allowed {REFERENCE_TOLERANCE:.0e})"
            )
    times: dict[str, float] = {}
    for impl in ("xla", "pallas"):
        if impl == "pallas" and not (checked and checked["pass"]):
            sec.notes.append("pallas not timed: it did not pass the correctness check")
            continue
        if time.perf_counter() > deadline:
            sec.notes.append(f"skipped (time budget): {impl} timed")
            continue
        with sec.cell(f"gated delta {impl} timed"):
            row = timed(impl, smoke)
            sec.add_row({"kind": "time", **row})
            times[impl] = row["fwd_bwd_ms"]
    sec.summary = {
        "check": checked,
        "timings": {BUCKET: times} if set(times) == {"xla", "pallas"} else {},
        "pallas_over_xla": times["xla"] / times["pallas"] if len(times) == 2 else None,
    }
    sec.markdown = markdown(sec.rows, smoke)


def markdown(rows: list[dict[str, Any]], smoke: bool) -> str:
    """Two tables: the errors, the times."""
    checks = [r for r in rows if r["kind"] == "check"]
    times = [r for r in rows if r["kind"] == "time"]
    parts = [
        ("Interpreted (CPU smoke: a harness check). " if smoke else "**Measured**, compiled "
         "(Triton) on this GPU. ") + "The kernels against XLA's scan, float32 (XLA at HIGHEST "
        f"precision), norm-wise relative error (allowed {TOLERANCE:.0e}; against the recurrence "
        f"{REFERENCE_TOLERANCE:.0e}):"
    ]  # fmt: skip
    parts.append(md_table(
        ["shape", "out", "state", "dq", "dk", "dv", "dg", "dβ", "pallas vs recurrence",
         "xla vs recurrence", "pass"],
        [[r["shape"], *(fmt(r[n], ".1e") for n in ("out", "state", "dq", "dk", "dv", "dg",
          "dbeta", "pallas_vs_recurrence", "xla_vs_recurrence")), r["pass"]] for r in checks],
    ))  # fmt: skip
    if times:
        by = {r["impl"]: r for r in times}
        xla = by.get("xla", {}).get("fwd_bwd_ms")
        parts.append(md_table(
            ["implementation", "shape", "forward ms", "forward + backward ms", "× XLA (fwd+bwd)"],
            [[r["impl"], r["shape"], fmt(r["fwd_ms"], ".3f"), fmt(r["fwd_bwd_ms"], ".3f"),
              fmt(xla and xla / r["fwd_bwd_ms"], ".2f")] for r in times],
        ))  # fmt: skip
    return "\n\n".join(parts)
