"""Profile 3 steps of gpt2_small (preset as it ships, pallas) and summarise kernels by name."""

import gzip, json, os, sys, tarfile, time, glob, collections

sys.path.insert(0, "tools")
import jax
from bench_train import load, synthetic_batch, vocab_of
from tjx import kernels, parallel
from trainer import build_state, jit_train_step, resolve

kernels.enable_compilation_cache()
OUT = os.environ.get("OUT", "/tmp")
cfg = load("gpt2_small", ["model.attention_impl=pallas"])
cfg = resolve(cfg, vocab_of(cfg))
setup = build_state(cfg)
step = jit_train_step(setup, cfg)
b = [parallel.shard_batch(synthetic_batch(cfg, vocab_of(cfg), s), setup.mesh) for s in range(2)]
st = setup.state
c = step.lower(st, b[0]).compile()
open(os.path.join(OUT, "step_pallas.hlo.txt"), "w").write(c.as_text())
for i in range(4):
    st, o = c(st, b[i % 2])
jax.block_until_ready(o)
jax.profiler.start_trace("/tmp/prof")
for i in range(3):
    st, o = c(st, b[i % 2])
jax.block_until_ready(o)
jax.profiler.stop_trace()
with tarfile.open(os.path.join(OUT, "profile_flat.tar.gz"), "w:gz") as t:
    t.add("/tmp/prof", arcname="profile")
f = glob.glob("/tmp/prof/**/*.trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(f))["traceEvents"]
pids = {
    e["pid"]: e["args"]["name"]
    for e in ev
    if e.get("ph") == "M" and e.get("name") == "process_name"
}
gpu = [e for e in ev if e.get("ph") == "X" and "/device:GPU" in pids.get(e.get("pid"), "")]
tot = collections.defaultdict(lambda: [0, 0.0])
for e in gpu:
    n = e["name"].split(".")[0].rstrip("0123456789_")
    tot[n][0] += 1
    tot[n][1] += e["dur"]
print("kernels/step", len(gpu) / 3, "busy ms/step", sum(e["dur"] for e in gpu) / 3e3)
for n, (k, d) in sorted(tot.items(), key=lambda x: -x[1][1])[:30]:
    print(f"{d/3e3:7.2f} ms {k/3:6.0f}x  {n}")
