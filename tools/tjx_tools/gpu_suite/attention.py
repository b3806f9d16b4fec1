"""Attention speed: tjx Pallas flash vs cuDNN vs XLA vs JAX's own Pallas GPU kernels (Triton, and
the Mosaic GPU FA3-style kernel where it imports).

Each cell is measured by the kernels' benchmark (``bench_attention.measure``: median of jitted
forward and forward+backward after a warm-up, TFLOP/s with the FlashAttention FLOP convention, and
the compiled forward+backward's memory), all implementations on the same inputs. Ratios here are
speed-ups against cuDNN (``t_cudnn / t_impl``: above 1 is faster than cuDNN) and against JAX's
Pallas kernel. Cells are measured in order until the section's budget is spent; the rest are listed
as skipped, never guessed.

JAX's Mosaic GPU kernel is timed on float16 copies of the inputs: in jax 0.10–0.11 its shared-memory
tiles are declared float16 whatever the input dtype, so bf16 inputs fail to lower ("Expected dtypes
to match but src had type bfloat16 and dst had type float16", the H100 run of 2026-11-25). Tensor
cores run f16 and bf16 at the same rate, so its row is comparable; its ``dtype`` says float16.

The launch table's ``timings`` (what ``auto`` ranks by) are keyed by dtype and head_dim only, with
no sequence axis, so they are taken at one sequence length: `TIMING_SEQ`, the length every
head_dim-64 preset trains at (gpt2_small/medium/large, llama_small, mixtral_small), where the
choice matters most. Longer sequences can rank the other way (Pallas 1.13× cuDNN at 1,024 but
0.70–0.94× from 2,048 on, H100, head_dim 64): a sequence axis in the bucket key is tjx-kernels' to
add.
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
#: The sequence length whose fwd+bwd times become the launch table's ``timings`` (module doc).
TIMING_SEQ = 1024
#: The dtype JAX's Mosaic GPU attention is timed in (module doc): its tiles are float16.
MGPU_DTYPE = jnp.float16


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
    """Launch-table ``timings`` (bucket key → kernel → ms): per head_dim, each tjx kernel's causal
    forward+backward time at `TIMING_SEQ` (else, where that cell is missing, summed over the causal
    cells every kernel measured), for kernels the kernels section found correct (``correct``:
    (impl, head_dim)) — what "auto" ranks by."""
    out: dict[str, Any] = {}
    kernels = ("pallas", "cudnn", "xla")
    for d in sorted({r["head_dim"] for r in rows}):
        cells: dict[int, dict[str, float]] = {}
        for r in rows:
            if r["head_dim"] == d and r["causal"] and r["impl"] in kernels and r.get("fwd_bwd_ms"):
                cells.setdefault(r["seq"], {})[r["impl"]] = r["fwd_bwd_ms"]
        ok = [k for k in kernels if (k, d) in correct]
        if ok and all(k in cells.get(TIMING_SEQ, {}) for k in ok):
            out[entry_key(dtype, d)] = {k: cells[TIMING_SEQ][k] for k in ok}
            continue
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
            # JAX's Mosaic GPU kernel only lowers for float16 inputs (module doc).
            cell_dtype = MGPU_DTYPE if impl == "jax-mgpu" else dtype
            row: Row = measure(impl, b, h, s, d, causal, cell_dtype, iters, on_gpu=not smoke)
            sec.add_row({**dataclasses.asdict(row), "dtype": jnp.dtype(cell_dtype).name})
    rows = sec.rows
    add_ratios(rows)
    if skipped:
        sec.notes.append(f"{skipped} cells skipped: the time budget was spent")
    if any(r["impl"] == "jax-mgpu" for r in rows):
        sec.notes.append(
            "jax-mgpu is timed in float16: JAX's Mosaic GPU attention declares its tiles float16 "
            "(jax 0.10-0.11), so bf16 inputs do not lower; f16 and bf16 run at one tensor-core rate"
        )
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
