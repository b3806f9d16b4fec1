"""GPU time per step by kind of kernel, tjx (jax.profiler trace) beside nanoGPT (torch.profiler).

python3 categories.py PROFILES_DIR: the tjx traces under prof_* and peer_kernels.json.
"""
import collections, glob, gzip, json, re, sys

root = sys.argv[1]
RULES = [  # (category, regex on the kernel name), first match wins
    ("matmul (cuBLAS)", r"^nvjet|cublas|splitKreduce|gemm"),
    ("attention", r"flash|sdpa|cudnn|fmha"),
    ("optimizer + clip", r"multi_tensor_apply|FusedOpti"),
    ("loss (softmax, NLL)", r"log_softmax|nll_loss"),
    ("LayerNorm", r"layer_norm"),
    ("GELU", r"gelu"),
    ("memset/memcpy", r"^Memset|^memcpy|Memcpy"),
    ("reductions", r"reduce"),
    ("concatenate", r"concatenate|cat_"),
    ("casts", r"convert|_to_copy"),
    ("other elementwise", r"."),
]


def cat(name):
    for c, rx in RULES:
        if re.search(rx, name):
            return c


def table(pairs):
    t = collections.defaultdict(lambda: [0.0, 0.0])
    for name, ms, n in pairs:
        t[cat(name)][0] += ms
        t[cat(name)][1] += n
    return t


cols = {}
for d in sorted(glob.glob(f"{root}/prof_*")):
    f = glob.glob(f"{d}/**/*.trace.json.gz", recursive=True)[0]
    ev = json.load(gzip.open(f))["traceEvents"]
    pids = {e["pid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "process_name"}
    gpu = [e for e in ev if e.get("ph") == "X" and "/device:GPU" in pids.get(e.get("pid"), "")]
    cols[d.split("prof_head_")[-1]] = table((e["name"], e["dur"] / 3e3, 1 / 3) for e in gpu)
peer = json.load(open(f"{root}/peer_kernels.json"))
cols["nanoGPT"] = table(peer["by_name"])
names = list(cols)
print("| kernels | " + " | ".join(f"{n} ms (launches)" for n in names) + " |")
print("|---|" + "---|" * len(names))
for c, _ in RULES:
    print(f"| {c} | " + " | ".join(f"{cols[n][c][0]:.2f} ({cols[n][c][1]:.0f})" for n in names) + " |")
print("| **all** | " + " | ".join(f"**{sum(v[0] for v in cols[n].values()):.2f}** ({sum(v[1] for v in cols[n].values()):.0f})" for n in names) + " |")
