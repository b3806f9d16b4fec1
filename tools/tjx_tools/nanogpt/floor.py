"""How fast XLA:CPU runs the matrix products of a side-by-side shape's train step, one by one.

Every matmul of a GPT-2 train step is listed with its shape (forward and both backward products of
each dense layer, the six products of attention), each is timed on its own, jitted, on fresh random
inputs, and the times are added up. The per-product rates show which products XLA:CPU runs slowly
(attention's small batched ones); the sum leaves out every elementwise pass, reduction, transpose
and the optimizer. It is an estimate, not a strict bound: each timed call pays one dispatch, and in
a real step XLA may fuse a product with its neighbours. `where.py` measures the real step's matmul
time from a profile.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from experiments.nanogpt.side_by_side import Shape


@dataclass(frozen=True)
class Product:
    """One matmul of the step: an einsum over operands of the given shapes, ``count`` times."""

    name: str
    spec: str
    shapes: tuple[tuple[int, ...], tuple[int, ...]]
    count: int

    @property
    def flops(self) -> int:
        """2 x multiply-adds of one product (every index of the einsum, once)."""
        ins, _ = self.spec.split("->")
        sizes: dict[str, int] = {}
        for letters, shape in zip(ins.split(","), self.shapes, strict=True):
            sizes.update(zip(letters, shape, strict=True))
        total = 2
        for size in sizes.values():
            total *= size
        return total


def dense_products(name: str, rows: int, d_in: int, d_out: int, count: int) -> list[Product]:
    """``y = x W`` and its two backward products (``dx = dy Wᵀ``, ``dW = xᵀ dy``)."""
    x, w, y = (rows, d_in), (d_in, d_out), (rows, d_out)
    return [
        Product(f"{name} forward", "td,df->tf", (x, w), count),
        Product(f"{name} dx", "tf,df->td", (y, w), count),
        Product(f"{name} dW", "td,tf->df", (x, y), count),
    ]


def attention_products(
    batch: int, heads: int, seq: int, head_dim: int, count: int
) -> list[Product]:
    """The six attention products in the layout XLA:CPU runs fastest (heads before positions)."""
    q, p = (batch, heads, seq, head_dim), (batch, heads, seq, seq)
    return [
        Product("scores q kᵀ", "bhqd,bhkd->bhqk", (q, q), count),
        Product("mix p v", "bhqk,bhkd->bhqd", (p, q), count),
        Product("d scores do vᵀ", "bhqd,bhkd->bhqk", (q, q), count),
        Product("dv pᵀ do", "bhqk,bhqd->bhkd", (p, q), count),
        Product("dq ds k", "bhqk,bhkd->bhqd", (p, q), count),
        Product("dk dsᵀ q", "bhqk,bhqd->bhkd", (p, q), count),
    ]


def step_products(shape: Shape) -> list[Product]:
    """Every matmul of one GPT-2 train step of ``shape`` (the LM head tied or not: same FLOPs)."""
    rows, d, layers = shape.batch * shape.seq, shape.d, shape.layers
    return [
        *dense_products("qkv", rows, d, 3 * d, layers),
        *dense_products("attention out", rows, d, d, layers),
        *dense_products("mlp in", rows, d, shape.mlp, layers),
        *dense_products("mlp out", rows, shape.mlp, d, layers),
        *dense_products("lm head", rows, d, shape.vocab, 1),
        *attention_products(shape.batch, shape.heads, shape.seq, d // shape.heads, layers),
    ]


def median_seconds(fn: Callable[..., Any], args: tuple[Any, ...], repeats: int) -> float:
    """Median wall time of ``fn(*args)`` after one warm-up call (compile)."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_floor(shape: Shape, *, repeats: int = 20, seed: int = 0) -> dict[str, Any]:
    """Time each of the step's products alone; their sum is the step's matmul floor.

    Returns
    -------
    dict
        ``products``: name, count, GFLOP and seconds of one, GFLOP/s; ``flops``: the step's
        matmul FLOPs; ``floor_s``: the sum of count x seconds.
    """
    key = jax.random.key(seed)
    rows, total_s, total_flops = [], 0.0, 0
    for product in step_products(shape):
        key, k1, k2 = jax.random.split(key, 3)
        args = (
            jax.random.normal(k1, product.shapes[0], jnp.float32),
            jax.random.normal(k2, product.shapes[1], jnp.float32),
        )
        fn = jax.jit(lambda a, b, spec=product.spec: jnp.einsum(spec, a, b))
        seconds = median_seconds(fn, args, repeats)
        total_s += product.count * seconds
        total_flops += product.count * product.flops
        rows.append(
            {
                "name": product.name,
                "count": product.count,
                "gflop": product.flops / 1e9,
                "seconds": seconds,
                "gflop_per_s": product.flops / seconds / 1e9,
            }
        )
    return {"shape": shape.name, "products": rows, "flops": total_flops, "floor_s": total_s}
