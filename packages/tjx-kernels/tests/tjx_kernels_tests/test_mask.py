"""`AttentionMask`: one value for which keys a query sees, a pytree that crosses jit, vmap and
custom_vjp, refused in one line where a kernel cannot serve a part of it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import AttentionMask, attention, flash_attention, reference_attention

from ._ref import np_attention, np_mask, rel_err


def _inputs(seed: int, s: int = 12) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    rng = np.random.default_rng(seed)
    q, k, v = (jnp.asarray(rng.standard_normal((2, s, 2, 8)), jnp.float32) for _ in range(3))
    ids = np.ones((2, s), np.int32)
    ids[0, s // 2 :] = 2
    ids[1, s - 3 :] = 0
    return q, k, v, jnp.asarray(ids)


def test_its_arrays_are_leaves_and_the_rest_is_static():
    ids, lengths, sinks = jnp.ones((2, 4), jnp.int32), jnp.array([4, 2]), jnp.zeros(3)
    mask = AttentionMask(causal=True, segment_ids=ids, kv_lengths=lengths, window=3, sinks=sinks)
    leaves, tree = jax.tree.flatten(mask)
    assert len(leaves) == 3 and all(isinstance(x, jax.Array) for x in leaves)
    assert jax.tree.unflatten(tree, leaves) == mask
    pair = mask.replace(segment_ids=(ids, ids))
    assert len(jax.tree.leaves(pair)) == 4  # a (q_ids, kv_ids) pair: two leaves
    # A static part is in the tree's structure: another value is another trace.
    assert jax.tree.structure(mask.replace(window=4)) != tree
    assert jax.tree.structure(mask.replace(causal=False)) != tree
    assert jax.tree.structure(AttentionMask()) != tree  # absent parts are empty subtrees


def test_it_crosses_jit_vmap_and_custom_vjp_as_the_reference_sees_it():
    q, k, v, ids = _inputs(1)
    mask = AttentionMask(causal=True, segment_ids=ids, window=5)
    want = np_attention(
        *(np.asarray(x, np.float64) for x in (q, k, v)),
        np_mask(2, 12, 12, causal=True, q_ids=np.asarray(ids), kv_ids=np.asarray(ids), window=5),
    )
    traces = []

    @jax.jit
    def run(q: jax.Array, k: jax.Array, v: jax.Array, mask: AttentionMask) -> jax.Array:
        traces.append(mask)
        return attention(q, k, v, mask)

    assert rel_err(run(q, k, v, mask), want) <= 1e-5
    run(q, k, v, mask.replace(segment_ids=ids[::-1]))  # new ids: the same trace
    assert len(traces) == 1

    # vmap over the mask's leaves: each row its own segment ids.
    rows = jax.vmap(
        lambda q, k, v, m: attention(q[None], k[None], v[None], m)[0],
        in_axes=0,
    )(q, k, v, AttentionMask(causal=True, segment_ids=ids[:, None]))
    whole = attention(q, k, v, AttentionMask(causal=True, segment_ids=ids))
    assert rel_err(rows, whole) <= 1e-6

    # custom_vjp: the mask is an argument (its leaves get no cotangent: None).
    @jax.custom_vjp
    def f(q: jax.Array, mask: AttentionMask) -> jax.Array:
        return reference_attention(q, k, v, mask)

    def fwd(q: jax.Array, mask: AttentionMask) -> tuple[jax.Array, AttentionMask]:
        return f(q, mask), mask

    def bwd(mask: AttentionMask, g: jax.Array) -> tuple[jax.Array, None]:
        return jax.vjp(lambda q: reference_attention(q, k, v, mask), q)[1](g)[0], None

    f.defvjp(fwd, bwd)
    got = jax.grad(lambda q: jnp.sum(f(q, mask) ** 2))(q)
    ref = jax.grad(lambda q: jnp.sum(reference_attention(q, k, v, mask) ** 2))(q)
    assert rel_err(got, ref) <= 1e-6


def test_a_mask_of_another_type_is_refused_in_one_line():
    x = jnp.zeros((1, 4, 2, 8))
    for fn in (attention, reference_attention, flash_attention):
        with pytest.raises(ValueError, match=r"^`mask` must be a tjx.kernels.AttentionMask"):
            fn(x, x, x, {"causal": True})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "part", [{"kv_lengths": jnp.array([4])}, {"chunk": 2}, {"sinks": jnp.zeros(2)}]
)
def test_flash_refuses_the_parts_the_dispatcher_folds_or_runs_on_xla(part):
    x = jnp.zeros((1, 4, 2, 8))
    name = next(iter(part))
    with pytest.raises(ValueError, match=f"`mask.{name}` is not served by flash_attention"):
        flash_attention(x, x, x, AttentionMask(**part))


def test_the_reference_serves_a_chunk_as_the_dispatcher_does():
    q, k, v, ids = _inputs(2)
    mask = AttentionMask(causal=True, segment_ids=ids, chunk=4)
    assert rel_err(reference_attention(q, k, v, mask), attention(q, k, v, mask)) == 0.0
