"""Context parallelism on abstract H100s: ring against all-gather attention, compiled, no GPU.

For each (sequence, context, strategy) it compiles one causal attention layer's forward and
backward for ``context`` H100s with XLA's real GPU compiler (jax's CUDA plugin and
``jax.experimental.topologies``: deviceless) and reports, per device, XLA's compiled temporaries
(``memory_analysis()``, exact) and the collectives of the optimized HLO with the bytes each device
receives (a collective-permute's buffer, ``(C-1)/C`` of an all-gather's result, ``C-1`` times a
reduce-scatter's shard). ``--strategy none`` compiles the unsplit attention on one device.

Run (the plugin lives outside the project's resolve, e.g. a ``uv pip install --target`` of
``jax-cuda12-plugin[with_cuda]==0.10.2``)::

    PYTHONPATH=/path/to/cuda12:$PYTHONPATH JAX_PLATFORMS=cpu \\
      python packages/tjx-parallel/benchmarks/bench_context.py --target h100.txtpb \\
      --seq 32768 --context 2 4 8 --json out.jsonl

``--target`` is a ``GpuTargetConfig`` text proto of the GPU (an H100's is in the #42 notes).
"""

from __future__ import annotations

import argparse
import functools
import json
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.kernels import AttentionMask, attention, block_halves, target
from tjx.parallel import MESH_AXES, ContextParallel, rules

BYTES = {"bf16": 2, "f16": 2, "f32": 4, "s32": 4, "u32": 4, "pred": 1}
COLLECTIVE = re.compile(
    r"= (\w+)\[([\d,]*)\]\S* (all-gather|collective-permute|reduce-scatter|all-reduce|all-to-all)"
    r"(-done)?\("
)


def collectives(hlo: str, ways: int) -> dict[str, tuple[int, int]]:
    """kind → (count, bytes each device receives) of an optimized HLO module's collectives."""
    out: dict[str, tuple[int, int]] = {}
    for dtype, dims, kind, _ in COLLECTIVE.findall(hlo):
        size = BYTES[dtype]
        for d in filter(None, dims.split(",")):
            size *= int(d)
        received = {
            "collective-permute": size,
            "all-gather": size * (ways - 1) // ways,
            "reduce-scatter": size * (ways - 1),
            "all-reduce": 2 * size * (ways - 1) // ways,
            "all-to-all": size * (ways - 1) // ways,
        }[kind]
        count, total = out.get(kind, (0, 0))
        out[kind] = (count + 1, total + received)
    return out


def measure(topo: Any, seq: int, ways: int, strategy: str, impl: str) -> dict[str, Any]:
    """Compile one attention layer's forward + backward; its memory and collectives."""
    sizes = {"pipeline": 1, "data": 1, "fsdp": 1, "context": ways, "tensor": 1}
    shape = tuple(sizes[a] for a in MESH_AXES)
    mesh = Mesh(np.asarray(topo.devices[:ways]).reshape(shape), MESH_AXES)
    sharding = NamedSharding(mesh, PartitionSpec(None, "context"))
    q = jax.ShapeDtypeStruct((1, seq, 32, 128), jnp.bfloat16, sharding=sharding)
    kv = jax.ShapeDtypeStruct((1, seq, 8, 128), jnp.bfloat16, sharding=sharding)
    if strategy == "none":
        attend = functools.partial(
            attention, mask=AttentionMask(causal=True), implementation=impl  # type: ignore[arg-type]
        )
    else:
        cp = ContextParallel(mesh, rules("fsdp"), strategy)
        attend = functools.partial(
            cp.attention,
            causal=True,
            forward=block_halves(impl)[0],
            backward=block_halves(impl)[1],
        )

    def loss(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        return jnp.sum(attend(q, k, v).astype(jnp.float32) ** 2)

    with target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        traced = jax.jit(jax.grad(loss, (0, 1, 2))).trace(q, kv, kv)
        compiled = traced.lower(lowering_platforms=("cuda",)).compile()
    memory = compiled.memory_analysis()
    return {
        "seq": seq,
        "context": ways,
        "strategy": strategy,
        "impl": impl,
        "temp_mib": round(memory.temp_size_in_bytes / 2**20, 1),
        "collectives": {
            k: [n, round(b / 2**20, 1)]
            for k, (n, b) in collectives(compiled.as_text(), ways).items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", type=Path, required=True, help="GpuTargetConfig text proto")
    parser.add_argument("--seq", type=int, nargs="+", default=[32768])
    parser.add_argument("--context", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--strategy", nargs="+", default=["ring", "all_gather"])
    parser.add_argument("--impl", default="pallas", choices=("pallas", "xla"))
    parser.add_argument("--json", type=Path, help="append the rows here (JSON lines)")
    args = parser.parse_args(argv)
    topo = topologies.get_topology_desc(
        platform="cuda", target_config=args.target.read_text(), topology=f"1x1x{max(args.context)}"
    )
    print("| seq | context | strategy | collectives (count, MiB received) | temp MiB |")
    print("|---|---|---|---|---|")
    for seq in args.seq:
        for ways in args.context:
            for strategy in args.strategy:
                row = measure(topo, seq, 1 if strategy == "none" else ways, strategy, args.impl)
                print(f"| {seq} | {row['context']} | {strategy} | {row['collectives']} "
                      f"| {row['temp_mib']} |", flush=True)  # fmt: skip
                if args.json:
                    with args.json.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
