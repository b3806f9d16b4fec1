"""Context parallelism end to end on 8 simulated devices, built from the packages alone.

A tiny Llama's loss and gradients on a packed batch are the same with each sequence split over
context = 1, 2 and 8 devices (and with FSDP and tensor parallelism beside it); the compiled
memory of attention per device falls with the split; a tiny model trains at sequence 32k with
context 8 on this CPU. The model runs under ``tjx.nn.sequence_parallel(ContextParallel(...))``,
the batch goes through ``tjx.parallel.place_batch`` (balanced layout, sequence split).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx import parallel
from tjx.kernels import block_halves

VOCAB = 64
# float32 throughout: the split changes only the order of the sums.
TOL = 2e-5


def _config(**kw):
    base = dict(vocab_size=VOCAB, max_seq_len=64, d_model=32, num_layers=2, num_heads=4,
                num_kv_heads=2, mlp=tnn.MLPConfig(dim=48), precision="fp32")  # fmt: skip
    return tnn.LlamaConfig(**{**base, **kw})


def _packed_batch(rows: int, seq: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Documents of random lengths packed into rows: ids, positions restarting per document,
    targets -100 at each document's end and on padding (the data loader's conventions)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, (rows, seq + 1)).astype(np.int32)
    ids = np.zeros((rows, seq), np.int32)
    positions = np.zeros((rows, seq), np.int32)
    for r in range(rows):
        at, doc = 0, 1
        while at < seq - 3:
            n = int(rng.integers(3, seq // 2))
            end = min(at + n, seq - 2)
            ids[r, at:end] = doc
            positions[r, at:end] = np.arange(end - at)
            at, doc = end, doc + 1
    targets = np.where(ids > 0, tokens[:, 1:], -100).astype(np.int32)
    targets[:, :-1][ids[:, 1:] != ids[:, :-1]] = -100
    return {"inputs": tokens[:, :-1], "targets": targets, "segment_ids": ids,
            "positions": positions}  # fmt: skip


def _loss_and_grads(config, batch, mesh_config):
    mesh = parallel.make_mesh(mesh_config)
    axis_rules = parallel.rules_for(mesh_config)  # ZeRO over fsdp × context when split
    with nnx.logical_axis_rules(axis_rules.flax_rules()):
        model = parallel.shard_init(lambda: tnn.Llama(config, rngs=nnx.Rngs(0)), mesh, axis_rules)
    graphdef, params = nnx.split(model)
    cp = parallel.context_parallel(mesh, axis_rules, mesh_config)

    @jax.jit
    def step(params, batch):
        def loss(params):
            with tnn.sequence_parallel(cp):
                return tnn.objective_loss(nnx.merge(graphdef, params), batch).loss

        return jax.value_and_grad(loss)(params)

    value, grads = step(params, parallel.place_batch(batch, mesh))
    flat = {".".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(grads)}
    return float(value), flat


@pytest.fixture(scope="module")
def unsplit():
    batch = _packed_batch(8, 64)
    return batch, _loss_and_grads(_config(), batch, parallel.MeshConfig(data=8, strategy="fsdp"))


@pytest.mark.parametrize(
    "mesh_kw",
    [
        # context 4 is between these two (the ring's steps are its only change): not compiled
        # (CI's 60 minutes)
        dict(data=4, context=2, strategy="fsdp"),  # weights split over the 2 context devices
        dict(data=1, context=8, strategy="dp"),
        dict(data=1, context=8, strategy="fsdp", context_strategy="all_gather"),
        dict(data=1, fsdp=2, context=2, tensor=2, strategy="fsdp_tp"),  # with FSDP and tensor
    ],
    ids=["context2", "context8", "context8-all-gather", "fsdp2-context2-tensor2"],
)
def test_losses_and_gradients_equal_those_of_an_unsplit_sequence(unsplit, mesh_kw):
    batch, (want_loss, want_grads) = unsplit
    loss, grads = _loss_and_grads(_config(), batch, parallel.MeshConfig(**mesh_kw))
    assert abs(loss - want_loss) <= TOL * abs(want_loss)
    assert set(grads) == set(want_grads)
    for name, g in grads.items():
        scale = max(float(np.abs(want_grads[name]).max()), 1e-3)
        np.testing.assert_allclose(g, want_grads[name], atol=TOL * scale, err_msg=name)


def _attention_temp_bytes(ways: int, seq: int = 2048) -> int:
    """Compiled temporary bytes per device of one causal attention's forward and backward over
    ``seq`` tokens split ``ways`` ways (XLA blocks: their logits are the activations)."""
    devices = jax.devices()[:ways]
    mesh = parallel.make_mesh(parallel.MeshConfig(data=1, context=ways), devices=devices)
    cp = parallel.ContextParallel(mesh, parallel.rules(), "ring")
    forward, backward = block_halves("xla")
    blocks = dict(forward=forward, backward=backward)
    if ways == 1:
        from tjx.kernels import AttentionMask, attention

        attend = functools.partial(attention, mask=AttentionMask(causal=True), implementation="xla")
    else:
        attend = functools.partial(cp.attention, causal=True, **blocks)

    def loss(q, k, v):
        return jnp.sum(attend(q, k, v) ** 2)

    sharding = parallel.batch_sharding(mesh, 4)
    x = jax.ShapeDtypeStruct((1, seq, 4, 16), jnp.float32, sharding=sharding)
    compiled = jax.jit(jax.grad(loss, (0, 1, 2))).lower(x, x, x).compile()
    return int(compiled.memory_analysis().temp_size_in_bytes)


def test_attention_memory_per_device_falls_with_the_split():
    """Each device holds 1/context of the queries and one block of keys at a time: its logits
    (and so its temporaries) shrink at least as fast as 1/context."""
    temps = {c: _attention_temp_bytes(c) for c in (1, 2, 4, 8)}
    for c in (2, 4, 8):
        assert temps[c] * c <= 1.25 * temps[1], temps
    assert temps[1] > temps[2] > temps[4] > temps[8]


def test_a_tiny_model_trains_at_32k_tokens_with_context_8():
    # One attention head: a step's cost is its 32k x 32k score blocks, one set per head (two heads
    # took 42 CPU seconds a step at -O1, one 23; a narrower head does not help). Grouped KV heads
    # under the split are held by the loss-and-gradient test above (4 heads on 2).
    config = _config(max_seq_len=32768, d_model=16, num_layers=1, num_heads=1, num_kv_heads=1,
                     mlp=tnn.MLPConfig(dim=32))  # fmt: skip
    mesh_config = parallel.MeshConfig(data=1, context=8, strategy="fsdp")
    mesh = parallel.make_mesh(mesh_config)
    axis_rules = parallel.rules_for(mesh_config)
    cp = parallel.context_parallel(mesh, axis_rules, mesh_config)
    with nnx.logical_axis_rules(axis_rules.flax_rules()):
        model = parallel.shard_init(lambda: tnn.Llama(config, rngs=nnx.Rngs(0)), mesh, axis_rules)
    graphdef, params = nnx.split(model)
    # Two steps (one update) are enough to see it learn at this rate: the loss falls 0.24 in the
    # first update (measured 2026-11-27; the assertion asks 0.1), where 3e-3 took two updates.
    tx = optax.adam(1e-2)
    opt_state = tx.init(params)
    # A sequence that repeats a 16-token phrase: learnable within a step.
    phrase = np.random.default_rng(0).integers(0, VOCAB, 16)
    stream = np.tile(phrase, 32768 // 16 + 1).astype(np.int32)
    batch = parallel.place_batch(
        {"inputs": stream[None, :32768], "targets": stream[None, 1:32769]}, mesh
    )

    @jax.jit
    def step(params, opt_state, batch):
        def loss(params):
            with tnn.sequence_parallel(cp):
                return tnn.objective_loss(nnx.merge(graphdef, params), batch).loss

        value, grads = jax.value_and_grad(loss)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    losses = []
    for _ in range(2):
        params, opt_state, value = step(params, opt_state, batch)
        losses.append(float(value))
    assert np.isfinite(losses).all()
    assert losses[-1] < losses[0] - 0.1, losses
    # The step held 1/8 of the sequence per device: its activations are split, not gathered.
    shard = batch["inputs"].addressable_shards[0].data
    assert shard.shape == (1, 4096)
