"""The flat update: the same chain over a few flat buffers gives the per-leaf chain's numbers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tjx.optim import (
    FlatLayout,
    FlatParams,
    FlatState,
    OptimizerConfig,
    ScheduleConfig,
    adapter_mask,
    build_optimizer,
    find_state,
    flat_layout,
    only_trainable,
    relayout_state,
    step_report,
    uses_flat_update,
)

#: float32 rounding of a norm summed in another order, carried through a few Adam steps.
RTOL, ATOL = 2e-5, 1e-7


def _params(rng: np.random.Generator) -> dict:
    # Two dtypes, decayed matrices and undecayed vectors/embeddings: four groups.
    return {
        "dense": {"kernel": jnp.asarray(rng.normal(size=(6, 5)), jnp.float32)},
        "dense_bias": jnp.asarray(rng.normal(size=(5,)), jnp.float32),
        "wte": {"embedding": jnp.asarray(rng.normal(size=(7, 6)), jnp.float32)},
        "head": {"kernel": jnp.asarray(rng.normal(size=(6, 3)), jnp.bfloat16)},
        "ln": {"scale": jnp.asarray(rng.normal(size=(6,)), jnp.bfloat16)},
    }


def _grads(rng: np.random.Generator, params: dict, scale: float) -> dict:
    return jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape) * scale, p.dtype), params)


def _run(cfg: OptimizerConfig, whole: bool, seed: int, scales: list[float]) -> tuple:
    rng = np.random.default_rng(seed)
    params = _params(rng)
    grads = [_grads(rng, params, s) for s in scales]
    tx = build_optimizer(cfg, total_steps=STEPS, whole_params=whole)
    state = tx.init(params)
    update = jax.jit(tx.update)
    reports = []
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
        reports.append(step_report(state, g, updates, params))
    return params, state, reports


def _close(a, b) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(
            np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=RTOL, atol=ATOL
        )


#: The run length CONFIGS[0]'s cosine schedule spans.
STEPS = 10
CONFIGS = [
    OptimizerConfig(name="adamw", b2=0.95, weight_decay=0.1, clip_norm=1.0,
                    schedule=ScheduleConfig(name="cosine", warmup_steps=2, peak_lr=1e-2)),
    OptimizerConfig(name="adam", weight_decay=0.01, clip_norm=None, learning_rate=1e-3),
    OptimizerConfig(name="sgd", momentum=0.9, nesterov=True, learning_rate=1e-2),
    OptimizerConfig(name="lion", weight_decay=0.1, learning_rate=1e-3),
]  # fmt: skip


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_flat_and_per_leaf_chains_agree_to_float32_rounding(cfg: OptimizerConfig) -> None:
    seed = int(np.random.default_rng().integers(1 << 30))
    scales = [3.0, 0.05, 1.0, 0.5]
    p_flat, s_flat, r_flat = _run(cfg, True, seed, scales)
    p_leaf, s_leaf, r_leaf = _run(cfg, False, seed, scales)
    assert find_state(s_flat, FlatState) is not None
    assert find_state(s_leaf, FlatState) is None
    _close(p_flat, p_leaf)
    for a, b in zip(r_flat, r_leaf, strict=True):
        assert set(a) == set(b)
        for key in a:
            np.testing.assert_allclose(
                np.asarray(a[key], np.float64),
                np.asarray(b[key], np.float64),
                rtol=RTOL,
                err_msg=key,
            )


def test_nonfinite_gradients_skip_the_flat_step_and_keep_params_and_moments() -> None:
    cfg = OptimizerConfig(name="adamw", learning_rate=1e-2, weight_decay=0.1)
    rng = np.random.default_rng()
    params = _params(rng)
    tx = build_optimizer(cfg, total_steps=STEPS)
    state = tx.update(_grads(rng, params, 1.0), tx.init(params), params)[1]
    bad = _grads(rng, params, 1.0)
    bad["dense_bias"] = bad["dense_bias"].at[2].set(jnp.nan)
    updates, after = tx.update(bad, state, params)
    report = step_report(after, bad, updates, optax.apply_updates(params, updates))
    assert bool(report["skipped"]) and int(report["skipped_total"]) == 1
    assert all(not np.any(np.asarray(u, np.float32)) for u in jax.tree.leaves(updates))
    # The moments are the ones before the bad step, bit for bit.
    for x, y in zip(jax.tree.leaves(state.inner), jax.tree.leaves(after.inner), strict=True):
        if x.shape:  # moments (the counters move: skipped_total, ...)
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert float(report["update_norm"]) == 0.0


def test_layout_groups_by_decay_and_dtype_and_cuts_back_every_leaf() -> None:
    rng = np.random.default_rng()
    params = _params(rng)
    decays = {"dense": {"kernel": True}, "dense_bias": False, "wte": {"embedding": False},
              "head": {"kernel": True}, "ln": {"scale": False}}  # fmt: skip
    layout = FlatLayout(params, decays)
    assert layout.mask == {
        "decay_float32": True, "keep_float32": False, "decay_bfloat16": True,
        "keep_bfloat16": False,
    }  # fmt: skip
    flat = layout.flatten(params)
    assert flat["keep_float32"].shape == (5 + 7 * 6,)
    assert flat["decay_bfloat16"].dtype == jnp.bfloat16
    back = layout.unflatten(flat)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(back), strict=True):
        np.testing.assert_array_equal(np.asarray(x, np.float32), np.asarray(y, np.float32))


def test_auto_flattens_elementwise_optimizers_only_when_params_are_whole() -> None:
    assert uses_flat_update(OptimizerConfig(name="adamw"))
    assert not uses_flat_update(OptimizerConfig(name="adamw"), whole_params=False)
    for name in ("lamb", "adafactor", "muon"):
        assert not uses_flat_update(OptimizerConfig(name=name))
    assert not uses_flat_update(OptimizerConfig(name="adamw", flat_update="off"))
    assert uses_flat_update(OptimizerConfig(name="sgd", flat_update="on"))


def test_flat_update_on_is_refused_where_it_would_be_wrong_or_gather() -> None:
    with pytest.raises(ValueError, match="flat_update='on' with name='lamb'"):
        OptimizerConfig(name="lamb", flat_update="on")
    with pytest.raises(ValueError, match="allowed values"):
        OptimizerConfig(name="adamw", flat_update="yes")
    with pytest.raises(ValueError, match="whole on every device"):
        build_optimizer(OptimizerConfig(name="adamw", flat_update="on"), whole_params=False)


def test_flat_update_needs_params() -> None:
    params = _params(np.random.default_rng())
    tx = build_optimizer(OptimizerConfig(name="adamw"))
    with pytest.raises(ValueError, match="needs params"):
        tx.update(params, tx.init(params))


def test_flat_chain_compiles_to_fewer_reductions_than_per_leaf() -> None:
    # The point of the flat chain: the norms and the finite test are one reduction per group,
    # not one (or two) per leaf. Counted in XLA's optimized program on this machine's backend.
    cfg = OptimizerConfig(name="adamw", learning_rate=1e-3, weight_decay=0.1)
    rng = np.random.default_rng()
    params = {f"layer{i}": {"kernel": jnp.asarray(rng.normal(size=(8, 8)), jnp.float32),
                            "bias": jnp.asarray(rng.normal(size=(8,)), jnp.float32)}
              for i in range(12)}  # fmt: skip

    def reductions(whole: bool) -> int:
        tx = build_optimizer(cfg, total_steps=STEPS, whole_params=whole)

        def step(p, g, s):
            updates, s = tx.update(g, s, p)
            new = optax.apply_updates(p, updates)
            return new, s, step_report(s, g, updates, new)

        text = jax.jit(step).lower(params, params, tx.init(params)).compile().as_text()
        return text.count(" reduce(")

    flat, per_leaf = reductions(True), reductions(False)
    assert per_leaf >= 3 * 24  # grad, update and param norms of 24 leaves at least
    assert flat <= 12, (flat, per_leaf)


def test_layout_refuses_a_tree_of_another_structure() -> None:
    params = _params(np.random.default_rng())
    layout = FlatLayout(params, jax.tree.map(lambda _: True, params))
    with pytest.raises(ValueError, match="another structure"):
        layout.flatten({"w": params["dense_bias"]})
    with pytest.raises(ValueError, match="decay flags"):
        FlatLayout(params, [True])


def _steps(tx, state, params, grads):
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update(g, state, params)
        params = optax.apply_updates(params, updates)
    return params, state


@pytest.mark.parametrize("cfg", CONFIGS[:3], ids=lambda c: c.name)
@pytest.mark.parametrize("first_flat", [True, False], ids=["flat_then_leaf", "leaf_then_flat"])
def test_a_state_moved_between_layouts_continues_the_run_of_either(cfg, first_flat) -> None:
    """Two steps in one layout, `relayout_state`, two in the other: the four steps of one
    layout throughout (float32 rounding, as the layouts agree), and the same state structure."""
    rng = np.random.default_rng()
    params = _params(rng)
    grads = [_grads(rng, params, s) for s in (2.0, 0.1, 1.0, 0.3)]
    flat = build_optimizer(cfg, total_steps=STEPS, whole_params=True)
    leaf = build_optimizer(cfg, total_steps=STEPS, whole_params=False)
    one, two = (flat, leaf) if first_flat else (leaf, flat)
    p_mid, s_mid = _steps(one, one.init(params), params, grads[:2])
    target = jax.eval_shape(two.init, params)
    moved = relayout_state(cfg, s_mid, p_mid, target)
    assert jax.tree.structure(moved) == jax.tree.structure(target)
    assert (find_state(moved, FlatState) is not None) == (not first_flat)
    p_end, s_end = _steps(two, moved, p_mid, grads[2:])
    p_want, s_want = _steps(two, two.init(params), params, grads)
    _close(p_end, p_want)
    _close(
        optax.tree_utils.tree_get(s_end, "mu", None), optax.tree_utils.tree_get(s_want, "mu", None)
    )


def test_an_adapter_only_state_moves_between_layouts() -> None:
    """Under `only_trainable` (LoRA) the flat chain sees the adapters only: the moved state is
    the other chain's, and it continues as that chain's own."""
    cfg = CONFIGS[0]
    rng = np.random.default_rng()
    params = {
        "base": _params(rng),
        "lora": {
            "lora_a": jnp.asarray(rng.normal(size=(6, 2)), jnp.float32),
            "lora_b": jnp.asarray(rng.normal(size=(2, 5)), jnp.float32),
        },
    }
    mask = adapter_mask(params)
    flat = only_trainable(build_optimizer(cfg, total_steps=STEPS, whole_params=True), mask)
    leaf = only_trainable(build_optimizer(cfg, total_steps=STEPS, whole_params=False), mask)
    grads = [_grads(rng, params, s) for s in (1.0, 0.5, 0.2)]
    p_mid, s_mid = _steps(flat, flat.init(params), params, grads[:1])
    moved = relayout_state(cfg, s_mid, p_mid, jax.eval_shape(leaf.init, params), trainable=mask)
    back = relayout_state(cfg, moved, p_mid, jax.eval_shape(flat.init, params), trainable=mask)
    assert jax.tree.structure(back) == jax.tree.structure(s_mid)
    got, want = find_state(back, FlatState), find_state(s_mid, FlatState)
    _close(got.inner, want.inner)
    _close(got.param_norm, want.param_norm)  # the update norm is not kept per leaf
    p_end, _ = _steps(leaf, moved, p_mid, grads[1:])
    p_want, _ = _steps(flat, flat.init(params), params, grads)
    _close(p_end, p_want)


def test_a_state_of_another_chain_is_refused_when_made_flat() -> None:
    rng = np.random.default_rng()
    params = _params(rng)
    adam = build_optimizer(CONFIGS[1], total_steps=STEPS, whole_params=False)
    flat_sgd = build_optimizer(CONFIGS[2], total_steps=STEPS, whole_params=True)
    with pytest.raises(ValueError, match="does not match the flat chain"):
        relayout_state(CONFIGS[2], adam.init(params), params, jax.eval_shape(flat_sgd.init, params))


def test_an_adapter_only_flat_chain_reports_the_norm_of_all_params() -> None:
    """Under `only_trainable` the flat buffers hold the adapters only: the reported param norm
    is still that of every parameter (frozen ones included), as the per-leaf chain reports it,
    and the update norm is the flat one (a frozen leaf's update is zero)."""
    cfg = CONFIGS[1]
    rng = np.random.default_rng()
    params = {"base": _params(rng), "lora": {"lora_a": jnp.asarray(rng.normal(size=(6, 2)))}}
    mask = adapter_mask(params)
    reports = []
    for whole in (True, False):
        tx = only_trainable(build_optimizer(cfg, total_steps=STEPS, whole_params=whole), mask)
        g = _grads(np.random.default_rng(7), params, 1.0)
        updates, state = jax.jit(tx.update)(g, tx.init(params), params)
        new = optax.apply_updates(params, updates)
        reports.append(step_report(state, g, updates, new))
        want = np.sqrt(
            sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(new))
        )
        np.testing.assert_allclose(float(reports[-1]["param_norm"]), want, rtol=1e-5)
    np.testing.assert_allclose(
        float(reports[0]["update_norm"]), float(reports[1]["update_norm"]), rtol=RTOL
    )


def test_params_held_flat_take_the_same_steps_bit_for_bit_as_per_leaf() -> None:
    """`FlatParams.apply` (one p + u a buffer) gives exactly `optax.apply_updates`' params, step
    after step, in both dtypes; the buffers are the flat chain's own groups."""
    cfg = OptimizerConfig(name="adamw", learning_rate=1e-2, weight_decay=0.1, flat_update="on")
    rng = np.random.default_rng()
    params = _params(rng)
    grads = [_grads(rng, params, s) for s in (1.0, 0.3, 2.0)]
    tx = build_optimizer(cfg, total_steps=STEPS)
    layout = flat_layout(cfg, params)
    flat = FlatParams.of(params, layout)
    assert set(flat.buffers) == set(layout.groups)
    state_a = state_b = tx.init(params)

    @jax.jit
    def per_leaf(p, g, s):
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s

    @jax.jit
    def held_flat(f, g, s):
        u, s = tx.update(g, s, f.tree())
        return f.apply(u), s

    for g in grads:
        params, state_a = per_leaf(params, g, state_a)
        flat, state_b = held_flat(flat, g, state_b)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(flat.tree()), strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))


def test_flat_params_are_a_pytree_of_their_buffers_with_a_value_compared_layout() -> None:
    cfg = OptimizerConfig(name="adamw", flat_update="on")
    params = _params(np.random.default_rng())
    flat = FlatParams.of(params, flat_layout(cfg, params))
    again = FlatParams.of(params, flat_layout(cfg, params))  # another layout object, same value
    assert jax.tree.structure(flat) == jax.tree.structure(again)
    assert str(jax.tree.structure(flat)) == str(jax.tree.structure(again))  # printed by value
    assert len(jax.tree.leaves(flat)) == len(flat.buffers) == 4
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    abstract = FlatParams.of(shapes, flat.layout)
    assert jax.tree.structure(abstract) == jax.tree.structure(flat)
    for a, b in zip(jax.tree.leaves(abstract), jax.tree.leaves(flat), strict=True):
        assert (a.shape, a.dtype) == (b.shape, b.dtype)
    for a, b in zip(jax.tree.leaves(abstract.tree()), jax.tree.leaves(params), strict=True):
        assert isinstance(a, jax.ShapeDtypeStruct) and (a.shape, a.dtype) == (b.shape, b.dtype)
