"""Expert parallelism on 8 simulated devices, with tjx-nn's MoE decoder and tjx-parallel's mesh:
the loss and its gradients do not depend on how the experts are split, the per-device parameter
memory falls with the expert axis, and the compiled program exchanges tokens by all-to-all.

Tolerance (float32): losses within 1e-6 relative, gradients within 1e-5 of the largest entry of
each parameter's gradient (summation order differs between layouts; nothing else may).
"""

from __future__ import annotations

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx import parallel

CONFIG = dict(
    vocab_size=64, max_seq_len=16, d_model=16, num_layers=2, num_heads=2, num_kv_heads=1,
    mlp=tnn.MLPConfig(dim=32), scan_layers=True,
)  # fmt: skip
EXPERTS = tnn.MoEConfig(
    num_experts=8, experts_per_token=2, expert_mlp_dim=8, first_dense=1, router_z_loss=1e-3
)
TOKENS = np.random.default_rng(0).integers(0, 64, (16, 8)).astype(np.int32)
BATCH = {"inputs": TOKENS, "targets": np.roll(TOKENS, -1, axis=1)}
LAYOUTS = [  # (expert axis, other axes, strategy)
    (1, {}, "dp"),
    (2, {}, "dp"),
    (4, {}, "dp"),
    (8, {}, "dp"),
    (2, {"fsdp": 2, "tensor": 2}, "fsdp_tp"),
]


def _step(cfg: tnn.LlamaConfig, layout: tuple | None):
    """(loss, flat grads, summed expert counts, device-0 param bytes, compiled HLO text)."""
    if layout is None:  # the reference: one device, no expert parallelism at all
        mesh, rules, ep = None, None, None
        model = tnn.build_model(cfg, rngs=nnx.Rngs(0))
        batch = {k: jnp.asarray(v) for k, v in BATCH.items()}
    else:
        size, axes, strategy = layout
        mesh = parallel.make_mesh(parallel.MeshConfig(data=-1, expert=size, **axes))
        rules = parallel.rules(strategy)
        ep = parallel.expert_parallel(mesh, rules)
        model = parallel.shard_init(lambda: tnn.build_model(cfg, rngs=nnx.Rngs(0)), mesh, rules)
        batch = parallel.shard_batch(BATCH, mesh)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss_fn(p, b):
        with tnn.expert_parallel_scope(ep):
            out = tnn.objective_loss(nnx.merge(graphdef, p, rest), b)
        return out.loss, out.moe

    step = jax.jit(jax.value_and_grad(loss_fn, has_aux=True)).lower(params, batch).compile()
    (loss, moe), grads = step(params, batch)
    flat = {".".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(grads)}
    device0 = jax.devices()[0]
    mine = sum(
        s.data.nbytes
        for leaf in jax.tree.leaves(params)
        for s in leaf.addressable_shards
        if s.device == device0
    )
    counts, dropped = np.asarray(moe.expert_tokens), int(moe.dropped_tokens.sum())
    return float(loss), flat, counts, dropped, mine, step.as_text()


@pytest.mark.parametrize("capacity", [None, 0.5], ids=["dropless", "capacity"])
def test_losses_and_gradients_do_not_depend_on_the_expert_split(capacity):
    cfg = tnn.LlamaConfig(**CONFIG, moe=dataclasses.replace(EXPERTS, capacity_factor=capacity))
    loss, grads, counts, dropped, whole, _ = _step(cfg, None)
    assert (dropped > 0) == (capacity is not None)  # the capacity case really drops
    memory = {}
    # The capacity path (the same exchange code, an all-to-all of fixed blocks) on the extremes.
    layouts = LAYOUTS if capacity is None else [LAYOUTS[0], LAYOUTS[3], LAYOUTS[4]]
    for layout in layouts:
        got_loss, got, got_counts, got_dropped, mine, hlo = _step(cfg, layout)
        np.testing.assert_allclose(got_loss, loss, rtol=1e-6)
        np.testing.assert_array_equal(got_counts, counts)
        assert got_dropped == dropped
        for name, g in grads.items():
            np.testing.assert_allclose(
                got[name], g, rtol=0, atol=1e-5 * np.abs(g).max() + 1e-12, err_msg=name
            )
        memory[layout[0], layout[2]] = mine
        collectives = set(re.findall(r"\b(all-to-all|ragged-all-to-all)\b", hlo))
        # Tokens cross the expert axis only by all-to-all (CPU: the padded transport).
        assert collectives == ({"all-to-all"} if layout[0] > 1 else set()), collectives
    assert memory[2, "fsdp_tp"] < memory.get((2, "dp"), whole)  # fsdp, tensor split the rest too
    if capacity is not None:
        return
    # Every device holds a 1/size share of the experts, the rest whole (dp): memory falls.
    per_size = [memory[s, "dp"] for s in (1, 2, 4, 8)]
    assert per_size == sorted(per_size, reverse=True) and len(set(per_size)) == 4
    assert per_size[0] == whole
    expert_bytes = sum(
        g.nbytes for name, g in grads.items() if ".experts." in name
    )  # float32 grads have the params' shapes
    for size, got in zip((1, 2, 4, 8), per_size, strict=True):
        assert got == whole - expert_bytes + expert_bytes // size


def test_an_expert_axis_that_does_not_divide_the_experts_is_refused():
    cfg = tnn.LlamaConfig(**CONFIG, moe=dataclasses.replace(EXPERTS, num_experts=6))
    mesh = parallel.make_mesh(parallel.MeshConfig(data=-1, expert=4))
    with pytest.raises(ValueError, match=r"^MeshConfig\.expert: 4 devices do not divide"):
        parallel.check_expert_split(cfg.moe.num_experts, mesh)
    rules = parallel.rules("dp")
    model = tnn.build_model(cfg, rngs=nnx.Rngs(0))
    ep = parallel.expert_parallel(mesh, rules)
    graphdef, params = nnx.split(model)

    def forward(p, t):
        with tnn.expert_parallel_scope(ep):
            return nnx.merge(graphdef, p)(t)

    with pytest.raises(ValueError, match=r"num_experts \(6\)"):
        jax.jit(forward).lower(params, jnp.asarray(TOKENS))
