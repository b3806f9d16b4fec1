"""Attention speed: tjx Pallas flash vs cuDNN vs XLA vs JAX's own Pallas GPU kernels (Triton, and
the Mosaic GPU FA3-style kernel where it imports).

Each cell is measured by the kernels' benchmark (``bench_attention.measure``: median of jitted
forward and forward+backward after a warm-up, TFLOP/s with the FlashAttention FLOP convention, and
the compiled forward+backward's memory), all implementations on the same inputs. Ratios here are
speed-ups against cuDNN (``t_cudnn / t_impl``: above 1 is faster than cuDNN) and against JAX's
Pallas kernel. Cells are measured in order until the section's budget is spent; the rest are listed
as skipped, never guessed.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax.numpy as jnp
from bench_attention import Row, measure

from tjx.kernels.launch import entry_key
from tjx_tools.gpu_suite.report import Section, fmt, md_table

IMPLS = ("pallas", "cudnn", "jax-pallas", "jax-mgpu", "xla")


def grid(smoke: bool) -> list[tuple[int, int, bool]]:
    """(head_dim, seq, causal) cells, the issue's sweep on a GPU."""
    seqs = (48,) if smoke else (1024, 2048, 4096, 8192, 16384)
    dims = (32,) if smoke else (64, 128)
    return [(d, s, causal) for d in dims for s in seqs for causal in (True, False)]


def _ratio(num: float | None, den: float | None) -> float | None:
    return num / den if num and den else None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """Speed-ups of every row against the cuDNN and the jax-pallas row of its cell."""
    by_cell: dict[tuple[int, int, bool], dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_cell.setdefault((r["head_dim"], r["seq"], r["causal"]), {})[r["impl"]] = r
    for cell in by_cell.values():
        cudnn, peer = cell.get("cudnn", {}), cell.get("jax-pallas", {})
        for r in cell.values():
            for base, tag in ((cudnn, "cudnn"), (peer, "jax_pallas")):
                r[f"fwd_x_{tag}"] = _ratio(base.get("fwd_ms"), r.get("fwd_ms"))
                r[f"fwd_bwd_x_{tag}"] = _ratio(base.get("fwd_bwd_ms"), r.get("fwd_bwd_ms"))


def timings(
    rows: list[dict[str, Any]], correct: set[tuple[str, int]], dtype: Any
) -> dict[str, Any]:
    """Launch-table ``timings`` (bucket key → kernel → ms): per head_dim, each tjx kernel's
    forward+backward time summed over the causal cells every kernel measured, for kernels the
    kernels section found correct (``correct``: (impl, head_dim)) — what "auto" ranks by."""
    out: dict[str, Any] = {}
    kernels = ("pallas", "cudnn", "xla")
    for d in sorted({r["head_dim"] for r in rows}):
        cells: dict[int, dict[str, float]] = {}
        for r in rows:
            if r["head_dim"] == d and r["causal"] and r["impl"] in kernels and r.get("fwd_bwd_ms"):
                cells.setdefault(r["seq"], {})[r["impl"]] = r["fwd_bwd_ms"]
        ok = [k for k in kernels if (k, d) in correct]
        shared = [c for c in cells.values() if all(k in c for k in ok)]
        if ok and shared:
            out[entry_key(dtype, d)] = {k: sum(c[k] for c in shared) for k in ok}
    return out


def run(
    sec: Section, smoke: bool, deadline: float, correct: set[tuple[str, int]] | None = None
) -> None:
    """Measure the grid (bf16 on a GPU, float32 interpreted in a smoke run)."""
    dtype = jnp.float32 if smoke else jnp.bfloat16
    tokens, d_model, iters = (64, 64, 1) if smoke else (16384, 2048, 10)
    skipped = 0
    for d, s, causal in grid(smoke):
        b, h = max(1, tokens // s), max(1, d_model // d)
        for impl in IMPLS:
            if time.perf_counter() > deadline:
                skipped += 1
                continue
            row: Row = measure(impl, b, h, s, d, causal, dtype, iters, on_gpu=not smoke)
            sec.add_row(dataclasses.asdict(row))  # saved at once: a later crash keeps it
    rows = sec.rows
    add_ratios(rows)
    if skipped:
        sec.notes.append(f"{skipped} cells skipped: the time budget was spent")
    table = [
        [
            r["seq"],
            r["head_dim"],
            "y" if r["causal"] else "n",
            r["impl"],
            fmt(r["fwd_tflops"], ".3g"),
            fmt(r["fwd_bwd_tflops"], ".3g"),
            fmt(r["fwd_x_cudnn"], ".2f"),
            fmt(r["fwd_bwd_x_cudnn"], ".2f"),
            fmt(r["fwd_bwd_x_jax_pallas"], ".2f"),
            fmt(r["peak_mib"], ".0f"),
            r["error"],
        ]
        for r in rows
    ]
    sec.markdown = (
        f"{'float32 (interpreted)' if smoke else 'bf16'}, batch × seq = {tokens} tokens, "
        f"heads × head_dim = {d_model}; × = speed-up (above 1 is faster).\n\n"
        + md_table(
            [
                "seq",
                "d",
                "causal",
                "impl",
                "fwd TFLOP/s",
                "fwd+bwd TFLOP/s",
                "fwd × cuDNN",
                "fwd+bwd × cuDNN",
                "fwd+bwd × JAX Pallas",
                "peak MiB",
                "error",
            ],
            table,
        )
    )
    pallas = [r for r in rows if r["impl"] == "pallas" and r["seq"] >= 2048]
    sec.summary = {
        "pallas_fwd_bwd_x_cudnn_min_seq2k": min(
            (r["fwd_bwd_x_cudnn"] for r in pallas if r["fwd_bwd_x_cudnn"]), default=None
        ),
        "pallas_fwd_bwd_x_jax_pallas_min_seq2k": min(
            (r["fwd_bwd_x_jax_pallas"] for r in pallas if r["fwd_bwd_x_jax_pallas"]),
            default=None,
        ),
        "skipped": skipped,
        "timings": timings(rows, correct or set(), dtype),
    }
