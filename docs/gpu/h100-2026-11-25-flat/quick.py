"""Quick look on the GPU: gpt2_small step time per setting, synchronous and pipelined."""

import json, os, statistics, sys, time

sys.path.insert(0, "tools")
import jax, numpy as np
from bench_train import load, synthetic_batch, vocab_of
from tjx import kernels, metrics, nn, parallel
from trainer import build_state, jit_train_step, resolve

kernels.enable_compilation_cache()
CASES = [
    ("gpt2_small", ["optimizer.flat_update=off", "model.precision.logits_dtype=float32"]),
    ("gpt2_small", ["model.precision.logits_dtype=float32"]),
    ("gpt2_small", []),
    ("gpt2_small", ["model.attention_impl=cudnn"]),
    ("gpt2_small", ["model.attention_impl=pallas"]),
    ("llama_small", []),
]
out = open(os.path.join(os.environ.get("OUT", "/tmp"), "quick.jsonl"), "w")
for name, sets in CASES:
    try:
        cfg = load(name, sets)
        cfg = resolve(cfg, vocab_of(cfg))
        setup = build_state(cfg)
        step = jit_train_step(setup, cfg)
        batches = [
            parallel.shard_batch(synthetic_batch(cfg, vocab_of(cfg), s), setup.mesh)
            for s in range(2)
        ]
        st = setup.state
        t0 = time.perf_counter()
        compiled = step.lower(st, batches[0]).compile()
        comp = time.perf_counter() - t0
        text = compiled.as_text()
        roof = metrics.roofline(text, metrics.accelerator("h100"))
        for _ in range(3):
            st, o = compiled(st, batches[0])
        jax.block_until_ready(o)
        sync = []
        for i in range(15):
            t0 = time.perf_counter()
            st, o = compiled(st, batches[i % 2])
            jax.block_until_ready(o)
            sync.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i in range(20):
            st, o = compiled(st, batches[i % 2])
        jax.block_until_ready(o)
        piped = (time.perf_counter() - t0) / 20
        tokens = cfg.data.batch_size * cfg.data.seq_len
        row = {
            "config": name,
            "sets": sets,
            "attention": cfg.model.attention_impl,
            "compile_s": round(comp, 1),
            "sync_ms": round(1e3 * statistics.median(sync), 2),
            "pipelined_ms": round(1e3 * piped, 2),
            "tok_s_pipelined": round(tokens / piped),
            "launches": roof.launches,
            "est_ms": round(1e3 * roof.seconds, 2),
            "loss": float(o["loss"]),
            "peak_gib": round(metrics.peak_bytes(compiled)["peak"] / 2**30, 2),
        }
    except Exception as e:  # one row fails, the rest go on
        row = {"config": name, "sets": sets, "error": repr(e)[:300]}
    print(json.dumps(row), flush=True)
    out.write(json.dumps(row) + "\n")
    out.flush()
    del setup
