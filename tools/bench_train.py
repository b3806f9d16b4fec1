"""Benchmarks of the trainer's jitted step (the same step `python -m trainer` runs).

    python tools/bench_train.py throughput --configs tiny,gpt2_small --steps 20
    python tools/bench_train.py compile            # gpt2_small (scan_layers) vs gpt2_large
    python tools/bench_train.py memory             # gpt2_medium: remat × chunked CE
    python tools/bench_train.py all --json out.json

* throughput: tokens/s and MFU per config on the current device: the step is compiled once
  (compile time reported separately), then the median wall time over ``--steps`` steps on synthetic
  token batches (no data preparation needed). MFU uses tjx.metrics' peak table (n/a on CPU).
* compile: wall time to lower + compile the full train step (forward, backward, optimizer) of
  gpt2_small with ``scan_layers`` from abstract shapes (no parameter is materialised), and
  gpt2_large's time as a ratio of it.
* memory: peak bytes of gpt2_medium's compiled step from XLA's ``memory_analysis()`` (arguments +
  outputs + temporaries − donated aliases; nothing executes), with and without remat and with and
  without the chunked cross-entropy, as ratios to the plain step.

Use ``--set KEY=VALUE`` to override any config value for every case (e.g. data.batch_size=4).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from typing import Any

import jax
import numpy as np


def load(name: str, sets: list[str]) -> Any:
    """A validated trainer config: preset ``name`` with overrides."""
    from trainer.config import build_config
    from trainer.overrides import apply_overrides
    from trainer.presets import load_config_data

    return build_config(apply_overrides(load_config_data(name), sets))


def vocab_of(cfg: Any) -> int:
    """The model vocabulary the trainer would use (synthetic data: no tokenizer is loaded)."""
    if cfg.model.vocab_size:
        return int(cfg.model.vocab_size)
    return {"byte": 257, "bytes": 257, "gpt2": 50257}.get(cfg.data.tokenizer, 32000)


def synthetic_batch(cfg: Any, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random tokens in the loader's layout (one document per row)."""
    rng = np.random.default_rng(seed)
    b, s = cfg.data.batch_size, cfg.data.seq_len
    tokens = rng.integers(0, vocab, (b, s + 1), dtype=np.int32)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "segment_ids": np.ones((b, s), np.int32),
        "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy(),
    }


def abstract_step(cfg: Any) -> tuple[Any, Any, Any]:
    """(jitted step, abstract state, abstract batch) without materialising any parameter."""
    from trainer.memory_fit import abstract_step as trainer_abstract_step

    return trainer_abstract_step(cfg, vocab_of(cfg))


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


def throughput(name: str, sets: list[str], steps: int) -> dict[str, Any]:
    """Compile once, then the median step time over ``steps`` steps on synthetic batches."""
    from tjx import metrics, parallel
    from trainer import state as state_mod
    from trainer.model_build import flops_per_unit
    from trainer.step import make_train_step

    cfg = load(name, sets)
    setup = state_mod.build(cfg, vocab_of(cfg))
    step = jax.jit(make_train_step(setup.graphdef, setup.rest, setup.tx, cfg), donate_argnums=(0,))
    batches = [
        parallel.shard_batch(synthetic_batch(cfg, vocab_of(cfg), seed), setup.mesh)
        for seed in range(2)
    ]
    st = setup.state
    t0 = time.perf_counter()
    compiled = step.lower(st, batches[0]).compile()
    compile_s = time.perf_counter() - t0
    st, out = compiled(st, batches[0])  # warm-up
    jax.block_until_ready(out)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        st, out = compiled(st, batches[i % 2])
        jax.block_until_ready(out)
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    tokens = cfg.data.batch_size * (cfg.data.seq_len if cfg.task != "classify" else 1)
    tps = tokens / median
    flops = flops_per_unit(setup.nn_config, cfg)
    dtype = {"bfloat16": "bf16", "float16": "fp16", "float32": "tf32"}[cfg.model.compute_dtype]
    peak = None if jax.default_backend() == "cpu" else metrics.device_peak_flops(None, dtype)
    mfu = metrics.mfu(tps, flops, peak, num_devices=jax.device_count()) if peak else None
    return {
        "config": name,
        "params": setup.num_params,
        "tokens_per_step": tokens,
        "compile_s": round(compile_s, 2),
        "median_step_s": round(median, 4),
        "tokens_per_s": round(tps, 1),
        "mfu": None if mfu is None else round(float(mfu), 4),
        "loss_finite": bool(np.isfinite(float(out["loss"]))),
    }


def compile_case(sets: list[str]) -> dict[str, Any]:
    """gpt2_small (scan_layers) compile time and gpt2_large's ratio to it."""
    small = load("gpt2_small", ["model.scan_layers=true", *sets])
    large = load("gpt2_large", ["model.scan_layers=true", *sets])
    compile_seconds(load("tiny", sets))  # warm-up: the first compile of a process pays extra
    d_small: dict[str, float] = {}
    d_large: dict[str, float] = {}
    t_small, _ = compile_seconds(small, d_small)
    t_large, _ = compile_seconds(large, d_large)
    return {
        "gpt2_small_compile_s": round(t_small, 2),
        "gpt2_small_detail": d_small,
        "gpt2_large_compile_s": round(t_large, 2),
        "gpt2_large_detail": d_large,
        "large_over_small": round(t_large / t_small, 3),
    }


def memory_case(sets: list[str]) -> dict[str, Any]:
    """gpt2_medium peak memory for remat × chunked CE, as ratios to (no remat, plain CE)."""
    from trainer.memory_fit import peak_bytes

    out: dict[str, Any] = {}
    for remat in ("none", "full"):
        for chunked in (False, True):
            cfg = load(
                "gpt2_medium",
                [f"model.remat={remat}", f"train.chunked_ce={str(chunked).lower()}", *sets],
            )
            _, compiled = compile_seconds(cfg)
            out[f"remat={remat},chunked_ce={chunked}"] = peak_bytes(compiled)
    base = out["remat=none,chunked_ce=False"]["peak"]
    out["ratios_to_plain"] = {k: round(v["peak"] / base, 3) for k, v in out.items()}
    return out


def _table(rows: list[dict[str, Any]]) -> str:
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    lines = ["  ".join(k.rjust(widths[k]) for k in keys)]
    lines += ["  ".join(str(r[k]).rjust(widths[k]) for k in keys) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, print them, optionally write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("throughput", "compile", "memory", "all"))
    parser.add_argument("--configs", default="tiny", help="comma-separated presets (throughput)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps (throughput)")
    parser.add_argument("--set", action="append", default=[], dest="sets", metavar="KEY=VALUE")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args(argv)
    device = jax.devices()[0]
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": f"{jax.device_count()} × {device.device_kind} ({jax.default_backend()})",
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
        print(json.dumps(results["memory"], indent=2), flush=True)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
