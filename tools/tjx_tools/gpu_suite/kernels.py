"""Kernel correctness on the device: flash, cuDNN and XLA attention against a float64 reference.

Every case runs the forward and the backward (``vjp`` with a random cotangent) of each
implementation through ``tjx.kernels.attention`` (the path the models use) and compares the output
and the three gradients with the NumPy float64 reference of tjx-kernels' tests, by the norm-wise
relative error ``max|a − e| / max|e|``.

Pass rule: the error is within the dtype's tolerance, or within twice the XLA path's own error in
the same dtype (XLA on the same inputs is the yardstick of what that precision allows: fp32 matmuls
on NVIDIA GPUs run as TF32 by default, and so do tjx's fp32 Pallas products: the fp32 tolerance is
TF32's). A failure fails the suite loudly; a kernel that
raises (fails to lower or compile) is a failed row, and the other cells still run; rows are saved
as each case ends.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.kernels import AttentionMask, attention
from tjx_kernels_tests._ref import np_attention, np_mask, rel_err
from tjx_tools.gpu_suite.report import Section, md_table

#: Norm-wise relative error allowed per input dtype (fp32 allows TF32 matmuls: 10 mantissa bits).
TOLERANCE = {"float32": 5e-3, "bfloat16": 3e-2}
IMPLS = ("pallas", "cudnn", "xla")


@dataclass(frozen=True)
class Case:
    """One attention problem: shape, masking and head grouping."""

    name: str
    seq: int
    heads: int
    kv_heads: int
    causal: bool
    segments: bool = False


def cases(smoke: bool) -> list[Case]:
    """The cases of the issue: causal and not, GQA 8:2, MQA, segment ids, ragged lengths."""
    s, ragged = (40, 37) if smoke else (1024, 1000)
    return [
        Case("mha", s, 8, 8, causal=False),
        Case("mha causal", s, 8, 8, causal=True),
        Case("gqa 8:2 causal", s, 8, 2, causal=True),
        Case("mqa 8:1 causal", s, 8, 1, causal=True),
        Case("segment ids causal", s, 8, 2, causal=True, segments=True),
        Case(f"ragged {ragged} causal", ragged, 8, 2, causal=True),
    ]


def _segments(rng: np.random.Generator, batch: int, seq: int) -> np.ndarray:
    """Packed documents of random lengths, ids 1.., with a padded (id 0) tail in row 0."""
    ids = np.zeros((batch, seq), np.int32)
    for b in range(batch):
        pos, doc = 0, 1
        end = seq - seq // 8 if b == 0 else seq
        while pos < end:
            n = int(rng.integers(1, max(2, seq // 3)))
            ids[b, pos : min(end, pos + n)] = doc
            pos, doc = pos + n, doc + 1
    return ids


def check_case(case: Case, dtype: str, head_dim: int, seed: int) -> list[dict[str, Any]]:
    """Errors of every implementation on one case (a row per implementation)."""
    rng = np.random.default_rng(seed)
    b = 2
    shapes = {
        "q": (b, case.seq, case.heads, head_dim),
        "k": (b, case.seq, case.kv_heads, head_dim),
        "v": (b, case.seq, case.kv_heads, head_dim),
        "do": (b, case.seq, case.heads, head_dim),
    }
    host = {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}
    ids = _segments(rng, b, case.seq) if case.segments else None
    mask = np_mask(b, case.seq, case.seq, causal=case.causal, q_ids=ids, kv_ids=ids)
    dev = {n: jnp.asarray(x, dtype) for n, x in host.items()}
    # The reference sees the inputs as the kernel does: rounded to the dtype first.
    q64, k64, v64, do64 = (np.asarray(dev[n], np.float64) for n in ("q", "k", "v", "do"))
    expected = np_attention(q64, k64, v64, mask, d_out=do64)
    seg = None if ids is None else jnp.asarray(ids)
    rows = []
    for impl in IMPLS:
        row: dict[str, Any] = {"case": case.name, "dtype": dtype, "head_dim": head_dim}
        row["impl"] = impl

        def fn(q: jax.Array, k: jax.Array, v: jax.Array, impl: str = impl) -> jax.Array:
            mask = AttentionMask(causal=case.causal, segment_ids=seg)
            return attention(q, k, v, mask, implementation=impl)  # type: ignore[arg-type]

        try:

            @jax.jit
            def fwd_bwd(q: jax.Array, k: jax.Array, v: jax.Array, do: jax.Array) -> Any:
                out, vjp = jax.vjp(fn, q, k, v)
                return (out, *vjp(do))

            got = fwd_bwd(dev["q"], dev["k"], dev["v"], dev["do"])
            for name, a, e in zip(("out", "dq", "dk", "dv"), got, expected, strict=True):
                row[name] = rel_err(np.asarray(a, np.float64), e)
        except ValueError as err:  # the implementation does not serve this call (said why)
            row["unsupported"] = str(err).splitlines()[0][:100]
        except Exception as err:  # - fails to lower/compile/run: a failed row, not a crash
            row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0][:100]}"
        rows.append(row)
    return rows


def judge(rows: list[dict[str, Any]]) -> list[str]:
    """Mark each measured row pass/fail; return the failures' descriptions."""
    xla = {(r["case"], r["dtype"], r["head_dim"]): r for r in rows if r["impl"] == "xla"}
    failures = []
    for r in rows:
        if "unsupported" in r:
            continue
        if "error" in r:
            r["pass"] = False
            failures.append(f"{r['impl']} {r['case']} {r['dtype']} d{r['head_dim']}: {r['error']}")
            continue
        base = xla.get((r["case"], r["dtype"], r["head_dim"]), {})
        worst = max(r[n] for n in ("out", "dq", "dk", "dv"))
        yardstick = max(base.get(n, 0.0) for n in ("out", "dq", "dk", "dv"))
        allowed = max(TOLERANCE[r["dtype"]], 2 * yardstick)
        r["allowed"], r["pass"] = allowed, bool(worst <= allowed)
        if not r["pass"]:
            failures.append(
                f"{r['impl']} {r['case']} {r['dtype']} d{r['head_dim']}: error {worst:.2e} > "
                f"allowed {allowed:.2e}"
            )
    return failures


def correct_kernels(rows: list[dict[str, Any]]) -> set[tuple[str, int]]:
    """(impl, head_dim) of the kernels every judged case found correct (one failure excludes)."""
    wrong = {(r["impl"], r["head_dim"]) for r in rows if r.get("pass") is False}
    return {(r["impl"], r["head_dim"]) for r in rows if r.get("pass")} - wrong


def run(sec: Section, smoke: bool, deadline: float = float("inf")) -> None:
    """Every case × dtype × head_dim × implementation until ``deadline`` (perf_counter); fails
    the section on any mismatch or kernel error."""
    head_dims = (32,) if smoke else (64, 128)
    dtypes = ("float32",) if smoke else ("bfloat16", "float32")
    seed, skipped = 0, 0
    for dtype in dtypes:
        for d in head_dims:
            for case in cases(smoke):
                seed += 1
                if time.perf_counter() > deadline:
                    skipped += 1
                    continue
                for row in check_case(case, dtype, d, seed):
                    sec.add_row(row)  # saved at once: a later crash keeps it
    if skipped:
        sec.notes.append(f"{skipped} cases skipped: the time budget was spent")
    rows = sec.rows
    for why in judge(rows):
        sec.fail(why)
    table = []
    for r in rows:
        bad = "unsupported" in r or "error" in r
        errs = [None if bad else f"{r[n]:.1e}" for n in ("out", "dq", "dk", "dv")]
        if "unsupported" in r:
            verdict = "n/a: " + r["unsupported"]
        elif "error" in r:
            verdict = "**FAIL**: " + r["error"]
        else:
            verdict = "ok" if r["pass"] else "**FAIL**"
        table.append([r["case"], r["dtype"], r["head_dim"], r["impl"], *errs, verdict])
    sec.markdown = (
        "Norm-wise relative error `max|a−e|/max|e|` against float64; pass = within "
        f"{TOLERANCE} or 2× XLA's own error in the same dtype (fp32 products are TF32 on a GPU)."
        "\n\n" + md_table(["case", "dtype", "d", "impl", "out", "dq", "dk", "dv", "verdict"], table)
    )
    measured = [r for r in rows if "pass" in r]
    sec.summary = {"checked": len(measured), "failed": sum(not r["pass"] for r in measured)}
