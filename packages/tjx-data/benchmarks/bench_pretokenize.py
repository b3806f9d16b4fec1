"""Benchmark: pre-tokenization throughput against the same tokenizer's raw ``encode_batch``.

    python packages/tjx-data/benchmarks/bench_pretokenize.py [--corpus shakespeare]
        [--tokenizer gpt2] [--rounds 3] [--out bench_pretokenize.json]

On the same documents (already in memory) and the same cores:
  * raw: the HF tokenizer's own ``encode_batch`` over the documents in `pretokenize`'s chunks
    (``chunk_chars``), ids only — what tokenizing costs with nothing around it (HF tokenizers
    uses every core itself);
  * tjx: `tjx.data.pretokenize` into shards (EOS, dtype, shard files, index), with 1 process
    (HF's threads inside) and with ``os.cpu_count()`` processes.
Tokens/s are medians over ``--rounds`` alternating rounds; the ratio tjx / raw is the figure the
README reports (goal ≥ 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from typing import Any

from tjx.data import load_source, load_tokenizer, pretokenize
from tjx.data.pretokenize import _chunks


def raw_tokens_per_s(tok: Any, docs: list[str], chunk_chars: int) -> float:
    """The HF tokenizer's own encode_batch over pretokenize's chunks, ids only."""
    hf = tok.tokenizer
    encode = getattr(hf, "encode_batch_fast", hf.encode_batch)
    start, tokens = time.perf_counter(), 0
    for chunk in _chunks(((d, None) for d in docs), chunk_chars):
        tokens += sum(len(e.ids) for e in encode(chunk, add_special_tokens=False))
    return tokens / (time.perf_counter() - start)


def tjx_tokens_per_s(tok: Any, docs: list[str], workers: int, chunk_chars: int) -> float:
    """`pretokenize` into a fresh folder (shards and index written, EOS included)."""
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        index = pretokenize(docs, tok, root, num_workers=workers, progress=False,
                            chunk_chars=chunk_chars, source="bench")  # fmt: skip
        seconds = time.perf_counter() - start
    return (index.tokens - index.documents) / seconds  # EOS tokens are not the tokenizer's work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="shakespeare")
    parser.add_argument("--tokenizer", default="gpt2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--chunk-chars", type=int, default=1 << 18)
    parser.add_argument("--out", default="bench_pretokenize.json")
    args = parser.parse_args()
    docs = list(load_source(args.corpus, split="train"))
    tok = load_tokenizer(args.tokenizer)
    cores = os.cpu_count() or 1
    runs: dict[str, list[float]] = {"raw": [], "tjx_1": [], f"tjx_{cores}": []}
    for _ in range(args.rounds):
        runs["raw"].append(raw_tokens_per_s(tok, docs, args.chunk_chars))
        runs["tjx_1"].append(tjx_tokens_per_s(tok, docs, 1, args.chunk_chars))
        if cores > 1:
            runs[f"tjx_{cores}"].append(tjx_tokens_per_s(tok, docs, cores, args.chunk_chars))
    median = {k: statistics.median(v) for k, v in runs.items() if v}
    result = {
        "corpus": args.corpus,
        "tokenizer": args.tokenizer,
        "characters": sum(map(len, docs)),
        "cores": cores,
        "machine": platform.processor() or platform.machine(),
        "tokens_per_s": median,
        "ratio_to_raw": {k: v / median["raw"] for k, v in median.items() if k != "raw"},
    }
    for name, value in median.items():
        ratio = "" if name == "raw" else f"  ({value / median['raw']:.2f}× raw)"
        print(f"{name:>8}: {value / 1e6:6.2f} M tokens/s{ratio}")
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
