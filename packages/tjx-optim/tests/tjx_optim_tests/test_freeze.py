"""Adapter-only training: frozen leaves get a zero update and no optimizer state."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.optim import (
    OptimizerConfig,
    adapter_mask,
    build_optimizer,
    join_trainable,
    only_trainable,
    path_mask,
    split_trainable,
    step_report,
    trainable_gradients,
)
from tjx.optim.paths import path_to_str


def lora_tree(rng: np.random.Generator, d: int = 8, r: int = 2) -> dict:
    """Two layers with q/v kernels and LoRA a/b beside them (tjx-nn's naming)."""

    def p(*shape: int) -> jax.Array:
        return jnp.asarray(rng.normal(size=shape), jnp.float32)

    def proj() -> dict:
        return {"kernel": p(d, d), "lora": {"lora_a": p(d, r), "lora_b": p(r, d)}}

    layer = {"attn": {"query": proj(), "value": proj(), "key": {"kernel": p(d, d)}}}
    other = jax.tree.map(lambda x: x + 1, layer)
    return {"embed": {"embedding": p(16, d)}, "layers": {0: layer, 1: other}}


def _bytes(tree: object) -> int:
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree) if hasattr(x, "dtype"))


def test_frozen_leaves_get_no_state_and_a_zero_update_trainable_ones_the_optimizer_alone():
    rng = np.random.default_rng()
    params = lora_tree(rng)
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    mask = adapter_mask(params)
    paths = {path_to_str(p) for p, m in jax.tree_util.tree_leaves_with_path(mask) if m}
    assert paths == {f"layers/{i}/attn/{n}/lora/lora_{w}" for i in (0, 1)
                     for n in ("query", "value") for w in "ab"}  # fmt: skip
    config = OptimizerConfig(name="adamw", learning_rate=1e-2, clip_norm=0.5)
    tx = only_trainable(build_optimizer(config), mask)
    state = tx.init(params)
    full = build_optimizer(config).init(params)
    trainable = sum(x.size for x, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask),
                                           strict=True) if m)  # fmt: skip
    # Adam's two moments exist for the adapters only.
    saved = _bytes(full) - _bytes(state)
    assert saved == 2 * 4 * (sum(x.size for x in jax.tree.leaves(params)) - trainable)
    updates, state = tx.update(grads, state, params)
    for u, m in zip(jax.tree.leaves(updates), jax.tree.leaves(mask), strict=True):
        assert bool(jnp.any(u != 0)) == m

    # The trainable leaves move exactly as the optimizer alone moves them on their subtree, keyed
    # by the same paths (clipping included: the global norm counts only trainable gradients).
    def sub(tree: dict) -> dict:
        flat = jax.tree_util.tree_leaves_with_path(tree)
        keep = jax.tree.leaves(mask)
        return {path_to_str(p): x for (p, x), m in zip(flat, keep, strict=True) if m}

    alone = build_optimizer(config)
    expected, _ = alone.update(sub(grads), alone.init(sub(params)), sub(params))
    for name, got in sub(updates).items():
        np.testing.assert_allclose(
            np.asarray(got), np.asarray(expected[name]), rtol=1e-6, atol=1e-7
        )
    report = step_report(state, grads, updates, params)
    assert float(report["learning_rate"]) > 0


def test_the_mask_may_be_a_function_or_a_path_regex_and_an_empty_adapter_set_is_refused():
    rng = np.random.default_rng()
    params = lora_tree(rng)
    tx = only_trainable(build_optimizer(OptimizerConfig(name="sgd")), adapter_mask)
    updates, _ = tx.update(params, tx.init(params), params)
    assert float(jnp.abs(updates["layers"][0]["attn"]["key"]["kernel"]).max()) == 0
    assert float(jnp.abs(updates["layers"][0]["attn"]["query"]["lora"]["lora_a"]).max()) > 0
    keys = path_mask(params, r"/key/")
    assert sum(jax.tree.leaves(keys)) == 2
    with pytest.raises(ValueError, match="no parameter is a LoRA adapter"):
        adapter_mask({"attn": {"kernel": jnp.zeros(2)}})


def test_the_split_trees_give_the_full_gradient_at_the_adapters_and_none_elsewhere():
    rng = np.random.default_rng()
    params = lora_tree(rng)
    mask = adapter_mask(params)
    kept, rest = split_trainable(params, mask)
    assert jax.tree.structure(join_trainable(kept, rest)) == jax.tree.structure(params)

    def loss(p: dict) -> jax.Array:
        return sum(jnp.sum(jnp.sin(x) * (i + 1)) for i, x in enumerate(jax.tree.leaves(p)))

    full = jax.grad(loss)(params)
    part = jax.grad(lambda k: loss(join_trainable(k, rest)))(kept)
    got = jax.tree.leaves(part)
    want = [g for g, m in zip(jax.tree.leaves(full), jax.tree.leaves(mask), strict=True) if m]
    assert len(got) == len(want) == 8  # only the adapters' gradients were computed
    for a, b in zip(got, want, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6)
    zeros = jax.tree.map(jnp.zeros_like, rest)
    filled = join_trainable(part, zeros)
    assert float(jnp.abs(filled["embed"]["embedding"]).max()) == 0


@pytest.mark.parametrize("micro", [1, 2])
def test_trainable_gradients_are_the_accumulated_gradients_at_the_adapters_and_zero_elsewhere(
    micro: int,
):
    rng = np.random.default_rng()
    params = lora_tree(rng)
    mask = adapter_mask(params)
    batch = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)

    def loss_fn(p: dict, b: jax.Array) -> tuple[jax.Array, dict]:
        value = sum(jnp.sum(jnp.sin(x)) * jnp.mean(b) for x in jax.tree.leaves(p))
        return value, {"n": jnp.float32(b.shape[0])}

    kw = dict(num_micro_batches=micro, aux_reduce="sum", weight="n")
    loss, aux, grads = trainable_gradients(loss_fn, params, batch, trainable=mask, **kw)
    all_loss, all_aux, all_grads = trainable_gradients(loss_fn, params, batch, **kw)
    np.testing.assert_allclose(float(loss), float(all_loss), rtol=1e-6)
    assert float(aux["n"]) == float(all_aux["n"]) == 4.0
    assert jax.tree.structure(grads) == jax.tree.structure(params)
    for g, full, m in zip(*(jax.tree.leaves(t) for t in (grads, all_grads, mask)), strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(full) if m else 0.0, rtol=1e-6)
