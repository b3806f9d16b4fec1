"""Pipeline parallelism: bubble fraction and compiled peak memory per stage.

1. Bubble: for each schedule, stage count S and microbatch count M, the share of idle
   (tick, stage) slots of the schedule the compiled program executes (``Schedule.ops`` is the
   table the program's ``lax.switch`` reads), against the formula ``(S-1)/(M+S-1)``.
2. Memory: XLA's ``compiled.memory_analysis()`` of one gradient step (loss + grads) of a residual
   MLP stack (8 layers, d_model 256, MLP 1024, 16 rows x 128 tokens): the unpipelined step on one
   device (plain, and with each layer rematerialised) against one stage of the pipelined step
   (per-device figures: temporaries + arguments + outputs).

3. ``--timed``: wall time of the pipelined gradient step with S stages on S devices at a fixed
   microbatch size (2 rows) for M = 1…16 microbatches, medians of ``--reps`` steps. A pipeline
   step takes ``(M+S-1)`` ticks, so ``T(M) = t_tick * (M+S-1)``: the least-squares line
   ``T = a + b*M`` gives the per-microbatch time ``b``, and the measured bubble is
   ``1 - b*M / T(M)`` (the share of the step not spent on microbatch work), against the formula.
   On a CPU the simulated devices share the cores and the step carries fixed costs (dispatch,
   ``ppermute``), so this measures the harness as much as the schedule; on S GPUs it is the real
   bubble.

Run: ``XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu python
packages/tjx-parallel/benchmarks/bench_pipeline.py [--timed]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from tjx.parallel import (
    SCHEDULES,
    MeshConfig,
    bubble_formula,
    make_mesh,
    make_schedule,
    pipeline_loss,
)

LAYERS, D, MLP, ROWS, SEQ = 8, 256, 1024, 16, 128


def layer(p: dict[str, jax.Array], h: jax.Array, side: Any) -> jax.Array:
    del side
    return h + jnp.tanh(h @ p["w1"]) @ p["w2"]


def head(hp: dict[str, jax.Array], h: jax.Array, hs: dict[str, jax.Array]) -> Any:
    return jnp.sum((h @ hp["u"] - hs["y"]) ** 2) / (ROWS * SEQ), {}


def params() -> tuple[Any, Any, jax.Array, Any]:
    k = jax.random.split(jax.random.key(0), 5)
    sp = {
        "w1": jax.random.normal(k[0], (LAYERS, D, MLP)) / 16,
        "w2": jax.random.normal(k[1], (LAYERS, MLP, D)) / 32,
    }
    hp = {"u": jax.random.normal(k[2], (D, 8))}
    x = jax.random.normal(k[3], (ROWS, SEQ, D))
    hs = {"y": jax.random.normal(k[4], (ROWS, SEQ, 8))}
    return sp, hp, x, hs


def mib(stats: Any) -> tuple[float, float]:
    """(temporaries, temporaries + arguments + outputs) in MiB, one device."""
    temp = stats.temp_size_in_bytes
    total = temp + stats.argument_size_in_bytes + stats.output_size_in_bytes
    return temp / 2**20, total / 2**20


def plain_memory(remat: bool) -> tuple[float, float]:
    sp, hp, x, hs = params()
    fn = jax.checkpoint(layer) if remat else layer

    def loss(sp: Any, hp: Any, x: jax.Array) -> jax.Array:
        h = lax.scan(lambda h, p: (fn(p, h, None), None), x, sp)[0]
        return head(hp, h, hs)[0]  # type: ignore[no-any-return]

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))  # one device: no mesh
    return mib(step.lower(sp, hp, x).compile().memory_analysis())


def pipeline_memory(stages: int, micro: int, schedule: str) -> tuple[float, float]:
    sp, hp, x, hs = params()
    mesh = make_mesh(MeshConfig(data=1, pipeline=stages), devices=jax.devices()[:stages])
    run = pipeline_loss(layer, head, mesh, microbatches=micro, schedule=schedule)

    def loss(sp: Any, hp: Any, x: jax.Array) -> jax.Array:
        return run(sp, hp, x, {}, hs)[0]  # type: ignore[no-any-return]

    step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2)))
    return mib(step.lower(sp, hp, x).compile().memory_analysis())


def timed_bubble(stages: int, schedule: str, micros: list[int], reps: int) -> list[str]:
    """Rows of the measured-bubble table (see the module docstring, point 3)."""
    sp, hp, _, _ = params()
    mesh = make_mesh(MeshConfig(data=1, pipeline=stages), devices=jax.devices()[:stages])
    seconds = []
    for m in micros:
        rows = 2 * m  # a fixed microbatch of 2 rows: the work per microbatch stays the same
        k = jax.random.split(jax.random.key(m), 2)
        x = jax.random.normal(k[0], (rows, SEQ, D))
        hs = {"y": jax.random.normal(k[1], (rows, SEQ, 8))}
        run = pipeline_loss(layer, head, mesh, microbatches=m, schedule=schedule)
        step = jax.jit(jax.grad(lambda sp, x: run(sp, hp, x, {}, hs)[0]))  # noqa: B023
        jax.block_until_ready(step(sp, x))  # compile
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            jax.block_until_ready(step(sp, x))
            times.append(time.perf_counter() - t0)
        seconds.append(statistics.median(times))
    n = len(micros)
    mean_m, mean_t = sum(micros) / n, sum(seconds) / n
    slope = sum((m - mean_m) * (t - mean_t) for m, t in zip(micros, seconds, strict=True))
    slope /= sum((m - mean_m) ** 2 for m in micros)
    return [
        f"| {schedule} | {stages} | {m} | {t * 1e3:.1f} | {1 - slope * m / t:.3f} | "
        f"{bubble_formula(stages, m):.3f} |"
        for m, t in zip(micros, seconds, strict=True)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stages", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--microbatches", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--timed", action="store_true", help="also the wall-clock bubble")
    parser.add_argument("--reps", type=int, default=10)
    args = parser.parse_args()
    print("| schedule | S | M | ticks | bubble (executed table) | (S-1)/(M+S-1) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in SCHEDULES:
        for s in args.stages:
            for m in args.microbatches:
                sched = make_schedule(name, s, m)
                print(
                    f"| {name} | {s} | {m} | {sched.ticks} | {sched.bubble_fraction():.4f} | "
                    f"{bubble_formula(s, m):.4f} |"
                )
    print()
    print("| step | S | M | stage inputs kept | temp MiB | temp+args+out MiB |")
    print("|---|---:|---:|---:|---:|---:|")
    for remat in (False, True):
        temp, total = plain_memory(remat)
        label = "unpipelined" + (", remat per layer" if remat else "")
        print(f"| {label} | 1 | 1 | – | {temp:.1f} | {total:.1f} |")
    for s in args.stages:
        for m in args.microbatches:
            if m < s:
                continue
            for name in SCHEDULES:
                temp, total = pipeline_memory(s, m, name)
                kept = make_schedule(name, s, m).slots
                print(f"| {name} | {s} | {m} | {kept} | {temp:.1f} | {total:.1f} |")
    if args.timed:
        print()
        print("| schedule | S | M | step ms | bubble (measured) | (S-1)/(M+S-1) |")
        print("|---|---:|---:|---:|---:|---:|")
        for s in args.stages:
            for name in SCHEDULES:
                micros = [m for m in args.microbatches if m >= s]
                print("\n".join(timed_bubble(s, name, micros, args.reps)), flush=True)


if __name__ == "__main__":
    main()
