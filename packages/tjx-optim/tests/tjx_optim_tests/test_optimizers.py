"""Each optimizer's first steps against a hand-written float64 numpy version of its rule."""

from __future__ import annotations

import functools

import jax
import numpy as np
import optax
import pytest

from tjx.optim import OptimizerConfig, build_optimizer, decay_mask, muon_mask

from . import _ref

STEPS = 3
LR = 1e-2


def _run(config: OptimizerConfig, params, grads_seq):
    tx = build_optimizer(config, total_steps=4)  # a schedule spans 4 steps
    state = tx.init(params)

    @jax.jit
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for g in grads_seq:
        params, state = step(params, state, g)
    return params


def _reference(rule, params, grads_seq, masks, **kw):
    ps = _ref.leaves(params)
    states = [{} for _ in ps]
    for t, g in enumerate(grads_seq, start=1):
        gs = _ref.leaves(g)
        ps = [
            rule(p, gi, st, t, decay=m, **kw)
            for p, gi, st, m in zip(ps, gs, states, masks, strict=False)
        ]
    return ps


def _data(seed: int):
    rng = np.random.default_rng(seed)
    params = _ref.small_tree(rng)
    grads_seq = [
        jax.tree.map(lambda x: np.asarray(rng.normal(size=x.shape), np.float32), params)
        for _ in range(STEPS)
    ]
    return params, grads_seq


CASES = {
    "adamw": (
        dict(b1=0.9, b2=0.99, eps=1e-8, weight_decay=0.1),
        functools.partial(_ref.adamw, lr=LR, b1=0.9, b2=0.99, eps=1e-8, wd=0.1),
    ),
    "adam": (
        dict(b1=0.8, b2=0.95, eps=1e-7, weight_decay=0.05),
        functools.partial(_ref.adam_l2, lr=LR, b1=0.8, b2=0.95, eps=1e-7, wd=0.05),
    ),
    "sgd": (
        dict(momentum=0.9, nesterov=False, weight_decay=0.01),
        functools.partial(_ref.sgd, lr=LR, momentum=0.9, nesterov=False, wd=0.01),
    ),
    "sgd_nesterov": (
        dict(momentum=0.8, nesterov=True),
        functools.partial(_ref.sgd, lr=LR, momentum=0.8, nesterov=True, wd=0.0),
    ),
    "lamb": (
        dict(b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01),
        functools.partial(_ref.lamb, lr=LR, b1=0.9, b2=0.999, eps=1e-6, wd=0.01),
    ),
    "lion": (
        dict(b1=0.9, b2=0.99, weight_decay=0.1),
        functools.partial(_ref.lion, lr=LR, b1=0.9, b2=0.99, wd=0.1),
    ),
    "adafactor": (
        dict(weight_decay=0.01, adafactor_min_dim_size_to_factor=4),
        functools.partial(_ref.adafactor, lr=LR, eps=1e-30, min_dim=4, wd=0.01),
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_steps_match_numpy(case: str) -> None:
    overrides, rule = CASES[case]
    name = case.split("_")[0]
    params, grads_seq = _data(seed=len(case))
    config = OptimizerConfig(name=name, learning_rate=LR, clip_norm=None, **overrides)
    got = _ref.leaves(_run(config, params, grads_seq))
    want = _reference(rule, params, grads_seq, _ref.mask_leaves(decay_mask(params)))
    for g, w in zip(got, want, strict=False):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=2e-6)
    # Sanity: the update really moved every parameter (a no-op would also "match" zeros).
    assert all(np.abs(g - p).max() > 1e-5 for g, p in zip(got, _ref.leaves(params), strict=False))


def test_muon_hidden_matrices_and_adamw_rest() -> None:
    params, grads_seq = _data(seed=7)
    config = OptimizerConfig(
        name="muon", learning_rate=LR, clip_norm=None, weight_decay=0.1, muon_adam_lr_ratio=0.5
    )
    got = _ref.leaves(_run(config, params, grads_seq))
    is_muon = _ref.mask_leaves(muon_mask(params))
    decays = _ref.mask_leaves(decay_mask(params))
    ps, states = _ref.leaves(params), [{} for _ in got]
    for t, g in enumerate(grads_seq, start=1):
        new = []
        for p, gi, st, mu, dec in zip(ps, _ref.leaves(g), states, is_muon, decays, strict=False):
            if mu:
                new.append(_ref.muon_matrix(p, gi, st, t, lr=LR, beta=0.95, wd=0.1, decay=dec))
            else:
                new.append(_ref.nadam(p, gi, st, t, lr=LR * 0.5, b1=0.9, b2=0.999, eps=1e-8))
        ps = new
    # Muon takes exactly the hidden matrices: qkv (wide) and fc (tall), not embeddings or head.
    assert sum(is_muon) == 2
    assert muon_mask(params)["embed"]["embedding"].value is False
    assert muon_mask(params)["lm_head"]["kernel"].value is False
    for g, w in zip(got, ps, strict=False):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def test_lr_schedule_applies_per_step() -> None:
    from tjx.optim import ScheduleConfig, build_schedule

    params, grads_seq = _data(seed=3)
    sched = ScheduleConfig(name="linear", peak_lr=LR, warmup_steps=1)
    config = OptimizerConfig(name="sgd", schedule=sched, momentum=0.0, clip_norm=None)
    got = _ref.leaves(_run(config, params, grads_seq))
    lrs = [float(build_schedule(sched, 4)(i)) for i in range(STEPS)]
    want = _ref.leaves(params)
    for lr, g in zip(lrs, grads_seq, strict=False):
        want = [p - lr * gi for p, gi in zip(want, _ref.leaves(g), strict=False)]
    assert lrs[0] == 0.0 and lrs[1] == pytest.approx(LR)
    for g, w in zip(got, want, strict=False):
        np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-7)
