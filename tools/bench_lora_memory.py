"""Compiled memory of a training step: full fine-tuning against LoRA on the same model.

Both steps are built from the same pieces (tjx-nn's model and ``objective_loss``, tjx-optim's
AdamW chain), compiled for the target and read from XLA's ``memory_analysis()`` (exact for the
compiled program): arguments (weights, optimizer state, batch), temporaries, outputs, less what
the donated inputs alias. Full fine-tuning differentiates every weight and keeps AdamW's two
moments for each; LoRA differentiates the adapters only (``nnx.split(model, nnx.LoRAParam,
nnx.Param, ...)``) and keeps moments for them alone, the frozen weights an input it reads.

    python tools/bench_lora_memory.py --shape 8b --target h100   # deviceless H100 compile
    python tools/bench_lora_memory.py --shape tiny --target cpu

``--target h100`` needs the CUDA plugin on ``PYTHONPATH`` (``/root/.cache/tjx/deviceless/cuda12``
here) with ``JAX_PLATFORMS=cpu``, and ``--txtpb`` a GpuTargetConfig (the trimmed H100 one).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx import nn
from tjx.optim import OptimizerConfig, build_optimizer

SHAPES: dict[str, dict[str, Any]] = {
    # Llama 3.1 8B's shape.
    "8b": dict(vocab_size=128256, d_model=4096, num_layers=32, num_heads=32, num_kv_heads=8,
               mlp=nn.MLPConfig(dim=14336), max_seq_len=8192,
               position=nn.PositionConfig(rope_theta=500000.0),
               tie_embeddings=False),
    # Llama 3.2 1B's shape.
    "1b": dict(vocab_size=128256, d_model=2048, num_layers=16, num_heads=32, num_kv_heads=8,
               mlp=nn.MLPConfig(dim=8192), max_seq_len=8192,
               position=nn.PositionConfig(rope_theta=500000.0),
               tie_embeddings=True),
    "tiny": dict(vocab_size=512, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 mlp=nn.MLPConfig(dim=128), max_seq_len=256),
}  # fmt: skip


def _abstract(config: nn.LlamaConfig, lora: nn.LoraConfig | None) -> nnx.Module:
    def build() -> nnx.Module:
        model = nn.Llama(config, rngs=nnx.Rngs(0))
        if lora is not None:
            nn.add_lora(model, lora, rngs=nnx.Rngs(1))
        return model

    return nnx.eval_shape(build)


def _devices(target: str, txtpb: str | None) -> list[Any]:
    if target == "cpu":
        return jax.devices("cpu")[:1]
    from jax.experimental import topologies

    assert txtpb, "--txtpb (a GpuTargetConfig textproto) is needed for a GPU target"
    topo = topologies.get_topology_desc(
        platform="cuda", target_config=Path(txtpb).read_text(), topology="1x1x1"
    )
    return list(topo.devices)[:1]


def measure(shape: str, *, lora: nn.LoraConfig | None, seq: int, batch: int, target: str,
            txtpb: str | None) -> dict[str, Any]:  # fmt: skip
    config = nn.LlamaConfig(**SHAPES[shape], scan_layers=True, remat="full",
                            precision=nn.Precision.pure_bf16())  # fmt: skip
    model = _abstract(config, lora)
    tx = build_optimizer(OptimizerConfig(name="adamw", learning_rate=1e-4))
    if lora is None:
        graphdef, train, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
        frozen: Any = {}
    else:
        graphdef, train, frozen, rest = nnx.split(  # type: ignore[misc]
            model, nnx.LoRAParam, nnx.Param, ...
        )
        frozen = nnx.to_pure_dict(frozen)
    train = nnx.to_pure_dict(train)
    rest = nn.concrete_state(rest)
    opt_state = jax.eval_shape(tx.init, train)
    tokens = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    data = {"inputs": tokens, "targets": tokens}

    def step(train: Any, frozen: Any, opt_state: Any, batch: Any) -> Any:
        def loss_fn(p: Any) -> jax.Array:
            parts = (p, frozen, rest) if frozen else (p, rest)
            merged = nnx.merge(graphdef, *parts)
            return nn.objective_loss(merged, batch).loss

        loss, grads = jax.value_and_grad(loss_fn)(train)
        updates, opt_state = tx.update(grads, opt_state, train)
        return jax.tree.map(lambda p, u: p + u.astype(p.dtype), train, updates), opt_state, loss

    device = _devices(target, txtpb)[0]
    sharding = jax.sharding.SingleDeviceSharding(device)

    def placed(tree: Any) -> Any:
        return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                            tree)  # fmt: skip

    lowered = jax.jit(step, donate_argnums=(0, 2)).lower(
        placed(train), placed(frozen), placed(opt_state), placed(data)
    )
    stats = lowered.compile().memory_analysis()
    assert stats is not None, f"no memory analysis for target {target}"

    def gib(tree: Any) -> float:
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree)) / 2**30

    peak = (stats.argument_size_in_bytes + stats.output_size_in_bytes
            + stats.temp_size_in_bytes - stats.alias_size_in_bytes)  # fmt: skip
    return {
        "shape": shape,
        "mode": "full" if lora is None else f"lora r={lora.rank} {','.join(lora.targets)}",
        "target": target,
        "seq": seq,
        "batch": batch,
        "trained_GiB": round(gib(train), 3),
        "frozen_GiB": round(gib(frozen), 3),
        "opt_state_GiB": round(gib(opt_state), 3),
        "temp_GiB": round(stats.temp_size_in_bytes / 2**30, 3),
        "peak_GiB": round(peak / 2**30, 3),
        "peak_bytes": int(peak),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="tiny")
    parser.add_argument("--target", choices=("cpu", "h100"), default="cpu")
    parser.add_argument("--txtpb", default=None)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--rank", type=int, default=16)
    args = parser.parse_args()
    lora = nn.LoraConfig(rank=args.rank, alpha=2.0 * args.rank, targets=nn.LORA_ROLES)
    rows = [
        measure(args.shape, lora=mode, seq=args.seq, batch=args.batch, target=args.target,
                txtpb=args.txtpb)
        for mode in (None, lora)
    ]  # fmt: skip
    for row in rows:
        print(json.dumps(row))
    ratio = rows[1]["peak_bytes"] / rows[0]["peak_bytes"]
    print(json.dumps({"peak_ratio_lora_over_full": round(ratio, 4)}))


if __name__ == "__main__":
    main()
