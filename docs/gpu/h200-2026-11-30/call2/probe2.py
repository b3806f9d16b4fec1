"""Second device call, session 36: why tokamax's attention autotune fails (full traceback), and
tokamax's attention without autotune at the two cells."""
import json, os, sys, time, traceback
from pathlib import Path
sys.path.insert(0, "tools")
import jax, jax.numpy as jnp
out = Path(os.environ.get("OUT", "/tmp"))
from tjx.kernels import AttentionMask, attention, resolve_attention
from tjx.kernels.tokamax_ops import load
print("jax", jax.__version__, jax.devices(), flush=True)
t0 = time.perf_counter()
b, s, h, d = 16, 1024, 32, 64
keys = jax.random.split(jax.random.key(0), 3)
q, k, v = (jax.random.normal(kk, (b, s, h, d), jnp.bfloat16) for kk in keys)
chosen = resolve_attention("tokamax", jnp.bfloat16, d)
def run(q, k, v):
    return attention(q, k, v, AttentionMask(causal=True), implementation=chosen)
def fwd_bwd(q, k, v):
    o, vjp = jax.vjp(run, q, k, v)
    return vjp(o)
try:
    res = load().autotune(jax.jit(fwd_bwd), q, k, v, progress_bar=False)
    print("autotune ok", time.perf_counter() - t0, flush=True)
except BaseException as exc:
    text = "".join(traceback.format_exception(exc))
    c = exc
    while c is not None:
        print("CHAIN", type(c).__name__, str(c)[:6000], flush=True)
        c = c.__cause__ or c.__context__
    (out / "autotune_tb.txt").write_text(text)
    print(text[-8000:], flush=True)
print("t", time.perf_counter() - t0, flush=True)
import tokamax_gpu
rows = tokamax_gpu.measure_cells(kernels=("tokamax", "cudnn"), batch=8, heads=16, autotune=False)
(out / "noautotune.json").write_text(json.dumps(rows, indent=1))
for r in rows:
    print(r["seq"], r["head_dim"], r["impl"], r["error"], r.get("fwd_ms"), r.get("fwd_bwd_ms"), r.get("max_rel_err"), flush=True)
print("t", time.perf_counter() - t0, flush=True)
