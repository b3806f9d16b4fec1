"""nanoGPT's step (torch_speed.py's recipe, same model/optimizer/compile) under torch.profiler.

python3 peer_profile.py OUTDIR  -> OUTDIR/peer_kernels.json (kernels per step, GPU ms per step, by
kernel name) and OUTDIR/peer_trace.json.gz (the Chrome trace). 5 warm-up steps, 3 profiled.
"""

import collections, gzip, json, os, shutil, sys, time
from pathlib import Path

import torch

PEER = Path("apps/experiments/experiments/nanogpt/peer").resolve()
sys.path.insert(0, str(PEER))
from torch_gpt import GPT  # noqa: E402
from torch_speed import nanogpt_init  # noqa: E402

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
b, s, vocab, d, layers, heads = 16, 1024, 50304, 768, 12, 12
torch.manual_seed(0)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
model = GPT(vocab, s, d, layers, heads, 4 * d).to("cuda")
nanogpt_init(model, layers)
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
opt = torch.optim.AdamW(
    [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
    lr=6e-4, betas=(0.9, 0.95), fused=True,
)
run = torch.compile(model)
autocast = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
gen = torch.Generator(device="cpu").manual_seed(0)
batches = [
    (torch.randint(0, vocab, (b, s), generator=gen).cuda(), torch.randint(0, vocab, (b, s), generator=gen).cuda())
    for _ in range(2)
]


def step(i):
    x, y = batches[i % 2]
    with autocast:
        loss = run(x, y)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.detach()


for i in range(5):
    step(i)
torch.cuda.synchronize()
acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
t0 = time.perf_counter()
with torch.profiler.profile(activities=acts) as prof:
    for i in range(3):
        step(i)
    torch.cuda.synchronize()
wall = (time.perf_counter() - t0) / 3
trace = str(out / "peer_trace.json")
prof.export_chrome_trace(trace)
ev = json.load(open(trace))["traceEvents"]
with open(trace, "rb") as f, gzip.open(trace + ".gz", "wb") as g:
    shutil.copyfileobj(f, g)
os.remove(trace)
gpu = [e for e in ev if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memcpy", "gpu_memset")]
tot = collections.defaultdict(lambda: [0, 0.0])
for e in gpu:
    tot[e["name"][:120]][0] += 1
    tot[e["name"][:120]][1] += e["dur"]
summary = {
    "wall_ms_per_step_profiled": round(1e3 * wall, 2),
    "kernels_per_step": len(gpu) / 3,
    "busy_ms_per_step": round(sum(e["dur"] for e in gpu) / 3e3, 2),
    "by_name": [[n, round(dur / 3e3, 3), round(k / 3, 2)] for n, (k, dur) in sorted(tot.items(), key=lambda x: -x[1][1])],
}
json.dump(summary, open(out / "peer_kernels.json", "w"), indent=1)
print(json.dumps({k: v for k, v in summary.items() if k != "by_name"}), flush=True)
