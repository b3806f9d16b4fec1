"""Launch parameters of the flash kernels, timed on this device.

The packaged defaults were chosen without a GPU (the largest tiles that compile without register
spills). Here each candidate is timed at one representative shape (bf16, causal, seq 4096, batch ×
heads filling the GPU): forward candidates on the forward alone, then backward candidates on the
forward+backward with the best forward fixed. The winners are written as a launch table for this
device kind (``launch_table.json``, the format of tjx-kernels' ``launch_tables.json``); the
attention section of the same run uses it, and ``fold`` merges it into the package.

Candidates are tried in order, the packaged default first, until that pass's share of the time
budget is spent (the forward and the backward search each get their own share, so the backward
is not left one candidate), so a short budget still yields a valid (if less tuned) table. Every
timing, the default's included, is inside the search's error handling: a launch that fails to
compile is a row with its error.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from bench_attention import median_ms

from tjx.kernels import AttentionMask, LaunchDefaults, default_launch, flash_attention
from tjx.kernels.launch import entry_key
from tjx_tools.gpu_suite.report import Section, fmt, md_table

LAUNCH_TABLE = "launch_table.json"


def forward_candidates(base: LaunchDefaults, smoke: bool) -> Iterator[LaunchDefaults]:
    """The packaged default, then tiles × warps × stages around it (forward fields only)."""
    yield base
    grid = (
        [(64, 64, 4, 2)] if smoke else itertools.product((128, 64), (64, 128, 32), (8, 4), (3, 2))
    )
    for bq, bk, warps, stages in grid:
        cand = dataclasses.replace(base, block_q=bq, block_k=bk, num_warps=warps, num_stages=stages)
        if cand != base:
            yield cand


def backward_candidates(base: LaunchDefaults, smoke: bool) -> Iterator[LaunchDefaults]:
    """``base`` (the best forward), then backward tiles × warps × stages around it."""
    yield base
    # 128-row query tiles under 8 warps let Triton emit Hopper's wgmma for 16-bit head_dim 128.
    grid = (
        [(32, 32, 4, 1)] if smoke else itertools.product((128, 64, 32), (64, 128), (8, 4), (2, 1))
    )
    for bq, bk, warps, stages in grid:
        cand = dataclasses.replace(
            base, block_q_bwd=bq, block_k_bwd=bk, num_warps_bwd=warps, num_stages_bwd=stages
        )
        if cand != base:
            yield cand


def _inputs(seq: int, d: int, tokens: int, d_model: int, dtype: Any) -> tuple[jax.Array, ...]:
    b, h = max(1, tokens // seq), max(1, d_model // d)
    keys = jax.random.split(jax.random.key(0), 4)
    return tuple(jax.random.normal(k, (b, seq, h, d), dtype) for k in keys)


def tune_one(d: int, smoke: bool, deadline: float, iters: int) -> dict[str, Any]:
    """Best forward, then best backward launch for head_dim ``d`` (bf16, causal); the forward
    search has until the midpoint of the time left, the backward the rest."""
    dtype = jnp.float32 if smoke else jnp.bfloat16
    seq, tokens, d_model = (64, 128, 64) if smoke else (4096, 16384, 2048)
    q, k, v, do = _inputs(seq, d, tokens, d_model, dtype)
    base = default_launch(d, dtype)

    def fwd_ms(launch: LaunchDefaults) -> float:
        fn = jax.jit(
            lambda q, k, v: flash_attention(q, k, v, mask=AttentionMask(causal=True), launch=launch)
        )
        return median_ms(fn, (q, k, v), iters)

    def fwd_bwd_ms(launch: LaunchDefaults) -> float:
        def fb(q: jax.Array, k: jax.Array, v: jax.Array, do: jax.Array) -> Any:
            out, vjp = jax.vjp(
                lambda q, k, v: flash_attention(
                    q, k, v, mask=AttentionMask(causal=True), launch=launch
                ),
                q,
                k,
                v,
            )
            return (out, *vjp(do))

        return median_ms(jax.jit(fb), (q, k, v, do), iters)

    tried: list[dict[str, Any]] = []

    def search(
        cands: Iterator[LaunchDefaults], timer: Callable[[LaunchDefaults], float], until: float
    ) -> Any:
        best: tuple[float, LaunchDefaults] | None = None
        for cand in cands:
            if best is not None and time.perf_counter() > until:
                break
            try:
                ms = timer(cand)
            except Exception as exc:  # a launch that fails to compile (e.g. shared memory)
                tried.append({"launch": dataclasses.asdict(cand), "error": str(exc)[:120]})
                continue
            tried.append({"launch": dataclasses.asdict(cand), "ms": ms, "pass": timer.__name__})
            if best is None or ms < best[0]:
                best = (ms, cand)
        if best is None:
            raise RuntimeError(f"no launch candidate ran for head_dim {d}")
        return best

    start = time.perf_counter()
    # The default comes first in each search: its time is the baseline (None if it failed).
    best_fwd_ms, best_fwd = search(forward_candidates(base, smoke), fwd_ms, (start + deadline) / 2)
    base_fwd = tried[0].get("ms")
    mark = len(tried)
    first = [base] if best_fwd != base else []  # the packaged default's fwd+bwd: the baseline
    bwd = itertools.chain(first, backward_candidates(best_fwd, smoke))
    best_fb_ms, best = search(bwd, fwd_bwd_ms, deadline)
    base_fb = tried[mark].get("ms")
    return {
        "head_dim": d,
        "key": entry_key(dtype, d),
        "default": dataclasses.asdict(base),
        "best": dataclasses.asdict(best),
        "default_fwd_ms": base_fwd,
        "best_fwd_ms": base_fwd if best == base else best_fwd_ms,
        "default_fwd_bwd_ms": base_fb,
        "best_fwd_bwd_ms": best_fb_ms,
        "tried": tried,
    }


def run(sec: Section, out: Path, smoke: bool, budget_s: float, meta: dict[str, Any]) -> Path:
    """Tune head_dim 64 and 128; write ``out/launch_table.json``; return its path."""
    head_dims = (32,) if smoke else (64, 128)
    start = time.perf_counter()
    results = []
    for i, d in enumerate(head_dims):
        share = (budget_s - (time.perf_counter() - start)) / (len(head_dims) - i)
        results.append(tune_one(d, smoke, time.perf_counter() + share, iters=2 if smoke else 10))
    sec.rows = results
    source = f"tjx gpu_suite tune, {meta['date']}, jax {meta['jax']}, causal seq 4096"
    entries = {r["key"]: r["best"] for r in results}
    table = {"schema": 1, "devices": {meta["device_kind"]: {"source": source, "entries": entries}}}
    path = out / LAUNCH_TABLE
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    sec.summary = {"launch_table": table}
    rows = []
    for r in results:
        b = r["best"]
        rows.append(
            [
                r["key"],
                len(r["tried"]),
                f"{b['block_q']}×{b['block_k']} w{b['num_warps']} s{b['num_stages']}",
                f"{b['block_q_bwd']}×{b['block_k_bwd']} w{b['num_warps_bwd']} "
                f"s{b['num_stages_bwd']}",
                fmt(r["default_fwd_ms"] and r["default_fwd_ms"] / r["best_fwd_ms"], ".2f"),
                fmt(
                    r["default_fwd_bwd_ms"] and r["default_fwd_bwd_ms"] / r["best_fwd_bwd_ms"],
                    ".2f",
                ),
            ]
        )
    sec.markdown = md_table(
        ["key", "candidates", "forward", "backward", "fwd × default", "fwd+bwd × default"], rows
    )
    return path
