"""Benchmark of tjx.data: packed-batch throughput from memmap shards and pre-tokenization speed.

    python packages/tjx-data/benchmarks/bench_loader.py [--corpus shakespeare] [--tokenizer gpt2]

Measures, in one run on the same shards:
  * pre-tokenization tokens/s (documents already in memory; 1 process and N processes),
  * PackedLoader tokens/s at batch × seq_len (default 32 × 1024) with ``prefetch=4`` and
    ``prefetch=0``, for an idle consumer and one away 0.5 ms per batch (``time.sleep``, as a
    device step waits without the GIL), medians over ``--rounds`` alternating rounds,
  * a naive baseline: a Python loop over rows and tokens (slices of the memmap, then
    per-token Python for segment ids / positions), no prefetch.
Prints a table and writes JSON (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tjx.data import PackedLoader, load_source, load_tokenizer, pretokenize


def naive_batch(
    stream: np.ndarray, windows: np.ndarray, seq_len: int, eos: int
) -> dict[str, np.ndarray]:
    """The straightforward way: one row at a time, one token at a time."""
    rows: dict[str, list[list[int]]] = {
        k: [] for k in ("inputs", "targets", "segment_ids", "positions")
    }
    for window in windows.tolist():
        chunk = [int(t) for t in stream[window * seq_len : window * seq_len + seq_len + 1]]
        seg, pos, segs, poss = 1, 0, [], []
        for t in range(seq_len):
            if t > 0 and chunk[t - 1] == eos:
                seg, pos = seg + 1, 0
            segs.append(seg)
            poss.append(pos)
            pos += 1
        rows["inputs"].append(chunk[:-1])
        rows["targets"].append(chunk[1:])
        rows["segment_ids"].append(segs)
        rows["positions"].append(poss)
    return {k: np.asarray(v, dtype=np.int32) for k, v in rows.items()}


def time_loader(loader: PackedLoader, batches: int, consumer_s: float = 0.0) -> float:
    """Tokens/s over ``batches`` batches after one warm-up batch.

    ``consumer_s``: seconds the consumer spends per batch away from the loader, without holding
    the GIL (``time.sleep``, as a device step waits): what a prefetch thread can hide.
    """
    next(loader)
    start = time.perf_counter()
    tokens = 0
    for _ in range(batches):
        tokens += next(loader)["inputs"].size
        if consumer_s:
            time.sleep(consumer_s)
    return tokens / (time.perf_counter() - start)


def prefetch_rounds(shard_dir: Path, common: dict[str, Any], batches: int, rounds: int) -> dict:
    """Median tokens/s with and without prefetch, idle and 0.5 ms consumers, alternating."""
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for consumer_s in (0.0, 0.0005):
            for prefetch in (0, 4):
                loader = PackedLoader(shard_dir, prefetch=prefetch, **common)
                key = f"consumer_{consumer_s * 1e3:g}ms_prefetch_{prefetch}"
                out.setdefault(key, []).append(time_loader(loader, batches, consumer_s))
                loader.close()
    return {key: statistics.median(values) for key, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=500)
    parser.add_argument("--naive-batches", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (medians)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    docs = list(load_source(args.corpus, split="train"))
    tok = load_tokenizer(args.tokenizer)
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, {platform.platform()}",
        "corpus": args.corpus,
        "tokenizer": args.tokenizer,
        "documents": len(docs),
    }
    with tempfile.TemporaryDirectory() as tmp:
        for workers in sorted({1, args.workers}):
            start = time.perf_counter()
            index = pretokenize(docs, tok, Path(tmp) / f"w{workers}", num_workers=workers,
                                progress=False, source=args.corpus)  # fmt: skip
            seconds = time.perf_counter() - start
            results[f"pretokenize_tokens_per_s_{workers}_proc"] = index.tokens / seconds
        results["tokens"] = index.tokens
        shard_dir = Path(tmp) / "w1"
        common = {"seq_len": args.seq_len, "batch_size": args.batch_size, "seed": 0}
        medians = prefetch_rounds(shard_dir, common, args.batches, args.rounds)
        results.update({f"loader_tokens_per_s_{k}": v for k, v in medians.items()})
        for consumer in ("0", "0.5"):
            with_pf = medians[f"consumer_{consumer}ms_prefetch_4"]
            results[f"prefetch_over_none_consumer_{consumer}ms"] = (
                with_pf / medians[f"consumer_{consumer}ms_prefetch_0"]
            )
        plain = PackedLoader(shard_dir, prefetch=0, **common)
        stream = index.read_all()
        order = plain.epoch_order(0)
        start = time.perf_counter()
        for step in range(args.naive_batches):
            naive = naive_batch(stream, order[step % len(order)], args.seq_len, index.eos_id)
        seconds = time.perf_counter() - start
        results["naive_tokens_per_s"] = args.naive_batches * naive["inputs"].size / seconds
        check = plain.batch_at(0, (args.naive_batches - 1) % len(order))
        assert all(np.array_equal(check[k], naive[k]) for k in naive), "naive != vectorised"
    results["speedup_vs_naive"] = (
        results["loader_tokens_per_s_consumer_0ms_prefetch_0"] / results["naive_tokens_per_s"]
    )
    for key, value in results.items():
        shown = f"{value:,.0f}" if isinstance(value, float) and value > 100 else value
        print(f"{key:42s} {shown}")
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
