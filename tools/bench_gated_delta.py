"""The gated delta rule against causal attention on an abstract H100 (a deviceless compile).

Issue #56 asks for a Pallas kernel of the gated delta rule only if it wins in the H100 compile's
estimate. This tool compiles, for one Qwen3-Next-80B-A3B layer's shapes, the forward and backward
of (a) tjx.kernels' chunked ``gated_delta_rule`` (the linear-attention layers' core), once per
``--implementations`` entry (``xla``: the scan across chunks; ``pallas``: the Triton kernels,
lowered by jaxlib's Triton in the compile and priced by ``tjx.kernels.costs``), and (b)
tjx.kernels' ``attention``, causal, as ``auto`` resolves it there (cuDNN; the full-attention
layers' core, the baseline), with XLA's real GPU compiler (jax's CUDA plugin, no GPU), and
prices both with tjx-metrics' calibrated estimate (the per-kernel roofline plus the launch floors
and achieved rates measured on the H100 of 2026-11-25). It prints each one's estimated time,
bytes moved, kernel launches and XLA's temporary memory, and each rule's ratio to attention.
**Estimates, not measurements.**

    source tools/pythonpath.sh
    PYTHONPATH="$(tjx_pythonpath $PWD):$HOME/.cache/tjx/deviceless/jax0.10.2-cuda12" \\
        JAX_PLATFORMS=cpu python tools/bench_gated_delta.py [--seq 4096] [--batch 2] \\
        [--chunk 64|128] [--implementations xla,pallas]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from tjx import kernels, metrics, parallel
from trainer import open_target

#: Qwen3-Next-80B-A3B: linear attention 16 key heads, 32 value heads of 128. Its full attention
#: has 16 query heads of 256 (2 key/value heads); jax's cuDNN attention takes heads of at most 128,
#: so the baseline is the same width as 32 heads of 128 (4 key/value heads): the same FLOPs.
DELTA = {"k_heads": 16, "v_heads": 32, "dk": 128, "dv": 128}
ATTENTION = {"heads": 32, "kv_heads": 4, "head_dim": 128}


def _compiled(fn: Callable[..., jax.Array], shapes: list[tuple[int, ...]], device: Any) -> Any:
    """``fn``'s forward and backward (the gradient of the sum of its output) compiled."""
    sharding = jax.sharding.SingleDeviceSharding(device)
    args = [jax.ShapeDtypeStruct(s, jnp.bfloat16, sharding=sharding) for s in shapes]

    def loss(*xs: jax.Array) -> jax.Array:
        return jnp.sum(fn(*xs).astype(jnp.float32))

    grad = jax.jit(jax.grad(loss, argnums=tuple(range(len(shapes)))))
    return grad.lower(*args).compile()


def _priced(name: str, compiled: Any, target: Any, tokens: int) -> dict[str, Any]:
    lines: list[str] = []
    device = target.device
    cost = kernels.roofline_costs(
        causal=True, device_kind=device.device_kind, compute_capability=device.compute_capability
    )
    est = metrics.estimate(compiled.as_text(), device, 1, units=tokens, unit="tokens",
                           model_flops=(1.0, 1.0), say=lines.append,
                           custom_call_cost=cost)  # fmt: skip
    temp = compiled.memory_analysis().temp_size_in_bytes
    row = {"name": name, "ms": est["seconds"] * 1e3, "gb_moved": est["bytes"] / 1e9,
           "launches": est["launches"], "temp_gib": temp / 2**30, "label": est["label"],
           "custom_calls": est["custom_calls"]}  # fmt: skip
    print(f"{name}: {row['ms']:.3f} ms ({est['label']}), {row['gb_moved']:.2f} GB moved, "
          f"{row['launches']} launches, {row['temp_gib']:.2f} GiB temporaries, custom calls "
          f"{est['custom_calls'] or 'none'}")  # fmt: skip
    return row


def main(argv: list[str] | None = None) -> int:
    """Compile both cores for an abstract H100, price them and print their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=64, help="the rule's chunk size")
    parser.add_argument(
        "--implementations",
        default="xla,pallas",
        help="the rule's implementations to price, comma-separated",
    )
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    target = open_target("h100", parallel.abstract_devices)
    device = target.devices[0]
    b, s, d = args.batch, args.seq, DELTA
    tokens = b * s
    with kernels.target(*target.kernel_target):

        def delta(impl: str) -> Callable[..., jax.Array]:
            def run(q: jax.Array, k: jax.Array, v: jax.Array, g: jax.Array, beta: jax.Array) -> Any:
                reps = d["v_heads"] // d["k_heads"]
                q, k = jnp.repeat(q, reps, axis=2), jnp.repeat(k, reps, axis=2)
                g = -jax.nn.softplus(g.astype(jnp.float32))  # a log-decay, as the layer makes it
                beta = jax.nn.sigmoid(beta.astype(jnp.float32))
                return kernels.gated_delta_rule(
                    q, k, v, g, beta, chunk_size=args.chunk, implementation=impl
                )[0]

            return run

        qk = (b, s, d["k_heads"], d["dk"])
        rows = [_priced(
            f"gated delta rule, {impl} (chunk {args.chunk}, {d['v_heads']} heads of {d['dv']})",
            _compiled(delta(impl), [qk, qk, (b, s, d["v_heads"], d["dv"]), (b, s, d["v_heads"]),
                                    (b, s, d["v_heads"])], device),
            target, tokens) for impl in args.implementations.split(",")]  # fmt: skip
        a = ATTENTION

        def attend(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
            return kernels.attention(q, k, v, mask=kernels.AttentionMask(causal=True))

        kv = (b, s, a["kv_heads"], a["head_dim"])
        rows.append(_priced(
            f"causal attention ({a['heads']} heads of {a['head_dim']}, {a['kv_heads']} kv heads)",
            _compiled(attend, [(b, s, a["heads"], a["head_dim"]), kv, kv], device),
            target, tokens))  # fmt: skip
    for row in rows[:-1]:
        row["vs_attention"] = row["ms"] / rows[-1]["ms"]
        print(f"{row['name']} / attention: {row['vs_attention']:.2f}× the time "
              f"(estimates, H100, {b} × {s} tokens, forward and backward)")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "batch": b, "seq": s}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
