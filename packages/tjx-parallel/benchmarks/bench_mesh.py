"""Step time of a small transformer-like MLP stack on 1/2/4/8 devices under dp, fsdp and fsdp_tp.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 JAX_PLATFORMS=cpu \
        python packages/tjx-parallel/benchmarks/bench_mesh.py

On CPU the "devices" are threads of one process sharing the same cores, so the table shows the
overhead of partitioning and collectives, not a speed-up. On GPUs the same script measures real
scaling.
"""

from __future__ import annotations

import argparse
import datetime
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import P

from tjx.parallel import (
    MeshConfig,
    batch_sharding,
    jit_train_step,
    make_mesh,
    rules,
    shard_batch,
    state_shardings,
)

PARAM_SPECS = {
    "embed": P("vocab", "embed"),
    "layers": [{"w1": P("embed", "mlp"), "w2": P("mlp", "embed")}],
    "unembed": P("embed", "vocab"),
}


def init(key: jax.Array, vocab: int, d: int, layers: int) -> dict[str, Any]:
    keys = jax.random.split(key, 2 * layers + 2)
    normal = jax.random.normal
    return {
        "embed": normal(keys[0], (vocab, d)) * 0.02,
        "layers": [
            {
                "w1": normal(keys[2 * i + 2], (d, 4 * d)) * d**-0.5,
                "w2": normal(keys[2 * i + 3], (4 * d, d)) * (4 * d) ** -0.5,
            }
            for i in range(layers)
        ],
        "unembed": normal(keys[1], (d, vocab)) * d**-0.5,
    }


def loss_fn(params: dict[str, Any], tokens: jax.Array) -> jax.Array:
    x = params["embed"][tokens[:, :-1]]
    for layer in params["layers"]:
        x = x + jax.nn.gelu(x @ layer["w1"]) @ layer["w2"]
    logits = x @ params["unembed"]
    labels = tokens[:, 1:]
    logp = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def sgd_step(state: dict[str, Any], tokens: jax.Array) -> tuple[dict[str, Any], jax.Array]:
    loss, grads = jax.value_and_grad(loss_fn)(state["params"], tokens)
    mom = jax.tree.map(lambda m, g: 0.9 * m + g, state["mom"], grads)
    params = jax.tree.map(lambda p, m: p - 1e-2 * m, state["params"], mom)
    return {"params": params, "mom": mom}, loss


def prepare(n: int, strategy: str, args: argparse.Namespace) -> Callable[[], float]:
    """Compile and warm up one (devices, strategy) case; return a function timing one step."""
    tensor = 2 if strategy.endswith("tp") and n >= 2 else 1
    fsdp = n // tensor if strategy.startswith("fsdp") else 1
    mesh = make_mesh(MeshConfig(data=-1, fsdp=fsdp, tensor=tensor), jax.devices()[:n])
    axis_rules = rules(strategy)
    specs = {**PARAM_SPECS, "layers": PARAM_SPECS["layers"] * args.layers}

    def create() -> dict[str, Any]:
        params = init(jax.random.key(0), args.vocab, args.d_model, args.layers)
        return {"params": params, "mom": jax.tree.map(jnp.zeros_like, params)}

    sh = state_shardings(jax.eval_shape(create), mesh, axis_rules, param_specs=specs)
    state = jax.jit(create, out_shardings=sh)()
    step = jit_train_step(sgd_step, (sh, batch_sharding(mesh)), (sh, None), donate_argnums=0)
    tokens = jax.random.randint(jax.random.key(1), (args.batch, args.seq + 1), 0, args.vocab)
    batch = shard_batch(tokens, mesh)
    for _ in range(2):  # compile + warm up
        state, loss = step(state, batch)
    jax.block_until_ready(loss)

    def once() -> float:
        nonlocal state
        t0 = time.perf_counter()
        state, loss = step(state, batch)
        jax.block_until_ready(loss)
        return time.perf_counter() - t0

    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--strategies", nargs="+", default=["dp", "fsdp", "fsdp_tp"])
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    platform = jax.devices()[0].platform
    print(
        f"# bench_mesh {datetime.date.today()}  platform={platform}  {jax.devices()[0].device_kind}"
    )
    print(
        f"# d_model={args.d_model} layers={args.layers} vocab={args.vocab} seq={args.seq} "
        f"batch={args.batch} (global), best of {args.steps} steps"
    )
    if platform == "cpu":
        print("# CPU: simulated devices share the same cores -> this shows overhead, not speed-up")
    cases = {
        (n, strategy): prepare(n, strategy, args)
        for n in args.devices
        if n <= len(jax.devices())
        for strategy in args.strategies
    }
    # interleaved rounds, best of N: on a shared machine other processes only ever add time, and
    # interleaving spreads their noise evenly over the cases
    best = {case: float("inf") for case in cases}
    for _ in range(args.steps):
        for case, once in cases.items():
            best[case] = min(best[case], once())
    print("| devices | " + " | ".join(f"{s} ms/step" for s in args.strategies) + " |")
    print("|---:|" + "---:|" * len(args.strategies))
    for n in args.devices:
        cells = [f"{best[(n, s)] * 1e3:.1f}" if (n, s) in best else "n/a" for s in args.strategies]
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
