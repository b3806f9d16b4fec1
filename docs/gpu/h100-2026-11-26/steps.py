"""GPU step timing of this tree's trainer step: python3 q2.py TAG [--profile] CONFIG:SET,SET ...

Each case: the trainer's own jitted step compiled once, 3 warm-up steps, 15 steps each waited for
(median), 20 dispatched back to back (mean). Estimates of the same compiled program: roofline and
calibrated (H100 constants) for h100 and h200. --profile: a jax.profiler trace of 3 steps of the
first case, summarised by kernel name (kernels per step, GPU busy ms per step).
"""

import collections, glob, gzip, json, os, statistics, sys, tarfile, time

sys.path.insert(0, "tools")
import jax
from bench_train import load, synthetic_batch, vocab_of
from tjx import kernels, metrics, parallel
from trainer import build_state, jit_train_step, resolve

kernels.enable_compilation_cache()
OUT = os.environ.get("OUT", "/tmp")
tag = sys.argv[1]
profile = "--profile" in sys.argv
cases = [a for a in sys.argv[2:] if not a.startswith("--")]
out = open(os.path.join(OUT, f"q_{tag}.jsonl"), "a")


def estimates(text, cfg):
    from tjx.metrics import calibration as cal

    res = {}
    for dev in ("h100", "h200"):
        try:
            acc = metrics.accelerator(dev)
            cost = kernels.roofline_costs(
                causal=True, device_kind=acc.device_kind, compute_capability=acc.compute_capability
            )
            roof = metrics.roofline(text, acc, custom_call_cost=cost)
            c = cal.calibration_for("h100")
            calib = cal.calibrated_seconds(cal.rows_of(roof.kernels), acc, c).seconds
            res[dev] = {
                "launches": roof.launches,
                "gb": round(roof.bytes / 1e9, 2),
                "roof_ms": round(1e3 * roof.seconds, 2),
                "calib_ms": round(1e3 * calib, 2),
            }
        except Exception as e:
            res[dev] = {"error": repr(e)[:200]}
    return res


first = True
for case in cases:
    name, _, s = case.partition(":")
    sets = [x for x in s.split(",") if x]
    setup = None
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
            "tree": tag,
            "config": name,
            "sets": sets,
            "attention": str(cfg.model.attention_impl),
            "device": jax.devices()[0].device_kind,
            "compile_s": round(comp, 1),
            "sync_ms": round(1e3 * statistics.median(sync), 2),
            "pipelined_ms": round(1e3 * piped, 2),
            "tok_s_pipelined": round(tokens / piped),
            "tok_s_sync": round(tokens / statistics.median(sync)),
            "loss": float(o["loss"]),
            "peak_gib": round(metrics.peak_bytes(compiled)["peak"] / 2**30, 2),
            "est": estimates(text, cfg),
        }
        if profile:
            ptag = f"{tag}_{name}_{row['attention']}"
            os.makedirs("/tmp/profiles", exist_ok=True)
            with gzip.open(f"/tmp/profiles/step_{ptag}.hlo.txt.gz", "wt") as f:
                f.write(text)
            jax.profiler.start_trace("/tmp/prof_" + ptag)
            for i in range(3):
                st, o = compiled(st, batches[i % 2])
            jax.block_until_ready(o)
            jax.profiler.stop_trace()
            os.system(f"cp -r /tmp/prof_{ptag} /tmp/profiles/")
            f = glob.glob(f"/tmp/prof_{ptag}/**/*.trace.json.gz", recursive=True)[0]
            ev = json.load(gzip.open(f))["traceEvents"]
            pids = {
                e["pid"]: e["args"]["name"]
                for e in ev
                if e.get("ph") == "M" and e.get("name") == "process_name"
            }
            gpu = [
                e for e in ev if e.get("ph") == "X" and "/device:GPU" in pids.get(e.get("pid"), "")
            ]
            tot = collections.defaultdict(lambda: [0, 0.0])
            for e in gpu:
                n = e["name"].split(".")[0].rstrip("0123456789_")
                tot[n][0] += 1
                tot[n][1] += e["dur"]
            row["profile"] = {
                "kernels_per_step": len(gpu) / 3,
                "busy_ms_per_step": round(sum(e["dur"] for e in gpu) / 3e3, 2),
                "top": [
                    [n, round(d / 3e3, 2), round(k / 3)]
                    for n, (k, d) in sorted(tot.items(), key=lambda x: -x[1][1])[:40]
                ],
            }
        first = False
    except Exception as e:  # one row fails, the rest go on
        row = {"tree": tag, "config": name, "sets": sets, "error": repr(e)[:400]}
    print(json.dumps(row), flush=True)
    out.write(json.dumps(row) + "\n")
    out.flush()
    del setup
