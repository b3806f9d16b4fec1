"""MoE on abstract H100s (deviceless compiles: XLA's real GPU compiler, no GPU), two questions:

    PYTHONPATH=/root/.cache/tjx/deviceless/cuda12:$PYTHONPATH JAX_PLATFORMS=cpu \\
        python tools/bench_moe.py [--json out.json]

* ``layer``: one Mixtral-shaped MoE layer (d 4096, expert width 14336, 8 experts, top-2, 8192
  tokens, bf16), forward + backward, by each path of ``tjx.nn.moe.dispatch``: dropless
  (tokens sorted by expert, ``jax.lax.ragged_dot``) and capacity (``[b, E, C, d]`` slots, one
  batched matmul per projection, factor 1.25). Reported: XLA's temporary bytes
  (``memory_analysis``, exact), the matmul FLOPs the compiled program contains against the
  FLOPs the layer needs (``6·k·tokens·3·d·f``), and an **estimated** time: a per-instruction
  roofline over the optimized HLO (max of FLOPs / 989 TFLOP/s and bytes moved / 3.35 TB/s per
  fusion, while-loop bodies times their trip count). The estimate counts each fusion's operands
  and result once (a gather or dynamic slice: the slice it reads); it is crude, not a profile.
* ``ep``: a 2-layer MoE decoder's train-step gradient on 8 abstract H100s with ``expert=4``:
  the collectives the compiled program contains, per path (``tjx.parallel.expert_parallel``).

A CUDA plugin for jax is needed (``jax_cuda12_plugin``; see the brief for a ``--target``
install); nothing runs on a device.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections import Counter
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec

#: A GpuTargetConfig textproto of an H100 SXM (trimmed; what the CUDA plugin compiles for).
H100 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "h100.txtpb")
PEAK, BANDWIDTH = 989e12, 3.35e12  # bf16 dense FLOP/s, HBM bytes/s of an H100 SXM
_BYTES = {"bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "pred": 1, "s8": 1, "u8": 1}
_SHAPE = re.compile(r"\b(bf16|f16|f32|s32|u32|pred|s8|u8)\[([0-9,]*)\]")
DUMP = ""  # --dump: a folder for the optimized HLO of each case
_SKIP = {"parameter", "constant", "bitcast", "get-tuple-element", "tuple"}


def _find(pattern: str, text: str) -> str:
    """The first group of ``pattern`` in ``text`` ("" when absent)."""
    m = re.search(pattern, text)
    return m.group(1) if m else ""


def _dims(shape: str) -> list[int]:
    m = _SHAPE.search(shape)
    return [int(d) for d in m.group(2).split(",") if d] if m else []


def _nbytes(text: str) -> int:
    return sum(
        _BYTES[t] * math.prod(int(d) for d in dims.split(",") if d)
        for t, dims in _SHAPE.findall(text)
    )


def roofline(hlo: str) -> dict[str, float]:
    """Estimated time, matmul FLOPs and bytes of an optimized HLO module (see the docstring)."""
    comps: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in hlo.splitlines():
        head = re.match(r"^(ENTRY )?%([\w.\-]+) \(.*\{\s*$", line)
        if head:
            current = comps.setdefault("ENTRY" if head.group(1) else head.group(2), [])
        elif current is not None and line.strip() not in ("", "}"):
            current.append(line.strip())
    types = {}
    for lines in comps.values():
        for line in lines:
            m = re.match(r"(?:ROOT )?%([\w.\-]+) = (\S+)", line)
            if m:
                types[m.group(1)] = m.group(2)

    def dot_flops(name: str) -> int:
        total = 0
        for line in comps.get(name, []):
            m = re.match(r"(?:ROOT )?%[\w.\-]+ = (\S+) dot\(%([\w.\-]+),", line)
            if m:
                lhs = _dims(types[m.group(2)])
                dims = _find(r"lhs_contracting_dims=\{([0-9,]*)\}", line)
                contracted = [lhs[int(i)] for i in dims.split(",") if i]
                total += 2 * math.prod(_dims(m.group(1))) * math.prod(contracted)
            for callee in re.findall(r"calls=%([\w.\-]+)", line):
                total += dot_flops(callee)
        return total

    totals = {"time_ms": 0.0, "tflop": 0.0, "gbytes": 0.0}

    def walk(name: str, times: int) -> None:
        for line in comps.get(name, []):
            m = re.match(r"(?:ROOT )?%[\w.\-]+ = (.*?) ([\w\-]+)\((.*)", line)
            if not m or m.group(2) in _SKIP:
                continue
            op, args = m.group(2), re.findall(r"%([\w.\-]+)", m.group(3).split("),")[0])
            if op == "while":
                trips = _find(r'"known_trip_count":\{"n":"(\d+)"', line) or "1"
                walk(_find(r"body=%([\w.\-]+)", line), times * int(trips))
                continue
            callee = _find(r"calls=%([\w.\-]+)", line)
            flops = dot_flops(callee) if callee else 0
            root = ""
            if op == "fusion":
                root = next((x for x in comps.get(callee, []) if x.startswith("ROOT")), "")
            if op == "dynamic-update-slice" or " dynamic-update-slice(" in root:
                moved = 2 * sum(_nbytes(types.get(a, "")) for a in args[1:])  # in place
            elif (
                op in ("dynamic-slice", "gather") or " dynamic-slice(" in root or " gather(" in root
            ):
                moved = 2 * _nbytes(m.group(1))  # reads only the slice
            else:
                moved = _nbytes(m.group(1)) + sum(_nbytes(types.get(a, "")) for a in args)
            totals["time_ms"] += times * 1e3 * max(flops / PEAK, moved / BANDWIDTH)
            totals["tflop"] += times * flops / 1e12
            totals["gbytes"] += times * moved / 1e9

    walk("ENTRY", 1)
    return totals


def _topology(devices: int) -> Any:
    with open(H100) as fh:
        text = fh.read()
    return topologies.get_topology_desc(
        platform="cuda", target_config=text, topology=f"1x1x{devices}"
    )


def layer(tokens: int = 8192, d: int = 4096, f: int = 14336, experts: int = 8, k: int = 2) -> dict:
    """Forward + backward of one MoE layer's routed experts by each path (see the docstring)."""
    from tjx.nn import moe_dispatch as md
    from tjx.nn.moe.config import expert_capacity

    mesh = topologies.make_mesh(_topology(1), (1,), ("x",))
    rep = NamedSharding(mesh, PartitionSpec())

    def spec(shape: tuple[int, ...], dtype: Any = jnp.bfloat16) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, dtype, sharding=rep)

    ffn = md.FFN(jax.nn.silu, True, jnp.bfloat16)
    seq = 2048
    slots = expert_capacity(1.25, seq, k, experts)

    def run(path: str, x: Any, e: Any, g: Any, w: Any) -> Any:
        if path == "dropless":
            return md.dropless(x, e, g, w, ffn)
        y, _ = md.capacity(
            x.reshape(-1, seq, d), e.reshape(-1, seq, k), g.reshape(-1, seq, k), w, ffn, slots
        )
        return y

    out = {}
    need = 6 * k * tokens * 3 * d * f / 1e12
    for path in ("dropless", "capacity"):

        def loss(x: Any, w: Any, e: Any, g: Any, path: str = path) -> Any:
            return jnp.sum(jnp.square(run(path, x, e, g, w).astype(jnp.float32)))

        args = (
            spec((tokens, d)),
            md.ExpertWeights(
                spec((experts, d, f)),
                spec((experts, d, f)),
                spec((experts, f, d)),
                None,
                None,
                None,
            ),
            spec((tokens, k), jnp.int32),
            spec((tokens, k), jnp.float32),
        )
        compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(*args).compile()
        hlo = str(compiled.as_text())
        est = roofline(hlo)
        if DUMP:
            with open(f"{DUMP}/layer-{path}.hlo", "w") as fh:
                fh.write(hlo)
        out[path] = {
            "temp_gib": compiled.memory_analysis().temp_size_in_bytes / 2**30,  # type: ignore[union-attr]
            "matmul_tflop": est["tflop"],
            "needed_tflop": need * (1.25 if path == "capacity" else 1.0),
            "estimated_ms": est["time_ms"],
        }
    return out


def ep() -> dict:
    """The collectives of an expert-parallel train-step gradient on 8 abstract H100s."""
    from flax import nnx

    from tjx import nn as tnn
    from tjx import parallel

    mesh = parallel.make_mesh(parallel.MeshConfig(data=-1, expert=4), _topology(8).devices)
    rules = parallel.rules("dp")
    out = {}
    for path, factor in (("dropless", None), ("capacity", 1.25)):
        cfg = tnn.LlamaConfig(
            vocab_size=1024, max_seq_len=256, d_model=256, num_layers=2, num_heads=4,
            moe=tnn.MoEConfig(num_experts=8, experts_per_token=2, expert_mlp_dim=512,
                              capacity_factor=factor),
            scan_layers=True, precision=tnn.Precision.bf16(),
        )  # fmt: skip
        abstract = nnx.eval_shape(lambda cfg=cfg: tnn.build_model(cfg, rngs=nnx.Rngs(0)))
        graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)  # type: ignore[misc]
        shard = parallel.state_shardings(params, mesh, rules)
        params = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), params, shard
        )
        rest = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(
                a.shape, a.dtype, sharding=NamedSharding(mesh, PartitionSpec())
            ),
            rest,
        )
        rows = jax.ShapeDtypeStruct((16, 256), jnp.int32, sharding=parallel.batch_sharding(mesh, 2))
        batch = {"inputs": rows, "targets": rows}
        plan = parallel.expert_parallel(mesh, rules)

        def loss(p: Any, r: Any, b: Any, plan: Any = plan, graphdef: Any = graphdef) -> Any:
            with tnn.expert_parallel_scope(plan):
                return tnn.objective_loss(nnx.merge(graphdef, p, r), b).loss

        hlo = str(jax.jit(jax.grad(loss)).lower(params, rest, batch).compile().as_text())
        ops = re.findall(
            r"\b(ragged-all-to-all|all-to-all|all-gather|all-reduce|reduce-scatter|collective-permute)(?:-start)?\(",
            hlo,
        )
        out[path] = dict(Counter(ops))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--dump", default="", help="a folder for the compiled programs' HLO")
    args = parser.parse_args()
    global DUMP
    DUMP = args.dump
    results = {"layer": layer(), "ep": ep()}
    print(json.dumps(results, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
