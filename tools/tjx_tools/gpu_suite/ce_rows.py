"""The loss head's row kernel outside interpret mode: correctness against float64, then time.

``model.cross_entropy_impl: pallas_rows`` is the chunked loss head with each chunk's row
statistics and logits gradient in one Pallas kernel (`tjx.kernels.ce_rows`, #68); ``auto`` takes
it only where a GPU measured it faster than XLA's two passes, and no GPU has yet. This section is
that measurement. First the head with the kernel (``pallas_rows``) and XLA's (``xla``) are
checked against the full-logits loss in float64 (jax's autodiff with x64): the loss and the
gradients with respect to the hidden states and the unembedding, by the norm-wise relative
error ``max|a − e| / max|e|`` (`TOLERANCE`: float32 inputs; the products may be TF32 on a GPU),
without and with z-loss (the fused forward's kernel, the z-loss backward's gradient-only one;
a smoke run: without only), with a ragged last chunk and ignored labels. Then, only if the
kernel passed, both are timed at gpt2_small's head as its train step runs it: 16 × 1024
tokens of 768, the tied ``[50304, 768]`` table read as stored (``vocab_major``), bf16 operands
and bf16 stored logits, default chunks (4 of 4,096 tokens): ``jax.grad`` of the loss with
respect to both, the median of jitted calls after a warm-up, each waited for. The times are
``summary["timings"]`` in the launch table's ``ce-bf16`` form; the fold does not write them
(folding them is the lead's call: it would let ``auto`` take the faster). ``--smoke``: tiny
shapes, the kernel interpreted: a harness check.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.kernels import linear_cross_entropy
from tjx_tools.gpu_suite.report import Section, fmt, md_table

#: Norm-wise relative error allowed against float64 (float32 inputs, TF32 products on a GPU).
TOLERANCE = 5e-3
#: The launch-table bucket the timings would become (`tjx.kernels.launch.CE_KEY`).
BUCKET = "ce-bf16"
IMPLS = ("xla", "pallas_rows")


def shapes(smoke: bool) -> dict[str, Any]:
    """The checked shape (batch, seq, d, vocab, chunk: a ragged last chunk) and the timed one."""
    if smoke:
        return {"check": (2, 7, 16, 48, 6), "time": (2, 8, 16, 64), "iters": 2}
    return {"check": (2, 300, 64, 50304, 256), "time": (16, 1024, 768, 50304), "iters": 10}


def _full_loss(h: jax.Array, w: jax.Array, labels: jax.Array, z_loss: float) -> jax.Array:
    """The full-logits mean cross-entropy (plus z-loss) of ``h @ w``, ignored labels -100."""
    logits = h @ w
    lse = jax.nn.logsumexp(logits, axis=-1)
    scored = labels != -100
    pick = jnp.take_along_axis(logits, jnp.where(scored, labels, 0)[..., None], -1)[..., 0]
    terms = jnp.where(scored, lse - pick + z_loss * lse * lse, 0.0)
    return jnp.sum(terms) / jnp.maximum(jnp.sum(scored), 1)


def rel_err(got: Any, want: Any) -> float:
    """``max|got − want| / max|want|`` in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def check(smoke: bool, seed: int) -> list[dict[str, Any]]:
    """Both implementations against float64, without and with z-loss: a row each."""
    b, s, d, v, chunk = shapes(smoke)["check"]
    rng = np.random.default_rng(seed)
    h = rng.standard_normal((b, s, d)).astype(np.float32)
    w = (rng.standard_normal((d, v)) / np.sqrt(d)).astype(np.float32)
    labels = rng.integers(0, v, (b, s)).astype(np.int32)
    labels[rng.random((b, s)) < 0.2] = -100
    rows = []
    for z_loss in (0.0,) if smoke else (0.0, 1e-2):  # a smoke run checks the harness: one
        with jax.enable_x64(True):
            args64 = (jnp.asarray(h, jnp.float64), jnp.asarray(w, jnp.float64))
            grad64 = jax.value_and_grad(_full_loss, argnums=(0, 1))
            want, (dh, dw) = jax.jit(grad64, static_argnums=3)(*args64, labels, z_loss)
            want, dh, dw = float(want), np.asarray(dh), np.asarray(dw)
        for impl in IMPLS:

            def loss(h: jax.Array, w: jax.Array, impl: str = impl, z: float = z_loss) -> Any:
                out = linear_cross_entropy(
                    h, w, jnp.asarray(labels), implementation=impl, chunk_size=chunk, z_loss=z
                )
                return out.loss

            got, (gh, gw) = jax.block_until_ready(
                jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(h, w)
            )
            errs = {"loss": rel_err(got, want), "dh": rel_err(gh, dh), "dw": rel_err(gw, dw)}
            row: dict[str, Any] = {"impl": impl, "z_loss": z_loss, **errs}
            row["shape"] = f"{b} × {s}, d {d}, V {v}, chunk {chunk}"
            row["pass"] = max(errs.values()) <= TOLERANCE
            rows.append(row)
    return rows


def timed(impl: str, smoke: bool) -> dict[str, Any]:
    """Forward+backward ms of gpt2_small's head by ``impl`` (module doc)."""
    b, s, d, v = shapes(smoke)["time"]
    keys = jax.random.split(jax.random.key(11), 3)
    h = jax.random.normal(keys[0], (b, s, d), jnp.bfloat16)
    table = (jax.random.normal(keys[1], (v, d), jnp.float32) * 0.02).astype(jnp.bfloat16)
    labels = jax.random.randint(keys[2], (b, s), 0, v, jnp.int32)

    def loss(h: jax.Array, t: jax.Array) -> Any:
        return linear_cross_entropy(
            h, t, labels, implementation=impl, logits_dtype=jnp.bfloat16, vocab_major=True
        ).loss

    fn = jax.jit(jax.grad(loss, argnums=(0, 1)))
    jax.block_until_ready(fn(h, table))  # compile, warm up
    times = []
    for _ in range(shapes(smoke)["iters"]):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(h, table))
        times.append((time.perf_counter() - t0) * 1e3)
    shape = f"{b} × {s} tokens, d {d}, V {v}, bf16 (logits bf16, vocab-major table)"
    return {"impl": impl, "shape": shape, "fwd_bwd_ms": statistics.median(times)}


def run(sec: Section, smoke: bool, deadline: float) -> None:
    """Correctness, then (the kernel passed, time left) both implementations timed."""
    seed = int(np.random.default_rng().integers(1 << 30))  # fresh inputs each run
    passed = False
    with sec.cell("the loss head's row kernel against float64"):
        rows = check(smoke, seed)
        for row in rows:
            sec.add_row({"kind": "check", **row})
        passed = all(r["pass"] for r in rows)
        if not passed:
            worst = max(max(r["loss"], r["dh"], r["dw"]) for r in rows)
            sec.fail(f"ce rows: error {worst:.2e} against float64 (allowed {TOLERANCE:.0e})")
    times: dict[str, float] = {}
    for impl in IMPLS:
        if impl == "pallas_rows" and not passed:
            sec.notes.append("pallas_rows not timed: it did not pass the correctness check")
            continue
        if time.perf_counter() > deadline:
            sec.notes.append(f"skipped (time budget): {impl} timed")
            continue
        with sec.cell(f"loss head {impl} timed"):
            row = timed(impl, smoke)
            sec.add_row({"kind": "time", **row})
            times[impl] = row["fwd_bwd_ms"]
    sec.summary = {
        "passed": passed,
        "timings": {BUCKET: times} if set(times) == set(IMPLS) else {},
        "rows_over_xla": times["xla"] / times["pallas_rows"] if len(times) == 2 else None,
    }
    sec.markdown = markdown(sec.rows, smoke)


def markdown(rows: list[dict[str, Any]], smoke: bool) -> str:
    """Two tables: the errors, the times."""
    checks = [r for r in rows if r["kind"] == "check"]
    times = [r for r in rows if r["kind"] == "time"]
    head = "Interpreted (CPU smoke: a harness check). " if smoke else "**Measured** on this GPU. "
    parts = [
        head + "The loss head against float64 (float32 inputs), norm-wise relative error "
        f"(allowed {TOLERANCE:.0e}):",
        md_table(
            ["implementation", "z-loss", "shape", "loss", "d hidden", "d unembedding", "pass"],
            [[r["impl"], r["z_loss"], r["shape"], *(fmt(r[n], ".1e") for n in ("loss", "dh",
              "dw")), r["pass"]] for r in checks],
        ),
    ]  # fmt: skip
    if times:
        xla = next((r["fwd_bwd_ms"] for r in times if r["impl"] == "xla"), None)
        parts.append(md_table(
            ["implementation", "shape", "forward + backward ms", "× XLA"],
            [[r["impl"], r["shape"], fmt(r["fwd_bwd_ms"], ".3f"),
              fmt(xla and xla / r["fwd_bwd_ms"], ".2f")] for r in times],
        ))  # fmt: skip
    return "\n\n".join(parts)
