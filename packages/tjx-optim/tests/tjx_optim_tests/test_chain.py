"""The chain: clipping, non-finite skip, dynamic loss scaling, report, MultiSteps, determinism."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tjx.optim import (
    ClipStatsState,
    DynamicLossScaleState,
    OptimizerConfig,
    ScheduleConfig,
    ScheduleStatsState,
    build_optimizer,
    clip_by_global_norm_with_stats,
    dynamic_loss_scale,
    find_state,
    loss_scale_value,
    scale_loss,
    step_report,
    unscale_grads,
)


def _tree(seed: int, scale: float = 1.0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "w": jnp.asarray(rng.normal(size=(4, 6)) * scale, jnp.float32),
        "b": jnp.asarray(rng.normal(size=(6,)) * scale, jnp.float32),
    }


def _equal(a, b) -> bool:
    return all(
        bool(jnp.array_equal(x, y))
        for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=False)
    )


def test_nonfinite_step_is_skipped_counted_and_reported() -> None:
    params = _tree(0)
    tx = build_optimizer(OptimizerConfig(name="adamw", learning_rate=1e-2))
    update = jax.jit(tx.update)
    state = tx.init(params)
    for seed in (1, 2):
        updates, state = update(_tree(seed), state, params)
        params = optax.apply_updates(params, updates)
    inner_before = find_state(state, optax.ApplyIfFiniteState).inner_state
    for k, bad_value in enumerate((jnp.nan, jnp.inf), start=1):
        bad = _tree(3)
        bad["w"] = bad["w"].at[1, 2].set(bad_value)
        updates, state = update(bad, state, params)
        new_params = optax.apply_updates(params, updates)
        assert _equal(new_params, params)
        assert _equal(find_state(state, optax.ApplyIfFiniteState).inner_state, inner_before)
        rep = step_report(state, bad, updates, new_params)
        assert bool(rep["skipped"]) and int(rep["skipped_total"]) == k
        assert not bool(jnp.isfinite(rep["grad_norm"])) and float(rep["update_norm"]) == 0.0
    # The schedule's count did not advance on skipped steps; a good step resumes normally.
    assert int(find_state(state, ScheduleStatsState).steps) == 2
    updates, state = update(_tree(4), state, params)
    rep = step_report(state, _tree(4), updates, params)
    assert not bool(rep["skipped"]) and int(rep["skipped_total"]) == 2
    assert float(rep["update_norm"]) > 0 and int(find_state(state, ScheduleStatsState).steps) == 3


def test_without_skip_nan_propagates() -> None:
    params = _tree(0)
    tx = build_optimizer(OptimizerConfig(name="sgd", skip_nonfinite=False, clip_norm=None))
    bad = jax.tree.map(lambda g: g.at[0].set(jnp.nan), _tree(1))
    updates, state = tx.update(bad, tx.init(params), params)
    rep = step_report(state, bad, updates, params)
    assert not bool(rep["skipped"]) and int(rep["skipped_total"]) == 0
    assert bool(jnp.isnan(updates["b"][0]))


def test_global_norm_clipping_and_report() -> None:
    params = _tree(0)
    grads = _tree(1, scale=10.0)
    norm = float(optax.tree.norm(grads))
    cfg = OptimizerConfig(name="sgd", momentum=0.0, learning_rate=0.5, clip_norm=1.0)
    tx = build_optimizer(cfg)
    updates, state = jax.jit(tx.update)(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    rep = jax.jit(step_report)(state, grads, updates, new)
    assert float(rep["grad_norm"]) == pytest.approx(norm, rel=1e-6)
    assert bool(rep["clipped"]) and not bool(rep["skipped"])
    assert float(rep["update_norm"]) == pytest.approx(0.5, rel=1e-5)  # lr * clip_norm
    assert float(rep["param_norm"]) == pytest.approx(float(optax.tree.norm(new)), rel=1e-6)
    assert float(rep["learning_rate"]) == pytest.approx(0.5)
    np.testing.assert_allclose(updates["w"], -0.5 * grads["w"] / norm, rtol=1e-5)
    small = jax.tree.map(lambda g: g / (2 * norm), grads)
    _, state = tx.update(small, tx.init(params), params)
    assert not bool(find_state(state, ClipStatsState).clipped)
    # Without a threshold the transform records the norm and passes gradients through.
    rec = clip_by_global_norm_with_stats(None)
    out, st = rec.update(grads, rec.init(params))
    assert _equal(out, grads) and float(st.grad_norm) == pytest.approx(norm, rel=1e-6)


def test_report_learning_rate_follows_schedule() -> None:
    params = _tree(0)
    sched = ScheduleConfig("linear_warmup", peak_lr=1e-2, warmup_steps=4)
    tx = build_optimizer(OptimizerConfig(name="adamw", schedule=sched), total_steps=10)
    state, lrs = tx.init(params), []
    for seed in range(3):
        updates, state = tx.update(_tree(seed + 1), state, params)
        lrs.append(float(step_report(state, _tree(1), updates, params)["learning_rate"]))
    assert lrs == pytest.approx([0.0, 2.5e-3, 5e-3])


def test_report_without_chain_states_falls_back() -> None:
    params, grads = _tree(0), _tree(1)
    tx = optax.sgd(0.1)
    updates, state = tx.update(grads, tx.init(params), params)
    rep = step_report(state, grads, updates, params)
    assert float(rep["grad_norm"]) == pytest.approx(float(optax.tree.norm(grads)), rel=1e-6)
    assert bool(jnp.isnan(rep["learning_rate"])) and "loss_scale" not in rep


def test_dynamic_loss_scale_dynamics() -> None:
    params = _tree(0)
    ls = dynamic_loss_scale(init_scale=8.0, growth_interval=3, min_scale=2.0)
    state = ls.init(params)
    good, bad = _tree(1), jax.tree.map(lambda g: g.at[0].set(jnp.inf), _tree(1))
    scales = []
    for grads in [good, good, good, good, bad, good, bad, bad, bad]:
        out, state = ls.update(grads, state)
        scales.append(float(state.scale))
    # Doubles after 3 good steps in a row, halves on overflow, never below min_scale.
    assert scales == [8, 8, 16, 16, 8, 8, 4, 2, 2]
    assert int(state.good_steps) == 0
    np.testing.assert_array_equal(
        ls.update(good, DynamicLossScaleState(jnp.float32(4.0), jnp.int32(0)))[0]["w"],
        good["w"] / 4.0,
    )


def test_loss_scale_is_capped_so_it_never_reaches_inf() -> None:
    params = _tree(0)
    ls = dynamic_loss_scale(init_scale=2.0**120, growth_interval=1, max_scale=2.0**127)
    state = ls.init(params)
    for _ in range(4):  # uncapped: 2**121 ... 2**124, then 2**128 = inf in float32
        _, state = ls.update(_tree(1), state)
    for _ in range(4):
        _, state = ls.update(_tree(1), state)
    assert float(state.scale) == 2.0**127
    _, state = ls.update(jax.tree.map(lambda g: g.at[0].set(jnp.inf), _tree(1)), state)
    assert float(state.scale) == 2.0**126  # an overflow still halves it: not stuck
    for kw in (dict(init_scale=0.5), dict(init_scale=2.0**30), dict(factor=1.0)):
        with pytest.raises(ValueError, match="init_scale|factor"):
            dynamic_loss_scale(**kw)


def test_loss_scale_in_chain_matches_unscaled_training() -> None:
    x = jnp.asarray(np.random.default_rng(5).normal(size=(8, 4)), jnp.float32)
    params = _tree(0)

    def loss_fn(p):
        return jnp.mean(jnp.tanh(x @ p["w"] + p["b"]) ** 2)

    base = OptimizerConfig(name="adamw", learning_rate=1e-2, clip_norm=0.5)
    scaled_cfg = OptimizerConfig(
        name="adamw",
        learning_rate=1e-2,
        clip_norm=0.5,
        loss_scale="dynamic",
        loss_scale_init=1024.0,
        loss_scale_growth_interval=2,
    )
    runs = []
    for cfg in (base, scaled_cfg):
        tx, p = build_optimizer(cfg), params
        state = tx.init(p)

        @jax.jit
        def step(p, state, tx=tx):
            grads = jax.grad(lambda q: scale_loss(loss_fn(q), state))(p)
            updates, state = tx.update(grads, state, p)
            return optax.apply_updates(p, updates), state

        for _ in range(3):
            p, state = step(p, state)
        runs.append((p, state))
    (p0, _), (p1, s1) = runs
    for a, b in zip(jax.tree.leaves(p0), jax.tree.leaves(p1), strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(loss_scale_value(s1)) == 2048.0  # grew once after 2 good steps
    assert float(step_report(s1, p1, p1, p1)["loss_scale"]) == 2048.0
    assert float(loss_scale_value(runs[0][1])) == 1.0
    g = unscale_grads({"a": jnp.full((2,), 2048.0, jnp.float16)}, s1)
    assert g["a"].dtype == jnp.float16 and float(g["a"][0]) == 1.0


def test_fp16_overflow_halves_scale_and_skips() -> None:
    params = {"w": jnp.ones((3,), jnp.float16)}
    tx = build_optimizer(OptimizerConfig(name="sgd", loss_scale="dynamic", loss_scale_init=2.0**15))
    state = tx.init(params)
    grads = jax.grad(lambda p: scale_loss(jnp.sum(p["w"] * jnp.float16(4.0)), state))(params)
    assert not bool(jnp.all(jnp.isfinite(grads["w"])))  # 4 * 2**15 overflows float16
    updates, state = tx.update(grads, state, params)
    rep = step_report(state, grads, updates, params)
    assert bool(rep["skipped"]) and float(rep["loss_scale"]) == 2.0**14
    assert _equal(optax.apply_updates(params, updates), params)


def test_multi_steps_option_equals_mean_gradient_step() -> None:
    params, g1, g2 = _tree(0), _tree(1), _tree(2)
    ms = build_optimizer(OptimizerConfig(accumulation_steps=2, accumulation_mode="multi_steps"))
    one = build_optimizer(OptimizerConfig())
    state = ms.init(params)
    u1, state = ms.update(g1, state, params)
    assert float(optax.tree.norm(u1)) == 0.0
    u2, state = ms.update(g2, state, params)
    mean = jax.tree.map(lambda a, b: (a + b) / 2, g1, g2)
    want, _ = one.update(mean, one.init(params), params)
    for a, b in zip(jax.tree.leaves(u2), jax.tree.leaves(want), strict=False):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert int(find_state(state, ScheduleStatsState).steps) == 1


@pytest.mark.parametrize("name", ["adamw", "muon"])
def test_determinism(name: str) -> None:
    def run() -> list:
        params = _tree(0)
        tx = build_optimizer(OptimizerConfig(name=name, learning_rate=1e-2))
        state = tx.init(params)
        step = jax.jit(tx.update)
        for seed in (1, 2, 3):
            updates, state = step(_tree(seed), state, params)
            params = optax.apply_updates(params, updates)
        return jax.tree.leaves((params, state))

    a, b = run(), run()
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=False))
