"""GRPO's advantages, token log-probabilities and loss, against float64 NumPy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.grpo import CLIPPED_LOSSES
from tjx_nn_tests._helpers import build, llama_tiny


def _advantages(rewards: np.ndarray, g: int, scale: str) -> np.ndarray:
    """float64: reward less the group mean, over the (Bessel) std + 1e-4 (TRL's formula)."""
    r = np.asarray(rewards, np.float64)
    groups = r.reshape(-1, g)
    adv = (groups - groups.mean(1, keepdims=True)).reshape(-1)
    if scale == "group":
        return adv / (np.repeat(groups.std(1, ddof=1), g) + 1e-4)
    if scale == "batch":
        return adv / (r.std(ddof=1) + 1e-4)
    return adv


def _reference(logps, old, adv, mask, ref, ent, cfg, *, sg=None, ent_sg=None, total=None):
    """float64 NumPy of TRL's ``_compute_loss`` (the module docstring's formulas) for ``cfg``: the
    loss and the metrics by TRL's names. ``sg`` and ``ent_sg`` are the values TRL detaches (the
    ratio's cap in cispo, VESPO's weight, the off-policy drift; the entropy mask): the
    log-probabilities and entropies by default; a finite difference moves only the others."""
    logps, old, ref, mask, ent = (np.asarray(x, np.float64) for x in (logps, old, ref, mask, ent))
    sg = logps if sg is None else np.asarray(sg, np.float64)
    ent_sg = ent if ent_sg is None else np.asarray(ent_sg, np.float64)
    a = np.asarray(adv, np.float64)[:, None]
    count = np.maximum(mask.sum(-1, keepdims=True), 1)
    seq = cfg.importance_sampling_level == "sequence"
    log_w = ((logps - old) * mask).sum(-1, keepdims=True) / count if seq else logps - old
    log_w_sg = ((sg - old) * mask).sum(-1, keepdims=True) / count if seq else sg - old
    ratio, ratio_sg = np.exp(log_w), np.exp(log_w_sg)
    kl = np.zeros_like(logps)
    if cfg.beta > 0:
        kl = np.exp(ref - logps) - (ref - logps) - 1
        kl = kl * ratio if cfg.kl_correction else kl
    eps, high, kind = cfg.epsilon, cfg.clip_high, cfg.loss_type
    out = {}
    if kind == "cispo":
        per = -np.minimum(ratio_sg, high) * a * logps
    elif kind == "sapo":
        tau = np.where(a > 0, cfg.sapo_temperature_pos, cfg.sapo_temperature_neg)
        per = -(1 / (1 + np.exp(-tau * (ratio - 1)))) * 4 / tau * a
    elif kind == "vespo":
        log_v = np.clip((np.clip(sg - old, -20, 20) * mask).sum(-1, keepdims=True),
                        np.log(1e-8), 20)  # fmt: skip
        k = np.where(a >= 0, cfg.vespo_k_pos, cfg.vespo_k_neg)
        lam = np.where(a >= 0, cfg.vespo_lambda_pos, cfg.vespo_lambda_neg)
        phi = np.exp(lam + k * log_v - lam * np.exp(log_v))
        per = -phi * a * logps
        out["vespo/phi_seq_mean"] = phi.mean()
    else:
        capped = ratio if cfg.delta is None else np.minimum(ratio, cfg.delta)
        per = -np.minimum(capped * a, np.clip(ratio, 1 - eps, 1 + high) * a)
    if cfg.off_policy_mask_threshold is not None:
        drift = ((old - sg) * mask).sum(-1, keepdims=True) / count
        per = per * ((a >= 0) | (drift <= cfg.off_policy_mask_threshold))
    kept = mask
    if cfg.top_entropy_quantile < 1:
        cut = np.quantile(ent_sg[mask > 0], 1 - cfg.top_entropy_quantile)  # linear, as torch's
        kept = mask * ((ent_sg * mask >= cut) & (mask > 0))
        per = per * kept
    per = np.broadcast_to(per + cfg.beta * kl, mask.shape)
    rows, tokens = (per * mask).sum(-1), max(mask.sum(), 1)
    if kind in ("grpo", "sapo"):
        loss = np.mean(rows / count[:, 0])
    elif kind == "bnpo":
        loss = rows.sum() / tokens
    elif kind == "dr_grpo":
        loss = rows.sum() / (per.shape[0] * per.shape[1])
    elif kind == "luspo":
        loss = rows.mean()
    else:
        loss = rows.sum() / (tokens if total is None else total)

    def mean(x):  # TRL's global_masked_mean
        x = np.asarray(x, np.float64)
        return x.mean() if x.shape[1] == 1 else (x * mask).sum() / tokens

    def per_row(x):  # TRL's masked_seq_mean, rows without a token left out (nanmin/nanmax)
        x, some = np.asarray(x, np.float64), mask.sum(-1) > 0
        return x[:, 0] if x.shape[1] == 1 else (x * mask).sum(-1)[some] / mask.sum(-1)[some]

    out["kl"] = mean(kl)
    out["entropy"] = mean(ent)
    if kind in CLIPPED_LOSSES:
        low = (capped < 1 - eps) & (a < 0)
        up = (capped > 1 + high) & (a > 0)
        out |= {"clip_ratio/low_mean": mean(low), "clip_ratio/high_mean": mean(up),
                "clip_ratio/region_mean": mean(low | up),
                "clip_ratio/low_min": per_row(low).min(),
                "clip_ratio/high_max": per_row(up).max()}  # fmt: skip
    if kind == "cispo":
        out["cispo_clip_ratio"] = mean((ratio > high) & (a > 0))
    if cfg.entropy_coef > 0:
        out |= {"policy_loss": loss, "entropy_coef": cfg.entropy_coef}
        loss = loss - cfg.entropy_coef * (ent * kept).sum() / max(kept.sum(), 1)
    return loss, out


#: Each loss variant a unit test checks: TRL's settings (common: β 0.04, ε 0.2, ε_high 0.28).
VARIANTS = {
    **{k: {"loss_type": k} for k in ("grpo", "bnpo", "dr_grpo", "dapo")},
    "dapo-no-kl-correction": {"loss_type": "dapo", "kl_correction": False},
    "gspo": {
        "loss_type": "grpo",
        "importance_sampling_level": "sequence",
        "epsilon": 3e-4,
        "epsilon_high": 4e-4,
    },
    "gspo-bnpo": {"loss_type": "bnpo", "importance_sampling_level": "sequence"},
    "gspo-dr_grpo-off-policy": {
        "loss_type": "dr_grpo",
        "importance_sampling_level": "sequence",
        "off_policy_mask_threshold": 0.05,
    },
    "dapo-two-sided": {"loss_type": "dapo", "delta": 1.4},
    "cispo": {"loss_type": "cispo", "epsilon_high": 1.2},
    "cispo-sequence": {
        "loss_type": "cispo",
        "epsilon_high": 1.1,
        "importance_sampling_level": "sequence",
    },
    "sapo": {"loss_type": "sapo", "sapo_temperature_pos": 0.9, "sapo_temperature_neg": 1.3},
    "sapo-sequence": {"loss_type": "sapo", "importance_sampling_level": "sequence"},
    "luspo": {"loss_type": "luspo", "importance_sampling_level": "sequence"},
    "vespo": {"loss_type": "vespo", "vespo_k_neg": 2.5, "vespo_lambda_pos": 2.0},
    "entropy": {"loss_type": "dapo", "top_entropy_quantile": 0.3, "entropy_coef": 0.02},
    "entropy-top-one": {"loss_type": "grpo", "top_entropy_quantile": 0.0, "beta": 0.0},
}


def _kinks(cfg, logps, old, mask) -> np.ndarray:
    """bool ``[rows, T]``: the tokens whose ratio sits within 1e-3 of a clip edge or cap (where
    the objective has a kink: no central difference there)."""
    lr = np.asarray(logps, np.float64) - old
    if cfg.importance_sampling_level == "sequence":
        mean = (lr * mask).sum(-1, keepdims=True) / np.maximum(mask.sum(-1, keepdims=True), 1)
        lr = np.broadcast_to(mean, lr.shape)
    ratio = np.exp(lr)
    edges = [1 - cfg.epsilon, 1 + cfg.clip_high] + ([cfg.delta] if cfg.delta else [])
    return np.any([np.abs(ratio - e) < 1e-3 for e in edges], axis=0)


def _inputs(rng: np.random.Generator):
    rows, t = 6, 7
    logps = rng.uniform(-4, -0.1, (rows, t)).astype(np.float32)
    # Ratios far enough from 1 that both clips bite; the reference away from the policy: a KL.
    old = (logps + rng.normal(0, 0.4, (rows, t))).astype(np.float32)
    ref = (logps + rng.normal(0, 0.3, (rows, t))).astype(np.float32)
    mask = (rng.uniform(size=(rows, t)) < 0.8).astype(np.float32)
    mask[:, 0] = 1.0
    mask[-1] = 0.0  # a completion with no token: counted in grpo's mean, as TRL counts it
    adv = rng.normal(size=rows).astype(np.float32)
    ent = rng.uniform(0.1, 3.0, (rows, t)).astype(np.float32) * mask
    return logps, old, ref, mask, adv, ent


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_advantages_are_the_reward_less_its_group_mean_over_the_chosen_std(scale: str):
    rng = np.random.default_rng()
    g = int(rng.integers(2, 6))
    rewards = rng.normal(size=3 * g).astype(np.float32)
    rewards[:g] = 1.0  # a group whose completions all scored alike: advantages of exactly 0
    got = np.asarray(tnn.group_advantages(jnp.asarray(rewards), g, scale=scale))
    np.testing.assert_allclose(got, _advantages(rewards, g, scale), rtol=1e-5, atol=1e-6)
    assert np.all(got[:g] == 0.0)


def test_a_batch_that_does_not_split_into_groups_is_refused():
    with pytest.raises(ValueError, match="do not split into groups of 4"):
        tnn.group_advantages(jnp.zeros(6), 4)
    with pytest.raises(ValueError, match="groups of 1"):
        tnn.group_advantages(jnp.zeros(6), 1)
    with pytest.raises(ValueError, match="scale"):
        tnn.group_advantages(jnp.zeros(6), 2, scale="median")


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_each_loss_variant_its_gradient_and_metrics_match_a_float64_reference(variant: str):
    rng = np.random.default_rng()
    logps, old, ref, mask, adv, ent = _inputs(rng)
    cfg = tnn.GrpoConfig(**{"beta": 0.04, "epsilon": 0.2, "epsilon_high": 0.28,
                            **VARIANTS[variant]})  # fmt: skip

    def loss(x, e):
        return tnn.grpo_loss(x, jnp.asarray(old), jnp.asarray(adv), jnp.asarray(mask),
                             config=cfg, ref_logps=jnp.asarray(ref), entropies=e)  # fmt: skip

    out = loss(jnp.asarray(logps), jnp.asarray(ent))
    # The loss is a mean of ~40 signed float32 terms of size ~1 that may cancel to ~1e-3 (a
    # relative 1.3e-5 was seen on 2026-11-27): relative to the terms, not to the sum.
    want, metrics = _reference(logps, old, adv, mask, ref, ent, cfg)
    np.testing.assert_allclose(float(out.loss), want, rtol=1e-5, atol=1e-6)
    assert set(out.metrics()) == set(metrics)
    for name, value in out.metrics().items():
        np.testing.assert_allclose(float(value), metrics[name], rtol=1e-5, atol=1e-6, err_msg=name)
    # d loss / d logps (and d loss / d entropies: the bonus) by central differences of the
    # float64 reference, moving what TRL differentiates and holding what it detaches, on
    # tokens away from a clip's edge (where the objective has a kink).
    grad, grad_ent = (np.asarray(g) for g in jax.grad(lambda x, e: loss(x, e).loss, (0, 1))(
        jnp.asarray(logps), jnp.asarray(ent)))  # fmt: skip
    h, base = 1e-6, logps.astype(np.float64)
    kinks = _kinks(cfg, logps, old, mask)
    checked = 0
    for i, j in zip(*np.nonzero(mask), strict=True):
        if kinks[i, j]:
            continue
        hi, lo = base.copy(), base.copy()
        hi[i, j] += h
        lo[i, j] -= h
        f = [_reference(x, old, adv, mask, ref, ent, cfg, sg=base)[0] for x in (hi, lo)]
        np.testing.assert_allclose(grad[i, j], (f[0] - f[1]) / (2 * h), rtol=1e-3, atol=1e-6)
        e_hi, e_lo = ent.astype(np.float64), ent.astype(np.float64)
        e_hi[i, j] += h
        e_lo[i, j] -= h
        f = [_reference(base, old, adv, mask, ref, e, cfg, ent_sg=ent)[0] for e in (e_hi, e_lo)]
        np.testing.assert_allclose(grad_ent[i, j], (f[0] - f[1]) / (2 * h), rtol=1e-3, atol=1e-6)
        checked += 1
    assert checked > 6
    assert np.all(grad[mask == 0] == 0.0)  # masked tokens get no gradient
    assert np.any(grad_ent != 0) == (cfg.entropy_coef > 0)  # only the bonus differentiates them


#: One variant of each aggregation (and GSPO's ratio, the off-policy mask, the entropy bonus)
#: for micro-batches (the entropy mask's quantile is the whole batch's: refused there).
MICRO_VARIANTS = ["grpo", "bnpo", "dr_grpo", "dapo", "gspo", "gspo-dr_grpo-off-policy", "cispo",
                  "sapo", "luspo", "vespo", "entropy-bonus"]  # fmt: skip
VARIANTS_MICRO = {**VARIANTS, "entropy-bonus": {"loss_type": "bnpo", "entropy_coef": 0.02}}


@pytest.mark.parametrize("k", [2, 4])
@pytest.mark.parametrize("variant", MICRO_VARIANTS)
def test_micro_batches_with_the_batchs_totals_add_up_to_the_whole_batch(variant: str, k: int):
    """#72: k micro-batches (rows i, i + k, ..., as the trainer interleaves them), each scored
    with the whole batch's `GrpoTotals`: their losses, gradients (logps and entropies) and
    merged metrics are the whole batch's within 1e-6 (float32), for every aggregation."""
    rng = np.random.default_rng()
    parts = [_inputs(rng) for _ in range(2)]  # 12 rows: split into 2 or 4
    logps, old, ref, mask, adv, ent = (np.concatenate(x) for x in zip(*parts, strict=True))
    mask[:k] = 0.0  # a micro-batch holds a completion without a scored token
    logps, old, ref, mask, adv, ent = (jnp.asarray(x) for x in (logps, old, ref, mask, adv, ent))
    cfg = tnn.GrpoConfig(**{"beta": 0.04, "epsilon": 0.2, "epsilon_high": 0.28,
                            **VARIANTS_MICRO[variant]})  # fmt: skip
    totals = tnn.grpo.batch_totals(mask)

    every = slice(None)

    def score(x, e, rows=every, with_totals=None):
        return tnn.grpo_loss(x[rows], old[rows], adv[rows], mask[rows], config=cfg,
                             ref_logps=ref[rows], entropies=e[rows],
                             totals=with_totals)  # fmt: skip

    def accumulated(x, e):
        outs = [score(x, e, slice(i, None, k), totals) for i in range(k)]
        merged = tnn.grpo.merge_micro_metrics(
            {n: jnp.stack([o.metrics()[n] for o in outs]) for n in outs[0].metrics()}
        )
        return sum(o.loss for o in outs), merged

    whole = score(logps, ent)
    loss, merged = accumulated(logps, ent)
    np.testing.assert_allclose(float(loss), float(whole.loss), rtol=1e-6, atol=1e-6)
    assert set(merged) == set(whole.metrics())
    for name, value in whole.metrics().items():
        np.testing.assert_allclose(float(merged[name]), float(value), rtol=1e-6, atol=1e-6,
                                   err_msg=name)  # fmt: skip
    want = jax.grad(lambda x, e: score(x, e).loss, (0, 1))(logps, ent)
    got = jax.grad(lambda x, e: accumulated(x, e)[0], (0, 1))(logps, ent)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=1e-6, atol=1e-6)
    assert np.any(np.asarray(want[0]) != 0)
    if VARIANTS_MICRO[variant]["loss_type"] == "bnpo":  # a micro-batch's own token mean is not
        own = sum(score(logps, ent, slice(i, None, k)).loss for i in range(k)) / k
        assert abs(float(own) - float(whole.loss)) > 1e-4


def test_a_micro_batch_with_the_entropy_mask_is_refused():
    x, cfg = jnp.zeros((2, 3)), tnn.GrpoConfig(top_entropy_quantile=0.2)
    with pytest.raises(ValueError, match="whole batch's, which a micro-batch"):
        tnn.grpo_loss(x, x, jnp.zeros(2), jnp.ones((2, 3)), config=cfg, entropies=x,
                      totals=tnn.grpo.batch_totals(jnp.ones((4, 3))))  # fmt: skip


def test_the_logged_shares_count_clipped_tokens_of_the_right_sign():
    logps = jnp.zeros((1, 4))
    old = jnp.log(jnp.array([[1 / 0.5, 1 / 0.5, 1 / 2.0, 1.0]]))  # ratios 0.5, 0.5, 2, 1
    mask = jnp.ones((1, 4))
    cfg = tnn.GrpoConfig(epsilon=0.2)
    neg = tnn.grpo_loss(logps, old, jnp.array([-1.0]), mask, config=cfg)
    pos = tnn.grpo_loss(logps, old, jnp.array([1.0]), mask, config=cfg)
    assert float(neg.clip_low) == 0.5 and float(neg.clip_high) == 0.0
    assert float(pos.clip_high) == 0.25 and float(pos.clip_low) == 0.0
    assert float(pos.clip_region) == 0.25 and float(pos.kl) == 0.0 and float(pos.tokens) == 4
    assert set(pos.metrics()) == {
        "kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
        "clip_ratio/low_min", "clip_ratio/high_max",
    }  # fmt: skip
    # GSPO: one ratio per completion, exp(mean log-ratio) = exp(log(0.5 · 0.5 · 2 · 1) / 4)
    # = 0.84, clipped below at 1 - ε: the whole completion counts as clipped (a share of rows).
    seq = tnn.GrpoConfig(epsilon=0.1, importance_sampling_level="sequence")
    two = jnp.concatenate([old, jnp.zeros((1, 4))])  # a second completion, on-policy
    minus = jnp.array([-1.0, -1.0])
    out = tnn.grpo_loss(jnp.zeros((2, 4)), two, minus, jnp.ones((2, 4)), config=seq)
    assert float(out.clip_low) == 0.5 and float(out.metrics()["clip_ratio/low_min"]) == 0.0
    assert float(out.clip_high) == 0.0


def test_dapo_divides_by_the_whole_generation_batchs_tokens_when_given():
    rng = np.random.default_rng()
    logps = jnp.asarray(rng.uniform(-3, -0.5, (4, 5)), jnp.float32)
    mask, adv = jnp.ones((4, 5)), jnp.asarray(rng.normal(size=4), jnp.float32)
    cfg = tnn.GrpoConfig(loss_type="dapo")
    own = tnn.grpo_loss(logps, logps, adv, mask, config=cfg)
    whole = tnn.grpo_loss(logps, logps, adv, mask, config=cfg, total_tokens=jnp.asarray(60.0))
    np.testing.assert_allclose(float(whole.loss) * 60, float(own.loss) * 20, rtol=1e-6)


def test_a_kl_penalty_without_the_references_log_probabilities_is_refused():
    x = jnp.zeros((2, 3))
    with pytest.raises(ValueError, match="ref_logps"):
        tnn.grpo_loss(x, x, jnp.zeros(2), x, config=tnn.GrpoConfig(beta=0.1))


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"beta": -0.1}, "beta must be a number >= 0"),
        ({"epsilon": 0}, "epsilon must be a number > 0"),
        ({"epsilon_high": True}, "epsilon_high"),
        ({"loss_type": "ppo"}, "loss_type"),
        ({"scale_rewards": "max"}, "scale_rewards"),
        ({"importance_sampling_level": "word"}, "importance_sampling_level must be one of"),
        ({"epsilon": float("nan")}, "epsilon must be a number > 0; got nan"),
        ({"top_entropy_quantile": 1.5}, "top_entropy_quantile must be a number >= 0, <= 1"),
        ({"entropy_coef": -0.1}, "entropy_coef must be a number >= 0"),
        ({"off_policy_mask_threshold": 0}, "off_policy_mask_threshold must be a number > 0 or"),
        ({"sapo_temperature_neg": 0, "loss_type": "sapo"}, "sapo_temperature_neg must be"),
        ({"vespo_lambda_pos": 0, "loss_type": "vespo"}, "vespo_lambda_pos must be"),
        ({"loss_type": "luspo"}, "luspo weights GSPO's sequence ratio.*set GrpoConfig.importance"),
        (
            {"loss_type": "vespo", "importance_sampling_level": "sequence"},
            "vespo takes its own sequence weight",
        ),
        ({"loss_type": "cispo"}, "cispo caps the ratio itself at ε_high.*set GrpoConfig.epsilon_"),
        ({"delta": 1.25, "epsilon_high": 0.28}, r"delta: 1.25 must be > 1 \+ ε_high \(1.28\)"),
        ({"delta": 2.0, "loss_type": "sapo"}, "delta: applies to loss_type grpo or bnpo"),
        ({"sapo_temperature_pos": 2.0}, "sapo_temperature_pos: applies to loss_type sapo, not"),
        ({"vespo_k_pos": 1.0, "loss_type": "grpo"}, "vespo_k_pos: applies to loss_type vespo"),
    ],
)
def test_a_bad_grpo_setting_names_itself(kw, match):
    with pytest.raises(ValueError, match=match):
        tnn.GrpoConfig(**kw)


def test_the_entropy_mask_and_bonus_need_the_entropies():
    x = jnp.zeros((2, 3))
    for cfg in (tnn.GrpoConfig(top_entropy_quantile=0.5), tnn.GrpoConfig(entropy_coef=0.1)):
        with pytest.raises(ValueError, match="needs the policy's token entropies"):
            tnn.grpo_loss(x, x, jnp.zeros(2), x, config=cfg)


def test_two_updates_on_one_rollout_clip_and_move_off_the_reference():
    """μ = 2, β > 0: the second update's ratios are to the policy that sampled, one step back,
    so some tokens clip and the KL to the reference (the start) is positive; with μ = 1, β = 0
    (every step on its own rollout, no reference) both are 0. The clipped loss is checked
    against the float64 reference and must differ from the unclipped one."""
    model = build(llama_tiny())
    rng = np.random.default_rng()
    vocab = model.config.vocab_size
    ids = jnp.asarray(rng.integers(0, vocab, (6, 9)), jnp.int32)
    targets = ids[:, 1:].at[:, :3].set(-100)  # a prompt of 3 tokens, completions of 5
    batch = {"inputs": ids[:, :-1], "targets": targets}
    mask = jnp.asarray(targets >= 0, jnp.float32)
    adv = tnn.group_advantages(jnp.asarray(rng.normal(size=6), jnp.float32), 3)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    cfg = tnn.GrpoConfig(beta=0.1, epsilon=0.02)

    def logps_of(p):
        return tnn.token_logprobs(nnx.merge(graphdef, p, rest), batch)

    start = logps_of(params)  # the sampling policy (π_old) and the reference: the start

    def update_loss(p, old, config):
        logps = logps_of(p)
        old = jax.lax.stop_gradient(logps) if old is None else old
        return tnn.grpo_loss(logps, old, adv, mask, config=config, ref_logps=start)

    # The first of μ = 2 updates: ratio 1, no clipping; a plain SGD step of it.
    first = jax.grad(lambda p: update_loss(p, start, cfg).loss)(params)
    moved = jax.tree.map(lambda w, g: w - 2.0 * g, params, first)
    second = update_loss(moved, start, cfg)
    assert float(second.clip_region) > 0 and float(second.kl) > 0
    now = np.asarray(logps_of(moved))
    s0, m0, r0 = np.asarray(start), np.asarray(mask), np.asarray(adv)
    zero = np.zeros_like(now)
    want, _ = _reference(now, s0, r0, m0, s0, zero, cfg)
    unclipped, _ = _reference(now, s0, r0, m0, s0, zero, tnn.GrpoConfig(beta=0.1, epsilon=100.0))
    np.testing.assert_allclose(float(second.loss), want, rtol=1e-5, atol=1e-6)
    assert abs(want - unclipped) > 1e-4
    # μ = 1, β = 0: the update's π_old is the policy itself, and no reference.
    alone = update_loss(moved, None, tnn.GrpoConfig(epsilon=0.02))
    assert float(alone.clip_region) == 0 and float(alone.kl) == 0


def test_token_log_probabilities_are_the_targets_log_softmax_and_sum_to_the_sequences():
    model = build(llama_tiny())
    rng = np.random.default_rng()
    inputs = rng.integers(0, model.config.vocab_size, (3, 8)).astype(np.int32)
    targets = rng.integers(0, model.config.vocab_size, (3, 8)).astype(np.int32)
    targets[:, :3] = -100  # the prompt is not scored
    batch = {"inputs": jnp.asarray(inputs), "targets": jnp.asarray(targets)}
    got = np.asarray(tnn.token_logprobs(model, batch))
    logits = np.asarray(model(batch["inputs"], deterministic=True), np.float64)
    logz = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    picked = np.take_along_axis(logits, np.maximum(targets, 0)[..., None], -1)[..., 0] - logz
    np.testing.assert_allclose(got, np.where(targets != -100, picked, 0.0), atol=2e-5)
    sums, _ = tnn.sequence_logprobs(model, batch, chunked=False)
    np.testing.assert_allclose(got.sum(-1), np.asarray(sums), rtol=1e-5)
