"""Attention alone at the issue's two shapes: tjx's kernels beside PyTorch's SDPA, and the program
jax builds around its cuDNN attention (#68: why jax's cuDNN is slower than PyTorch's).

Cells: sequence 1,024 with head_dim 64 (gpt2_small's and llama_small's attention) and 4,096 with
128, causal, bf16, 16,384 tokens and 2,048 of width a call (batch × heads as the attention
section's grid). tjx's side is the attention section's measurement (``bench_attention.measure``:
``tjx.kernels``' Pallas flash kernel, jax's cuDNN attention (``jax.nn.dot_product_attention``)
and XLA, forward and forward+backward, median of jitted calls each waited for). PyTorch's side is
``tools/tjx_tools/torch_peers/torch_attention.py`` in a child process (SDPA's flash and cuDNN
backends, CUDA events), in the layout tjx's models hold (``[b, s, h, d]`` seen as ``[b, h, s,
d]``) and in SDPA's own contiguous ``[b, h, s, d]``; it also reports PyTorch's cuDNN (the
version it bundles), CUDA and the nvidia wheels. Ratios are against PyTorch's cuDNN in tjx's
layout (``× torch cuDNN``: above 1 is faster than it).

The diagnosis data: jax's cuDNN forward+backward is compiled once more and its optimized HLO
saved (``attention_hlo/<impl>_s<seq>_d<d>.hlo.txt`` in the --out folder: a few hundred KB), and
summarised here: each ``__cudnn$fmha*`` custom call with its operands' shapes and layouts (the
``{3,1,2,0}``-style minor-to-major orders cuDNN was given) and its ``backend_config`` (the graph
jax asked cuDNN for), and the kernels around them (transposes, copies, fusions: what jax adds for
layouts that PyTorch's call does not). With the versions (jax's cuDNN in the environment section,
PyTorch's here) that is what the comparison needs. In a smoke run (no cuDNN) XLA's program is
summarised instead, so the code path is checked.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import tokamax_gpu
from bench_attention import Row, make_impl, measure

from tjx_tools.gpu_suite import train_step
from tjx_tools.gpu_suite.report import Section, fmt, md_table

TORCH_ATTENTION = Path(__file__).resolve().parents[1] / "torch_peers" / "torch_attention.py"
IMPLS = ("pallas", "cudnn", "xla")
HLO_DIR = "attention_hlo"
_CUSTOM = re.compile(r'custom_call_target="(__cudnn\$[^"]+)"')
_DEF = re.compile(r"^\s*(?:ROOT\s+)?%([\w.\-]+) = (\S+\[[^\]]*\](?:\{[^}]*\})?)", re.M)
_OP = re.compile(r"^\s*(?:ROOT\s+)?%[\w.\-]+ = .*? ([a-z][\w\-]*)\(", re.M)


def cells(smoke: bool) -> list[tuple[int, int, int, int]]:
    """(batch, heads, seq, head_dim) of each cell (module doc)."""
    if smoke:
        return [(2, 2, 48, 32), (1, 2, 64, 16)]
    tokens, width = 16384, 2048
    return [(tokens // s, width // d, s, d) for s, d in ((1024, 64), (4096, 128))]


def describe_program(text: str) -> dict[str, Any]:
    """What an optimized attention program holds: its cuDNN custom calls (target, result,
    operands with layouts, backend_config), and a count of its top-level operations by kind."""
    types = dict(_DEF.findall(text))
    calls = []
    for line in text.splitlines():
        found = _CUSTOM.search(line)
        if found is None:
            continue
        head = re.match(r"\s*(?:ROOT\s+)?%[\w.\-]+ = (.*?) custom-call\(([^)]*)\)", line)
        operands = re.findall(r"%([\w.\-]+)", head.group(2)) if head else []
        config = line.split("backend_config=", 1)[1] if "backend_config=" in line else ""
        calls.append({
            "target": found.group(1),
            "result": head.group(1) if head else None,
            "operands": [types.get(o, o) for o in operands],
            "backend_config": config[:1500],
        })  # fmt: skip
    entry = text.split("ENTRY", 1)[1] if "ENTRY" in text else text
    ops = Counter(
        op
        for op in _OP.findall(entry)
        if op not in ("parameter", "constant", "tuple", "get-tuple-element", "bitcast")
    )
    return {"custom_calls": calls, "entry_ops": dict(ops.most_common())}


def dump_program(impl: str, b: int, h: int, s: int, d: int, out: Path, on_gpu: bool) -> dict:
    """``impl``'s causal forward+backward compiled for these shapes; its HLO written under
    ``out/HLO_DIR``; `describe_program` of it."""
    attn = make_impl(impl, True, on_gpu)
    dtype = jnp.bfloat16 if on_gpu else jnp.float32
    x = jax.ShapeDtypeStruct((b, s, h, d), dtype)

    def fwd_bwd(q: jax.Array, k: jax.Array, v: jax.Array, do: jax.Array) -> tuple:
        o, vjp = jax.vjp(attn, q, k, v)
        return (o, *vjp(do))

    text = jax.jit(fwd_bwd).lower(x, x, x, x).compile().as_text() or ""
    folder = out / HLO_DIR
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{impl}_s{s}_d{d}.hlo.txt"
    path.write_text(text, encoding="utf-8")
    return {"impl": impl, "seq": s, "head_dim": d, "file": f"{HLO_DIR}/{path.name}",
            **describe_program(text)}  # fmt: skip


def run(sec: Section, smoke: bool, deadline: float, out: Path) -> None:
    """tjx's cells, the HLO of jax's cuDNN program, then PyTorch's cells (module doc)."""
    dtype = jnp.float32 if smoke else jnp.bfloat16
    iters = 1 if smoke else 10
    rows: list[dict[str, Any]] = []
    programs: list[dict[str, Any]] = []
    sec.summary = {"programs": programs, "torch_versions": None}

    def save() -> None:
        sec.rows = rows
        sec.markdown = markdown(rows, programs, sec.summary.get("torch_versions"), smoke)
        if sec.saver is not None:
            sec.saver()

    for b, h, s, d in cells(smoke):
        if smoke:  # a harness check: tjx's kernels interpreted, no tokamax (sm90/sm100 only)
            for impl in IMPLS:
                got: Row = measure(impl, b, h, s, d, True, dtype, iters, on_gpu=False)
                rows.append({"side": "jax", **dataclasses.asdict(got), "layout": "bshd"})
                save()
            continue
        if time.perf_counter() > deadline:
            sec.notes.append(f"skipped (time budget): tjx's kernels and tokamax at s{s} d{d}")
            continue
        with sec.cell(f"tjx's kernels and tokamax s{s} d{d}"):
            rows.extend(kernel_rows(b, h, s, d, iters))
            save()
    # What `auto` may rank by (the fold writes them into the launch table): each kernel's
    # causal fwd+bwd at these cells where this call found its output correct against the
    # float32 reference (`tokamax_gpu.measure_cells`).
    sec.summary["timings"] = tokamax_gpu.launch_timings([r for r in rows if r["side"] == "jax"])
    dumped = "xla" if smoke else "cudnn"  # no cuDNN on a CPU: the code path, on XLA's program
    for b, h, s, d in cells(smoke):
        if time.perf_counter() > deadline:
            sec.notes.append(f"skipped (time budget): the {dumped} program s{s} d{d}")
            continue
        with sec.cell(f"{dumped} program s{s} d{d}"):
            programs.append(dump_program(dumped, b, h, s, d, out, not smoke))
            save()
    if not train_step.torch_available():
        sec.notes.append(train_step.torch_missing_note("PyTorch's SDPA"))
    elif time.perf_counter() > deadline:
        sec.notes.append("skipped (time budget): PyTorch's SDPA")
    else:
        spec = {"cells": cells(smoke), "backends": ["flash", "cudnn"] if not smoke else ["math"],
                "layouts": ["bshd", "bhsd"], "iters": 2 if smoke else 20,
                "device": "cpu" if smoke else "cuda"}  # fmt: skip
        with sec.cell("PyTorch's SDPA"):
            left = deadline - time.perf_counter()  # killed at the section's end, at most
            limit = 300.0 if smoke else min(150.0, max(40.0, left))
            found = train_step.run_torch(TORCH_ATTENTION, spec, limit)
            for row in found:
                if "versions" in row:
                    sec.summary["torch_versions"] = row["versions"]
                else:
                    rows.append({"side": "torch", "impl": row["backend"], **row})
            save()
    add_ratios(rows)
    save()


def kernel_rows(b: int, h: int, s: int, d: int, iters: int) -> list[dict[str, Any]]:
    """tjx's kernels and tokamax's at one cell (``tools/tokamax_gpu.py``'s `measure_cells`),
    each output checked against the float32 XLA reference (a kernel that cannot run here, e.g.
    tokamax without its carried wheels, is a row with its error).

    tokamax runs with its heuristic tiles, untuned: that is what ``attention_impl: tokamax``
    runs in a step (tjx never calls ``tokamax.autotune``), so it is what ``auto`` must rank by.
    (tokamax 0.0.12's autotune also fails on jax 0.11.2, reading the program's locations:
    ``NameLoc`` has no ``is_a_name``; the H200 call of 2026-11-30 lost both tokamax cells so.)
    """
    found = tokamax_gpu.measure_cells([(s, d)], kernels=(*IMPLS, "tokamax"), batch=b,
                                      heads=h, iters=iters, autotune=False)  # fmt: skip
    return [{"side": "jax", **r, "layout": "bshd"} for r in found]


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """``fwd_bwd_x_torch_cudnn``: each row's speed-up on PyTorch's cuDNN in tjx's layout, per
    call (tjx: wall time of a call waited for; PyTorch: CUDA events) and
    ``pipelined_x_torch_cudnn``, back to back (both sides: calls dispatched without a wait, one
    wait at the end: timed alike)."""
    for key, ratio in (("fwd_bwd_ms", "fwd_bwd_x_torch_cudnn"),
                       ("fwd_bwd_pipelined_ms", "pipelined_x_torch_cudnn")):  # fmt: skip
        base = {
            (r["seq"], r["head_dim"]): r.get(key)
            for r in rows
            if r["side"] == "torch" and r["impl"] == "cudnn" and r.get("layout") == "bshd"
        }
        for r in rows:
            ref, mine = base.get((r["seq"], r["head_dim"])), r.get(key)
            r[ratio] = ref / mine if ref and mine else None


def markdown(rows: list[dict[str, Any]], programs: list[dict[str, Any]], versions: Any,
             smoke: bool) -> str:  # fmt: skip
    """The cells' table, the programs' summaries and PyTorch's versions."""
    label = "smoke run, CPU: harness check" if smoke else "**measured**, one call, bf16"
    table = [
        [r["seq"], r["head_dim"], f"{'tjx' if r['side'] == 'jax' else 'torch'} {r['impl']}",
         r.get("layout"), fmt(r.get("fwd_ms"), ".3f"), fmt(r.get("fwd_tflops"), ".3g"),
         fmt(r.get("fwd_bwd_ms"), ".3f"), fmt(r.get("fwd_bwd_tflops"), ".3g"),
         fmt(r.get("fwd_bwd_x_torch_cudnn"), ".2f"), fmt(r.get("fwd_bwd_pipelined_ms"), ".3f"),
         fmt(r.get("pipelined_x_torch_cudnn"), ".2f"), r.get("error")]
        for r in rows
    ]  # fmt: skip
    parts = [
        f"Causal attention alone ({label}); tjx's rows run through jax (`cudnn`: jax's cuDNN "
        "attention), torch's through SDPA's backends; × = forward+backward speed-up on "
        "PyTorch's cuDNN in the same layout as tjx (above 1 is faster). Per call, tjx's times "
        "are a call's wall time waited for (dispatch included) and PyTorch's CUDA-event times; "
        "back to back, both sides dispatch the calls without a wait and wait once (timed alike).",
        md_table(["seq", "d", "implementation", "layout", "fwd ms", "fwd TFLOP/s",
                  "fwd+bwd ms", "fwd+bwd TFLOP/s", "× torch cuDNN", "fwd+bwd back to back ms",
                  "× torch cuDNN back to back", "error"], table),
    ]  # fmt: skip
    for p in programs:
        calls = (
            "; ".join(
                f"`{c['target']}` → {c['result']} from {', '.join(c['operands'])}"
                for c in p["custom_calls"]
            )
            or "none"
        )
        ops = ", ".join(f"{k} ×{n}" for k, n in p["entry_ops"].items())
        parts.append(
            f"jax's {p['impl']} forward+backward, s{p['seq']} d{p['head_dim']} "
            f"(`{p['file']}`): custom calls {calls}; top-level operations {ops}."
        )
    if versions:
        parts.append("PyTorch: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return "\n\n".join(parts)
