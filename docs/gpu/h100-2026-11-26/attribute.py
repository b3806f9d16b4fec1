"""Attribute a jax.profiler trace's GPU time to the source lines that made each kernel.

python3 attribute.py PROFILE_DIR HLO.txt.gz [DEPTH]: for each GPU kernel in the trace, the HLO
instruction of that name, its stack frame, and the innermost DEPTH tjx frames (file:function:line)
-> ms per step and launches per step, sorted.
"""
import collections, glob, gzip, json, re, sys

prof, hlo_path = sys.argv[1], sys.argv[2]
depth = int(sys.argv[3]) if len(sys.argv) > 3 else 1
text = gzip.open(hlo_path, "rt").read()
lines = text.splitlines()


def section(name, pat):
    out, on = {}, False
    for ln in lines:
        if ln == name:
            on = True
            continue
        if on:
            m = re.match(pat, ln)
            if not m:
                break
            out[int(m.group(1))] = m.groups()[1:]
    return out


files = {k: v[0] for k, v in section("FileNames", r'(\d+) "(.*)"').items()}
funcs = {k: v[0] for k, v in section("FunctionNames", r'(\d+) "(.*)"').items()}
locs = section("FileLocations", r"(\d+) \{file_name_id=(\d+) function_name_id=(\d+) line=(\d+)")
frames = section("StackFrames", r"(\d+) \{file_location_id=(\d+) parent_frame_id=(\d+)")


def where(fid):
    out = []
    while fid and fid in frames and len(out) < 12:
        loc, parent = frames[fid]
        f, fn, line = locs[int(loc)]
        path = files[int(f)]
        short = re.sub(r".*/(src/tjx|apps)/", "", path)
        if "/site-packages/" not in path and "steps.py" not in path:
            out.append(f"{short}:{funcs[int(fn)]}:{line}")
        nxt = int(parent)
        fid = None if nxt == fid else nxt
    return out[:depth]


inst = {}
for ln in lines:
    m = re.match(r"^\s+(?:ROOT )?%?([\w.\-]+) = ", ln)
    if not m:
        continue
    mm = re.search(r"metadata=\{([^}]*)\}", ln)
    name, meta = m.group(1), mm.group(1) if mm else ""
    sf = re.search(r"stack_frame_id=(\d+)", meta)
    op = re.search(r'op_name="([^"]*)"', meta)
    inst[name.replace(".", "_").replace("-", "_")] = (int(sf.group(1)) if sf else None, op.group(1) if op else "")

f = glob.glob(f"{prof}/**/*.trace.json.gz", recursive=True)[0]
ev = json.load(gzip.open(f))["traceEvents"]
pids = {e["pid"]: e["args"]["name"] for e in ev if e.get("ph") == "M" and e.get("name") == "process_name"}
gpu = [e for e in ev if e.get("ph") == "X" and "/device:GPU" in pids.get(e.get("pid"), "")]
tot = collections.defaultdict(lambda: [0, 0.0, collections.Counter()])
for e in gpu:
    n = e["name"]
    hop = e.get("args", {}).get("hlo_op", "").replace(".", "_").replace("-", "_")
    look = hop if hop in inst and not hop.startswith("command_buffer") else n
    sf, op = inst.get(look, (None, ""))
    src = " < ".join(where(sf)) if sf else f"(no frame) {op[-60:]}"
    kind = re.sub(r"_\d+$", "", n)
    k = (src,)
    tot[k][0] += 1
    tot[k][1] += e["dur"]
    tot[k][2][kind] += e["dur"]
allms = sum(v[1] for v in tot.values()) / 3e3
print(f"GPU busy {allms:.2f} ms/step, {len(gpu)/3:.0f} kernels/step")
for k, (c, d, kinds) in sorted(tot.items(), key=lambda x: -x[1][1]):
    top = ", ".join(f"{n} {t/3e3:.2f}" for n, t in kinds.most_common(3))
    print(f"{d/3e3:7.3f} ms {c/3:6.1f}  {k[0][:150]}  [{top}]")
