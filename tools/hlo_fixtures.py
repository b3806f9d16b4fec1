"""Write the small real HLO programs tjx-metrics' roofline tests read (compiled without a device).

The unit tests of :mod:`tjx.metrics.roofline` run on CPU-only CI, so the optimized HLO of a few
tiny programs, compiled by XLA's real GPU and TPU compilers (deviceless), is committed beside
them. Regenerate after a jax upgrade, in an environment with the CUDA plugin (or libtpu) on the
path and ``JAX_PLATFORMS=cpu``::

    PYTHONPATH=<plugin dir>:... JAX_PLATFORMS=cpu python tools/hlo_fixtures.py cuda OUT_DIR
    PYTHONPATH=<libtpu dir>:... JAX_PLATFORMS=cpu python tools/hlo_fixtures.py tpu OUT_DIR

Each program's sizes are the constants below; the tests recompute their FLOPs and bytes from the
same constants (``tjx_metrics_tests/hlo_texts/README.md``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import topologies
from jax.sharding import NamedSharding, PartitionSpec

#: The scanned stack: LAYERS layers of [WIDTH, WIDTH] weights on [ROWS, WIDTH] activations.
LAYERS, WIDTH, ROWS = 6, 256, 8
#: Embedding lookup: VOCAB rows, TOKENS looked up.
VOCAB, TOKENS = 1024, 8
#: Attention: [BATCH, SEQ, HEADS, HEAD_DIM], causal, bf16.
BATCH, SEQ, HEADS, HEAD_DIM = 2, 128, 4, 64
#: Collectives over DEVICES devices, each holding a [CHUNK] float32 vector.
DEVICES, CHUNK = 8, 4096
#: The Pallas kernel's rows (8 per program).
PALLAS_ROWS = 32


def scan_program() -> tuple[Callable[..., Any], tuple[jax.ShapeDtypeStruct, ...]]:
    """grad of a scanned tanh MLP stack fed by an embedding lookup (bf16 weights)."""

    def loss(w: jax.Array, table: jax.Array, tokens: jax.Array) -> jax.Array:
        x = table[tokens]  # a gather: TOKENS rows of the table

        def layer(h: jax.Array, wi: jax.Array) -> tuple[jax.Array, None]:
            return jnp.tanh(h @ wi), None

        h, _ = jax.lax.scan(layer, x, w)
        return jnp.sum(h.astype(jnp.float32) ** 2)

    args = (
        jax.ShapeDtypeStruct((LAYERS, WIDTH, WIDTH), jnp.bfloat16),
        jax.ShapeDtypeStruct((VOCAB, WIDTH), jnp.bfloat16),
        jax.ShapeDtypeStruct((TOKENS,), jnp.int32),
    )
    return jax.grad(loss, argnums=(0, 1)), args


def attention_program() -> tuple[Callable[..., Any], tuple[jax.ShapeDtypeStruct, ...]]:
    """grad of cuDNN causal attention (GPU only)."""

    def loss(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
        out = jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn")
        return jnp.sum(out.astype(jnp.float32))

    qkv = jax.ShapeDtypeStruct((BATCH, SEQ, HEADS, HEAD_DIM), jnp.bfloat16)
    return jax.grad(loss, argnums=(0, 1, 2)), (qkv, qkv, qkv)


def pallas_program() -> tuple[Callable[..., Any], tuple[jax.ShapeDtypeStruct, ...]]:
    """A Pallas (Triton) kernel adding two [PALLAS_ROWS, 128] arrays, one 8-row block a program."""
    from jax.experimental import pallas as pl
    from jax.experimental.pallas import triton as plgpu

    def add(x_ref: Any, y_ref: Any, o_ref: Any) -> None:
        o_ref[...] = x_ref[...] + y_ref[...]

    def fn(x: jax.Array, y: jax.Array) -> jax.Array:
        block = pl.BlockSpec((8, 128), lambda i: (i, 0))
        return pl.pallas_call(
            add,
            out_shape=jax.ShapeDtypeStruct(x.shape, x.dtype),
            grid=(PALLAS_ROWS // 8,),
            in_specs=[block, block],
            out_specs=block,
            name="tiny_add",
            compiler_params=plgpu.CompilerParams(num_warps=4, num_stages=1),
        )(x, y)

    xy = jax.ShapeDtypeStruct((PALLAS_ROWS, 128), jnp.float32)
    return fn, (xy, xy)


def collectives_program(mesh: Any) -> tuple[Callable[..., Any], tuple[jax.ShapeDtypeStruct, ...]]:
    """One of each collective in a shard_map over ``DEVICES`` devices."""

    def body(x: jax.Array) -> tuple[jax.Array, ...]:
        summed = jax.lax.psum(x, "d")
        gathered = jax.lax.all_gather(x, "d", tiled=True)
        scattered = jax.lax.psum_scatter(x, "d", tiled=True)
        shifted = jax.lax.ppermute(x, "d", [(i, (i + 1) % DEVICES) for i in range(DEVICES)])
        return summed, gathered, scattered, shifted

    spec = PartitionSpec("d")
    fn = jax.shard_map(body, mesh=mesh, in_specs=spec, out_specs=(spec, spec, spec, spec))
    x = jax.ShapeDtypeStruct((DEVICES * CHUNK,), jnp.float32, sharding=NamedSharding(mesh, spec))
    return fn, (x,)


def _place(args: tuple[jax.ShapeDtypeStruct, ...], mesh: Any) -> tuple[Any, ...]:
    replicated = NamedSharding(mesh, PartitionSpec())
    return tuple(
        a if a.sharding is not None else jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=replicated)
        for a in args
    )


def _write(path: Path, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    text = jax.jit(fn).lower(*args).compile().as_text() or ""
    text = text.replace(str(Path(__file__).resolve()), "tools/hlo_fixtures.py")  # no local paths
    path.write_text(text)
    print(f"{path}: {len(text):,} characters", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("platform", choices=("cuda", "tpu"))
    parser.add_argument("out", type=Path)
    parser.add_argument("--gpu-target", type=Path, help="GpuTargetConfig text (cuda)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.platform == "cuda":
        from tjx.metrics.accelerators import accelerator, gpu_target_config

        config = gpu_target_config(accelerator("h100"))
        one = topologies.get_topology_desc(platform="cuda", target_config=config, topology="1x1x1")
        mesh = topologies.make_mesh(one, (1,), ("d",))
        fn, shapes = scan_program()
        _write(args.out / "h100_scan.hlo", fn, _place(shapes, mesh))
        fn, shapes = attention_program()
        _write(args.out / "h100_attention.hlo", fn, _place(shapes, mesh))
        fn, shapes = pallas_program()
        _write(args.out / "h100_pallas.hlo", fn, _place(shapes, mesh))
        eight = topologies.get_topology_desc(
            platform="cuda", target_config=config, topology=f"1x1x{DEVICES}"
        )
        mesh8 = topologies.make_mesh(eight, (DEVICES,), ("d",))
        fn, shapes = collectives_program(mesh8)
        _write(args.out / "h100x8_collectives.hlo", fn, shapes)
    else:
        slice_ = topologies.get_topology_desc(topology_name="v5e:2x2", platform="tpu")
        mesh = jax.sharding.Mesh([slice_.devices[0]], ("d",))
        fn, shapes = scan_program()
        _write(args.out / "v5e_scan.hlo", fn, _place(shapes, mesh))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
