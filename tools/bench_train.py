"""Benchmarks of the trainer's jitted step (the same step `python -m trainer` runs).

    python tools/bench_train.py throughput --configs tiny,gpt2_small --steps 20
    python tools/bench_train.py compile            # gpt2_small (scan_layers) vs gpt2_large
    python tools/bench_train.py memory             # gpt2_medium: batch × remat × cross-entropy
    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tools/bench_train.py pipeline
    python tools/bench_train.py all --json out.json

* throughput: tokens/s and MFU per config on the current device: the step is compiled once
  (compile time reported separately), then the median wall time over ``--steps`` steps on synthetic
  token batches (no data preparation needed). MFU uses tjx.metrics' peak table (n/a on CPU).
* compile: wall time to lower + compile the full train step (forward, backward, optimizer) of
  gpt2_small with ``scan_layers`` from abstract shapes (no parameter is materialised), and
  gpt2_large's time as a ratio of it: as its preset is (full remat, batch 8) and with gpt2_small's
  settings (no remat, batch 16), so the ratio is not flattered by the preset's choices.
* memory: peak bytes (GiB) of gpt2_medium's compiled step from XLA's ``memory_analysis()``
  (arguments + outputs + temporaries − donated aliases; nothing executes) at batch 4 and 8 × 1024,
  with and without remat, for three losses: full logits, chunks of 4096 tokens (the constant the
  presets used to pin) and chunks chosen from the shape (the default), as ratios to the full-logits
  step of the same batch and remat.

Use ``--set KEY=VALUE`` to override any config value for every case (e.g. data.batch_size=4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np


def load(name: str, sets: list[str]) -> Any:
    """A validated trainer config: preset ``name`` with overrides."""
    from trainer import load_config

    return load_config(name, sets)


def vocab_of(cfg: Any) -> int:
    """The model vocabulary the trainer would use (synthetic data: no tokenizer is loaded)."""
    if cfg.vocab_size:  # model.vocab_size as the config sets it
        return int(cfg.vocab_size)
    return {"byte": 257, "bytes": 257, "gpt2": 50257}.get(cfg.data.tokenizer, 32000)


def synthetic_batch(cfg: Any, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens in the loader's layout (one document per row): tjx.data's `random_batch`."""
    from tjx import data

    return data.random_batch(cfg.data.batch_size, cfg.data.seq_len, vocab, seed=seed)


def abstract_step(cfg: Any) -> tuple[Any, Any, Any]:
    """(jitted step, abstract state, abstract batch) without materialising any parameter."""
    from trainer import abstract_step as trainer_abstract_step
    from trainer import resolve, step_config

    return trainer_abstract_step(step_config(resolve(cfg, vocab_of(cfg))))


def compile_seconds(cfg: Any, detail: dict[str, float] | None = None) -> tuple[float, Any]:
    """Wall seconds to trace, lower and compile the train step; returns (seconds, compiled)."""
    step, state, batch = abstract_step(cfg)
    t0 = time.perf_counter()
    lowered = step.lower(state, batch)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    if detail is not None:
        detail.update(trace_lower_s=round(t1 - t0, 2), xla_compile_s=round(t2 - t1, 2))
    return t2 - t0, compiled


def throughput(
    name: str,
    sets: list[str],
    steps: int,
    *,
    inspect: Callable[[Any, Any, Any], dict[str, Any]] | None = None,
    profile: Path | None = None,
    profile_steps: int = 3,
) -> dict[str, Any]:
    """Compile once, then the median step time over ``steps`` steps on synthetic batches.

    ``inspect(compiled, cfg, setup)`` reads the compiled executable before it runs (its memory
    analysis, its HLO: what a caller would otherwise compile the step again for) and returns fields
    for the row. After timing, ``profile_steps`` more steps run under
    ``jax.profiler.trace(profile)`` when ``profile`` is given. Besides the median of steps each
    waited for, the row has ``pipelined_step_s``: ``steps`` steps dispatched back to back, one
    wait at the end, per step (what a training loop that does not read each step's loss sees).
    """
    from tjx import metrics, nn, parallel
    from trainer import build_state, jit_train_step, resolve, step_config

    cfg = load(name, sets)
    cfg = resolve(cfg, vocab_of(cfg))
    setup = build_state(step_config(cfg))
    step = jit_train_step(setup)
    batches = [
        parallel.shard_batch(synthetic_batch(cfg, vocab_of(cfg), seed), setup.mesh)
        for seed in range(2)
    ]
    st = setup.state
    t0 = time.perf_counter()
    compiled = step.lower(st, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    extra = inspect(compiled, cfg, setup) if inspect is not None else {}
    st, out = compiled(st, batches[0])  # warm-up
    jax.block_until_ready(out)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        st, out = compiled(st, batches[i % 2])
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for i in range(steps):
        st, out = compiled(st, batches[i % 2])
    jax.block_until_ready((st, out))
    pipelined = (time.perf_counter() - t0) / steps
    if profile is not None:
        with jax.profiler.trace(str(profile)):
            for i in range(profile_steps):
                st, out = compiled(st, batches[i % 2])
                jax.block_until_ready(out)
    median = statistics.median(times)
    tokens = cfg.data.batch_size * (cfg.data.seq_len if cfg.task != "classify" else 1)
    tps = tokens / median
    flops = nn.flops_per_unit(setup.nn_config, cfg.data.seq_len)
    peak = metrics.compute_peak_flops(setup.nn_config.precision.compute_dtype, warn=False)
    mfu = metrics.mfu(tps, flops, peak, num_devices=jax.device_count()) if peak else None
    return {
        "config": name,
        "params": setup.num_params,
        "tokens_per_step": tokens,
        "compile_s": round(compile_s, 2),
        "median_step_s": round(median, 4),
        "pipelined_step_s": round(pipelined, 4),
        "tokens_per_s": round(tps, 1),
        "mfu": None if mfu is None else round(float(mfu), 4),
        "loss_finite": bool(np.isfinite(float(out["loss"]))),
        **extra,
    }


def compile_case(sets: list[str]) -> dict[str, Any]:
    """gpt2_small (scan_layers) compile time and gpt2_large's ratio to it, as preset and equal."""
    small = load("gpt2_small", ["model.scan_layers=true", *sets])
    large = load("gpt2_large", ["model.scan_layers=true", *sets])
    # gpt2_large's preset also turns on full remat and halves the batch; with gpt2_small's own
    # settings the two programs differ only in the model's size.
    like_small = ["model.remat=none", f"data.batch_size={small.data.batch_size}"]
    equal = load("gpt2_large", ["model.scan_layers=true", *like_small, *sets])
    compile_seconds(load("tiny", sets))  # warm-up: the first compile of a process pays extra
    d_small: dict[str, float] = {}
    d_large: dict[str, float] = {}
    d_equal: dict[str, float] = {}
    t_small, _ = compile_seconds(small, d_small)
    t_large, _ = compile_seconds(large, d_large)
    t_equal, _ = compile_seconds(equal, d_equal)
    return {
        "gpt2_small_compile_s": round(t_small, 2),
        "gpt2_small_detail": d_small,
        "gpt2_large_compile_s": round(t_large, 2),
        "gpt2_large_detail": d_large,
        "large_over_small": round(t_large / t_small, 3),
        "gpt2_large_equal_settings_compile_s": round(t_equal, 2),
        "gpt2_large_equal_settings_detail": d_equal,
        "large_equal_over_small": round(t_equal / t_small, 3),
    }


#: The losses `memory_case` compares: full logits, the old constant chunk, the shape's chunk.
CE_VARIANTS = {
    "full logits": ["train.chunked_ce=false"],
    "chunks of 4096": ["train.chunked_ce=true", "train.ce_chunk_size=4096"],
    "chunks from the shape": ["train.chunked_ce=true", "train.ce_chunk_size=null"],
}


def memory_case(sets: list[str]) -> dict[str, Any]:
    """gpt2_medium peak memory (GiB) for batch × remat × loss, as ratios to full logits."""
    from tjx.metrics import peak_bytes

    rows = []
    for batch in (4, 8):
        for remat in ("none", "full"):
            base = None
            for name, ce in CE_VARIANTS.items():
                shape = [f"data.batch_size={batch}", f"model.remat={remat}"]
                cfg = load("gpt2_medium", [*shape, *ce, *sets])
                _, compiled = compile_seconds(cfg)
                peak = peak_bytes(compiled)["peak"] / 2**30
                base = peak if base is None else base
                row = {"batch": f"{batch} x 1024", "remat": remat, "loss": name}
                rows.append(row | {"peak_GiB": round(peak, 2), "ratio": round(peak / base, 3)})
                print(_table(rows[-1:]), flush=True)
    return {"rows": rows}


def pipeline_case(sets: list[str]) -> dict[str, Any]:
    """Per-device compiled peak (GiB) of gpt2_small's step: data parallel against pipeline stages.

    One process, ``jax.device_count()`` devices (4 or 8: run with
    ``XLA_FLAGS=--xla_force_host_platform_device_count=4`` on a CPU), one global batch of 8 ×
    1024: the unpipelined step splits the batch over every device and keeps all layers on each;
    with ``mesh.pipeline=S`` each device holds ``1/S`` of the layers (and their optimizer state)
    and the batch runs as microbatches of 1 row per data-parallel device.
    """
    from tjx.metrics import peak_bytes

    n = jax.device_count()
    if n not in (4, 8):
        raise SystemExit(f"pipeline: needs 4 or 8 devices, got {n} (set XLA_FLAGS on a CPU)")
    base = ["model.scan_layers=true", "data.batch_size=8", "eval.batch_size=8", *sets]
    rows: list[dict[str, Any]] = []
    # A pipeline stage recomputes its forward in the backward (it keeps only its input per
    # microbatch), so the unpipelined step with full remat is the like-for-like baseline.
    cases = [(1, "none (no remat)"), (1, "none (full remat)")]
    cases += [(s, sched) for s in (2, 4) for sched in ("gpipe", "1f1b")]
    for stages, schedule in cases:
        data = n // stages
        micro = 8 // data
        mesh = [f"mesh.data={data}", f"mesh.pipeline={stages}", f"mesh.microbatches={micro}"]
        if stages > 1:
            mesh.append(f"mesh.schedule={schedule}")
        elif "full" in schedule:
            mesh.append("model.remat=full")
        _, compiled = compile_seconds(load("gpt2_small", [*base, *mesh]))
        peak = peak_bytes(compiled)["peak"] / 2**30
        first = peak if not rows else rows[0]["peak_GiB_per_device"]
        rows.append(
            {
                "stages": stages,
                "data": data,
                "microbatches": micro if stages > 1 else "-",
                "schedule": schedule,
                "peak_GiB_per_device": round(peak, 2),
                "ratio": round(peak / first, 3),
            }  # fmt: skip
        )
        print(_table(rows[-1:]), flush=True)
    return {"devices": n, "rows": rows}


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.rjust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).rjust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, print them, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("throughput", "compile", "memory", "pipeline", "all"))
    parser.add_argument("--configs", default="tiny", help="comma-separated presets (throughput)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (throughput)")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    from tjx import metrics

    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": metrics.device_summary(),
        "jax": jax.__version__,
    }
    print(f"{results['date']} on {results['device']}, jax {results['jax']}", flush=True)
    if args.what in ("throughput", "all"):
        rows = [throughput(n, args.sets, args.steps) for n in args.configs.split(",")]
        results["throughput"] = rows
        print(_table(rows), flush=True)
    if args.what in ("compile", "all"):
        results["compile"] = compile_case(args.sets)
        print(json.dumps(results["compile"], indent=2), flush=True)
    if args.what in ("memory", "all"):
        results["memory"] = memory_case(args.sets)
        print(_table(results["memory"]["rows"]), flush=True)
    if args.what == "pipeline":  # not in "all": it needs several devices
        results["pipeline"] = pipeline_case(args.sets)
        print(_table(results["pipeline"]["rows"]), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
