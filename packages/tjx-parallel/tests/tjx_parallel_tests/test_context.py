"""Context parallelism on 8 simulated devices: the balanced layout, batches split along their
sequence, and ring / all-gather attention against one device's attention (float32, 2e-6)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import P

from tjx.kernels import AttentionMask, block_halves, reference_attention
from tjx.parallel import (
    ContextParallel,
    MeshConfig,
    balance,
    balanced_order,
    batch_sharding,
    batch_share,
    context_parallel,
    make_mesh,
    place_batch,
    restore,
    rules,
    rules_for,
)

TOL = 2e-6


def test_each_device_holds_two_mirrored_chunks():
    order = balanced_order(16, 4)  # chunks of 2: device r holds chunks r and 7 - r
    assert order.tolist() == [0, 1, 14, 15, 2, 3, 12, 13, 4, 5, 10, 11, 6, 7, 8, 9]
    x = np.arange(3 * 16).reshape(3, 16)
    np.testing.assert_array_equal(restore(balance(x, 4), 4), x)
    assert balanced_order(6, 1).tolist() == list(range(6))
    # Causal work per device (keys before each of its tokens) is equal: the point of the layout.
    work = [sum(int(t) + 1 for t in order[r * 4 : (r + 1) * 4]) for r in range(4)]
    assert len(set(work)) == 1


def test_a_batch_is_placed_balanced_and_split_along_its_sequence():
    mesh = make_mesh(MeshConfig(data=2, context=4))
    tokens = np.arange(2 * 16).reshape(2, 16)
    placed = place_batch({"inputs": tokens, "n": np.float32(1)}, mesh)
    assert placed["inputs"].sharding == batch_sharding(mesh, 2)
    assert batch_sharding(mesh, 2).spec == P(("data", "fsdp", "expert"), "context")
    assert batch_sharding(mesh, 1).spec == P(("data", "fsdp", "expert"))
    np.testing.assert_array_equal(placed["inputs"], balance(tokens, 4))
    for shard in placed["inputs"].addressable_shards:
        assert shard.data.shape == (1, 4)  # a row's two chunks of 2 on each device
    with pytest.raises(ValueError, match=r"batch leaf \['inputs'\] sequence length: 12 must be "
                                         r"divisible by 2 × context = 8"):  # fmt: skip
        place_batch({"inputs": np.zeros((2, 12), np.int32)}, mesh)
    assert batch_share(mesh) == (0, 1)
    assert context_parallel(mesh, rules("fsdp"), MeshConfig(data=2, context=4)).shards == 4
    assert context_parallel(make_mesh(MeshConfig()), rules(), MeshConfig()) is None


def test_every_strategy_splits_the_activations_sequence_over_context():
    assert all(rules(s).mesh_axes("length") == ("context",) for s in ("dp", "fsdp", "fsdp_tp"))


def test_a_split_run_shards_weights_over_its_context_devices_too():
    split = rules_for(MeshConfig(data=1, context=4, strategy="fsdp_tp"))
    assert split.mesh_axes("embed") == ("fsdp", "context")
    assert split.mesh_axes("mlp") == ("tensor",)
    assert rules_for(MeshConfig(strategy="fsdp")) == rules("fsdp")  # unsplit: the preset as is
    assert rules_for(MeshConfig(context=2, strategy="tp")).mesh_axes("embed") == ()
    assert rules_for(MeshConfig(context=2, strategy="fsdp"), embed=None).mesh_axes("embed") == ()
    mesh = make_mesh(MeshConfig(data=2, context=4))
    assert split.to_mesh_spec(P("embed", "mlp"), mesh, (8, 8)) == P(("fsdp", "context"), "tensor")
    with pytest.raises(ValueError, match="context strategy must be one of"):
        ContextParallel(make_mesh(MeshConfig()), rules(), "tree")


def _inputs(b=2, s=32, h=4, hk=2, d=8, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.standard_normal((b, s, h, d)), jnp.float32)
    k = jnp.asarray(rng.standard_normal((b, s, hk, d)), jnp.float32)
    v = jnp.asarray(rng.standard_normal((b, s, hk, d)), jnp.float32)
    ids = np.ones((b, s), np.int32)
    ids[0, 11:] = 2  # two documents, the cut inside a chunk
    ids[1, 27:] = 0  # padding
    w = jnp.asarray(rng.standard_normal((b, s, h, d)), jnp.float32)
    return q, k, v, jnp.asarray(ids), w


@pytest.mark.parametrize(
    "mesh_kw,strategy,causal,window,impl",
    [
        (dict(data=4, context=2), "ring", True, None, "xla"),
        (dict(data=1, context=8), "ring", True, None, "xla"),
        (dict(data=2, context=4), "all_gather", True, None, "xla"),
        (dict(data=2, context=4), "ring", False, None, "xla"),
        (dict(data=2, context=4), "ring", True, 7, "xla"),  # window by original positions
        (dict(data=1, fsdp=2, context=2, tensor=2), "all_gather", True, None, "xla"),
        (dict(data=4, context=2), "ring", True, None, "pallas"),  # interpret mode
    ],
    ids=["ring2", "ring8", "gather4", "ring4-bidirectional", "ring4-window", "fsdp-tp", "pallas"],
)
def test_context_attention_equals_one_devices_attention(mesh_kw, strategy, causal, window, impl):
    mesh = make_mesh(MeshConfig(**mesh_kw))
    cp = ContextParallel(mesh, rules("fsdp_tp"), strategy)
    ways = cp.shards
    q, k, v, ids, w = _inputs()
    forward, backward = block_halves(impl)
    blocks = dict(forward=forward, backward=backward)

    def split(q, k, v):
        qb, kb, vb, ib = (balance(x, ways) for x in (q, k, v, ids))
        out = cp.attention(qb, kb, vb, causal=causal, segment_ids=ib, window=window, **blocks)
        return restore(out, ways)

    def whole(q, k, v):
        return reference_attention(
            q, k, v, mask=AttentionMask(causal=causal, segment_ids=ids, window=window)
        )

    def loss(f):
        return lambda q, k, v: jnp.sum(f(q, k, v) * w)

    got = jax.jit(jax.value_and_grad(loss(split), (0, 1, 2)))(q, k, v)
    want = jax.value_and_grad(loss(whole), (0, 1, 2))(q, k, v)
    # The loss sums b·s·h·d products of both signs that mostly cancel: its float32 rounding
    # scales with their magnitudes, not with the small result (and how XLA:CPU vectorises the sum
    # depends on the host CPU), so the bound is one float32 unit roundoff (2**-24) of the sum of
    # magnitudes: measured errors are 0.6e-8 to 1.2e-8 of it, a wrong block is of order 1.
    magnitude = float(jnp.sum(jnp.abs(whole(q, k, v) * w)))
    assert abs(float(got[0]) - float(want[0])) <= 2.0**-24 * magnitude
    for g, r in zip(got[1], want[1], strict=True):
        np.testing.assert_allclose(g, r, atol=TOL * float(jnp.abs(r).max()))


def test_the_ring_passes_blocks_and_the_gather_gathers_them():
    """The programs hold the collectives each strategy is made of (and no other)."""
    mesh = make_mesh(MeshConfig(data=2, context=4))
    q, k, v, ids, _ = _inputs()
    blocks = dict(zip(("forward", "backward"), block_halves("auto"), strict=True))
    texts = {}
    for strategy in ("ring", "all_gather"):
        cp = ContextParallel(mesh, rules("fsdp"), strategy)
        fn = jax.grad(
            lambda q, k, v, cp=cp: cp.attention(q, k, v, segment_ids=ids, **blocks).sum(), (0, 1, 2)
        )
        texts[strategy] = jax.jit(fn).lower(q, k, v).as_text()
    assert "collective_permute" in texts["ring"] and "all_gather" not in texts["ring"]
    assert "all_gather" in texts["all_gather"] and "reduce_scatter" in texts["all_gather"]
    assert "collective_permute" not in texts["all_gather"]


def test_a_segment_pair_or_a_sequence_that_does_not_split_is_refused():
    cp = ContextParallel(make_mesh(MeshConfig(data=2, context=4)), rules(), "ring")
    q, k, v, ids, _ = _inputs(s=20)
    blocks = dict(zip(("forward", "backward"), block_halves("auto"), strict=True))
    with pytest.raises(ValueError, match="sequence length: 20 must be divisible by 2 × context"):
        cp.attention(q, k, v, **blocks)
    with pytest.raises(ValueError, match="must be one \\[batch, seq\\] array, not a"):
        cp.attention(q, k, v, segment_ids=(ids, ids), **blocks)
