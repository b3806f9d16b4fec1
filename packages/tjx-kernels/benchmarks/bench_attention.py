"""Benchmark attention implementations: time, achieved TFLOP/s and compiled peak memory.

    python packages/tjx-kernels/benchmarks/bench_attention.py            # GPU: full sweep
    python packages/tjx-kernels/benchmarks/bench_attention.py --json out.json

Implementations: ``xla`` (tjx reference), ``cudnn`` (``jax.nn.dot_product_attention``), ``pallas``
(tjx flash attention) and ``jax-pallas`` (``jax.experimental.pallas.ops.gpu.attention.mha``, JAX's
own Triton kernel, as a peer) and ``jax-mgpu`` (``jax.experimental.pallas.ops.gpu.attention_mgpu``,
JAX's FA3-style Mosaic GPU kernel for Hopper, where it imports and serves the shape; otherwise its
row holds the error) and ``tokamax`` (OpenXLA tokamax's Mosaic GPU kernel, ``attention_impl:
tokamax``: sm90/sm100 with the tokamax package, else its row holds tjx's one-line refusal).
``pallas-sliced`` and ``pallas-qkv`` start from one stacked ``qkv`` ``[b, s, 3, h, d]`` (a fused
projection's output) and end at its gradient: the first cuts it into q, k, v for
``flash_attention`` and stacks dq, dk, dv again (the XLA work around the kernels a model's layer
had), the second is ``flash_attention_qkv`` (#68: neither written). For each shape it measures the
forward and the forward+backward
(``vjp`` with a random cotangent) under ``jit``: the median of ``--iters`` runs after a warm-up,
TFLOP/s with the FlashAttention convention (forward ``4·b·h·s_q·s_k·d``, halved when causal;
forward+backward = 3.5 × forward), and the compiled executable's memory analysis (arguments +
outputs + temporaries) of the forward+backward. Ratios are against ``xla`` in the same run.

On a machine without a GPU it runs tiny shapes only (Pallas in interpret mode) to check that
everything works; those times are not performance figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from tjx.kernels import AttentionMask, flash_attention, flash_attention_qkv, reference_attention

Array = jax.Array
AttnFn = Callable[[Array, Array, Array], Array]
IMPLS = (
    "xla", "cudnn", "pallas", "jax-pallas", "jax-mgpu", "tokamax", "pallas-sliced", "pallas-qkv",
)  # fmt: skip
#: The implementations measured from one stacked qkv (their input and gradient).
STACKED = ("pallas-sliced", "pallas-qkv")


@dataclasses.dataclass
class Row:
    """One measured (shape, implementation) cell."""

    impl: str
    seq: int
    head_dim: int
    causal: bool
    batch: int
    heads: int
    fwd_ms: float | None = None
    fwd_tflops: float | None = None
    fwd_bwd_ms: float | None = None
    fwd_bwd_tflops: float | None = None
    #: forward+backward per call, calls dispatched back to back and waited for once: the
    #: device's time without the per-call dispatch and wait `median_ms` includes (what a peer
    #: timed by CUDA events compares with).
    fwd_bwd_pipelined_ms: float | None = None
    peak_mib: float | None = None
    fwd_speedup: float | None = None
    fwd_bwd_speedup: float | None = None
    mem_ratio: float | None = None
    error: str | None = None


def attention_flops(b: int, h: int, s_q: int, s_k: int, d: int, causal: bool) -> float:
    """Forward FLOPs of attention (QKᵀ and PV), halved when causal."""
    f = 4.0 * b * h * s_q * s_k * d
    return f / 2 if causal else f


def make_impl(name: str, causal: bool, on_gpu: bool) -> AttnFn:
    """The attention function of one implementation (raises if it cannot exist here)."""
    if name == "xla":
        return lambda q, k, v: reference_attention(q, k, v, mask=AttentionMask(causal=causal))
    if name == "cudnn":
        if not on_gpu:
            raise RuntimeError("cuDNN needs a CUDA GPU")
        return lambda q, k, v: jax.nn.dot_product_attention(
            q, k, v, is_causal=causal, implementation="cudnn"
        )
    if name == "pallas":
        return lambda q, k, v: flash_attention(q, k, v, mask=AttentionMask(causal=causal))
    if name in STACKED:  # called on one qkv [b, s, 3, h, d] (`measure`)
        if name == "pallas-qkv":
            return lambda qkv: flash_attention_qkv(qkv, mask=AttentionMask(causal=causal))  # type: ignore[misc,return-value]
        return lambda qkv: flash_attention(  # type: ignore[misc,return-value]
            qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2], mask=AttentionMask(causal=causal)
        )
    if name == "jax-pallas":
        from jax.experimental.pallas.ops.gpu import attention as jax_attention

        def peer(q: Array, k: Array, v: Array) -> Array:
            scale = float(q.shape[-1]) ** -0.5
            return jax_attention.mha(
                q, k, v, None, sm_scale=scale, causal=causal, interpret=not on_gpu
            )

        return peer
    if name == "jax-mgpu":
        # JAX's Mosaic GPU attention (FA3-style, Hopper only; bf16/f16, head_dim a multiple of 64).
        if not on_gpu:
            raise RuntimeError("Mosaic GPU attention needs a Hopper GPU")
        from jax.experimental.pallas.ops.gpu import attention_mgpu  # pants: no-infer-dep

        config = attention_mgpu.TuningConfig(
            block_q=64,
            block_kv=64,
            max_concurrent_steps=2,
            causal=causal,
            block_q_dkv=64,
            block_kv_dkv=64,
            block_q_dq=64,
            block_kv_dq=64,
        )
        return lambda q, k, v: attention_mgpu.attention(q, k, v, config)
    if name == "tokamax":
        # OpenXLA tokamax's Mosaic GPU attention through tjx's dispatcher (attention_impl
        # tokamax: sm90/sm100 and the tokamax package; elsewhere its one-line refusal).
        from tjx.kernels import attention

        return lambda q, k, v: attention(
            q, k, v, mask=AttentionMask(causal=causal), implementation="tokamax"
        )
    raise ValueError(f"unknown implementation {name!r}; choose from {IMPLS}")


def median_ms(fn: Callable[..., Any], args: Sequence[Array], iters: int) -> float:
    """Median wall time in ms of ``fn(*args)`` after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def pipelined_ms(fn: Callable[..., Any], args: Sequence[Array], iters: int) -> float:
    """Milliseconds per call of ``iters`` calls of ``fn(*args)`` dispatched back to back and
    waited for once, after one warm-up (compile) call."""
    jax.block_until_ready(fn(*args))
    t0 = time.perf_counter()
    out = None
    for _ in range(iters):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - t0) * 1e3 / iters


def _peak_mib(fn: Callable[..., Any], args: Sequence[Array]) -> float | None:
    """Arguments + outputs + temporaries of the compiled executable, in MiB (None if unknown)."""
    stats = fn.lower(*args).compile().memory_analysis()  # type: ignore[attr-defined]
    if stats is None:
        return None
    total = stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
    return float(total - getattr(stats, "alias_size_in_bytes", 0)) / 2**20


def measure(
    impl: str, b: int, h: int, s: int, d: int, causal: bool, dtype: Any, iters: int, on_gpu: bool
) -> Row:
    """Measure one implementation at one shape; failures become ``Row.error``."""
    row = Row(impl=impl, seq=s, head_dim=d, causal=causal, batch=b, heads=h)
    try:
        attn = make_impl(impl, causal, on_gpu)
        keys = jax.random.split(jax.random.key(0), 4)
        q, k, v, do = (jax.random.normal(key, (b, s, h, d), dtype) for key in keys)
        # The stacked rows take one qkv (and give its gradient): the same values.
        inputs: tuple[Array, ...] = (
            (jnp.stack([q, k, v], axis=2),) if impl in STACKED else (q, k, v)
        )
        fwd = jax.jit(attn)

        @jax.jit
        def fwd_bwd(*args: Array) -> tuple[Array, ...]:
            *xs, do = args
            out, vjp = jax.vjp(attn, *xs)
            return (out, *vjp(do))

        flops = attention_flops(b, h, s, s, d, causal)
        row.fwd_ms = median_ms(fwd, inputs, iters)
        row.fwd_tflops = flops / (row.fwd_ms * 1e-3) / 1e12
        row.fwd_bwd_ms = median_ms(fwd_bwd, (*inputs, do), iters)
        row.fwd_bwd_tflops = 3.5 * flops / (row.fwd_bwd_ms * 1e-3) / 1e12
        row.fwd_bwd_pipelined_ms = pipelined_ms(fwd_bwd, (*inputs, do), max(iters, 10))
        row.peak_mib = _peak_mib(fwd_bwd, (*inputs, do))
    except Exception as exc:  # a benchmark reports failures (OOM, unsupported shape) and goes on
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''}"
    return row


def add_ratios(rows: list[Row]) -> None:
    """Speed-ups (t_xla / t_impl) and memory ratios (impl / xla) within each shape."""
    base = {(r.seq, r.head_dim, r.causal): r for r in rows if r.impl == "xla"}
    for r in rows:
        x = base.get((r.seq, r.head_dim, r.causal))
        if x is None:
            continue
        if x.fwd_ms and r.fwd_ms:
            r.fwd_speedup = x.fwd_ms / r.fwd_ms
        if x.fwd_bwd_ms and r.fwd_bwd_ms:
            r.fwd_bwd_speedup = x.fwd_bwd_ms / r.fwd_bwd_ms
        if x.peak_mib and r.peak_mib:
            r.mem_ratio = r.peak_mib / x.peak_mib


def _fmt(x: float | None, spec: str) -> str:
    return "–" if x is None else format(x, spec)


def markdown(rows: list[Row]) -> str:
    """The results as one Markdown table."""
    head = (
        "| seq | d | causal | impl | fwd ms | fwd TFLOP/s | fwd+bwd ms | fwd+bwd TFLOP/s | "
        "peak MiB | fwd × xla | fwd+bwd × xla | mem / xla |\n"
        "|---:|---:|:---:|:---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for r in rows:
        if r.error:
            cells = f"{r.error} | | | | | | | "
        else:
            cells = " | ".join(
                [
                    _fmt(r.fwd_ms, ".3f"),
                    _fmt(r.fwd_tflops, ".2f"),
                    _fmt(r.fwd_bwd_ms, ".3f"),
                    _fmt(r.fwd_bwd_tflops, ".2f"),
                    _fmt(r.peak_mib, ".1f"),
                    _fmt(r.fwd_speedup, ".2f"),
                    _fmt(r.fwd_bwd_speedup, ".2f"),
                    _fmt(r.mem_ratio, ".2f"),
                ]
            )
        lines.append(
            f"| {r.seq} | {r.head_dim} | {'y' if r.causal else 'n'} | {r.impl} | {cells} |"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None, on_gpu: bool) -> argparse.Namespace:
    """Command-line options; defaults depend on whether a GPU is present."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seq", type=int, nargs="+", default=None, help="sequence lengths")
    p.add_argument("--head-dim", type=int, nargs="+", default=None, help="head dims")
    p.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    p.add_argument("--causal", choices=("both", "yes", "no"), default="both")
    p.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    p.add_argument("--tokens", type=int, default=16384 if on_gpu else 128, help="batch × seq")
    p.add_argument("--d-model", type=int, default=2048 if on_gpu else 128, help="heads × head_dim")
    p.add_argument("--iters", type=int, default=20 if on_gpu else 2)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args(argv)
    if args.seq is None:
        args.seq = [512, 1024, 2048, 4096, 8192] if on_gpu else [64, 128]
    if args.head_dim is None:
        args.head_dim = [64, 128] if on_gpu else [64]
    return args


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Run the sweep, print the table (and the device), return the rows."""
    on_gpu = jax.default_backend() == "gpu"
    args = parse_args(argv, on_gpu)
    device = jax.devices()[0]
    print(f"# attention benchmark — {time.strftime('%Y-%m-%d')} — {device.device_kind}")
    print(f"# jax {jax.__version__}, dtype {args.dtype}, tokens/batch {args.tokens}")
    if not on_gpu:
        print(
            "# NOTE: no GPU — tiny shapes, Pallas interpreted: times are NOT performance figures."
        )
    dtype = jnp.dtype(args.dtype)
    causal_opts = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    impls = ["xla"] + [i for i in args.impls if i != "xla"]  # the baseline always runs
    rows: list[Row] = []
    for d in args.head_dim:
        h = max(1, args.d_model // d)
        for s in args.seq:
            b = max(1, args.tokens // s)
            for causal in causal_opts:
                for impl in impls:
                    rows.append(measure(impl, b, h, s, d, causal, dtype, args.iters, on_gpu))
    add_ratios(rows)
    print(markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
    return rows


if __name__ == "__main__":
    main(sys.argv[1:])
