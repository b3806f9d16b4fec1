"""The group-relative policy optimisation (GRPO) loss (`grpo_loss`) and what it logs (`GrpoOutput`).

GRPO (Shao et al. 2024, DeepSeekMath) samples ``G`` completions per prompt, scores each with a
program (a reward), and trains the policy on the completion tokens with PPO's clipped objective,
where the baseline is the group's own mean reward instead of a value model:

- **advantages** (`group_advantages`): ``A_i = r_i - mean(r_group)``, divided by the group's
  standard deviation (``scale="group"``, Bessel-corrected as TRL's ``nanstd``) or the batch's
  (``"batch"``) plus ``1e-4``, or not divided (``"none"``, Dr. GRPO's advice);
- **ratio** (``importance_sampling_level``): per completion token ``ρ = exp(log π(t) - log
  π_old(t))`` (``"token"``), where ``π_old`` is the policy that sampled the rollout (``ρ = 1`` on
  the first of the μ optimisation steps); or one per completion, ``s = exp(mean_t (log π(t) -
  log π_old(t)))``, broadcast to its tokens (``"sequence"``: GSPO, Zheng et al. 2025, clipped
  with its own small ε, e.g. 3e-4 / 4e-4);
- **per-token loss** (``loss_type``): ``-min(ρ' A, clip(ρ, 1 - ε_low, 1 + ε_high) A)`` for the
  clipped losses (`CLIPPED_LOSSES`), ``ρ' = min(ρ, δ)`` with INTELLECT-2's two-sided ``delta``,
  else ``ρ``; ``cispo`` (MiniMax-M1) ``-sg(min(ρ, ε_high)) A log π``; ``sapo`` (soft adaptive)
  ``-σ(τ (ρ - 1)) 4 / τ A`` with ``τ`` by the advantage's sign; ``vespo`` ``-sg(φ(w)) A log π``
  with ``w`` the completion's summed log-ratio, exponentiated, and ``φ(w) = e^λ w^k e^(-λ w)``
  (``k``, ``λ`` by the sign); then, when set, the off-policy sequence mask (DeepSeek-V3.2: a
  completion with ``A < 0`` whose mean ``log π_old - log π`` exceeds
  ``off_policy_mask_threshold`` is dropped) and the high-entropy token mask
  (``top_entropy_quantile`` ρ: the tokens at or above the batch's ``1 - ρ`` entropy quantile);
  then ``+ β KL``, the KL to the reference policy estimated per token as ``exp(r - l) - (r - l) -
  1`` (Schulman's k3, ``l`` and ``r`` the policy's and the reference's log-probabilities), only
  when ``β > 0``, and multiplied by the (differentiable) ratio by default (``kl_correction``:
  DeepSeek-V3.2's unbiased reverse-KL gradient, TRL's ``use_bias_correction_kl``);
- **aggregation** (`GRPO_LOSSES`, TRL's ``loss_type``): ``grpo`` and ``sapo`` the mean over
  completions of each one's token mean; ``bnpo`` the token mean over the batch; ``dr_grpo`` the
  token sum over ``rows × max_completion_length``; ``dapo`` (TRL's default), ``cispo`` and
  ``vespo`` the token sum over the tokens of the whole generation batch (``total_tokens``; the
  batch's own count when not given); ``luspo`` the mean over completions of each one's token
  sum (GSPO's ratio, each completion weighted by its length);
- **entropy bonus**: ``- entropy_coef ×`` the token mean of the policy's entropy (over the
  tokens the entropy mask keeps).

**Micro-batches** (`GrpoTotals`): a rollout batch scored in ``k`` parts (the trainer's
``optimizer.accumulation_steps``) gives each part the whole batch's rows and completion tokens,
counted once before the parts; each part's loss is then its share of the batch's (its token or
row sums over the batch's counts), so the parts' losses, gradients and logged shares add up to
the batch's for every ``loss_type`` (`merge_micro_metrics` takes the extremes' min and max).
A part's own counts would not: ``bnpo``'s and ``dapo``'s token means over each part differ
from the batch's where the parts' token counts differ. The entropy mask's quantile is the
batch's, over entropies of the policy being differentiated, which no part knows: refused.

These are the formulas of TRL's ``GRPOTrainer._compute_loss`` (trl 1.16) and its settings of the
same names (no vLLM correction, no adaptive entropy coefficient); the peer test holds tjx's loss,
gradient and logged metrics to TRL's within 1e-5 for every loss type and ratio level. The metrics
carry TRL's names (`GrpoOutput.metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from tjx.nn.grpo.config import CLIPPED_LOSSES, GrpoConfig

__all__ = ["GrpoOutput", "GrpoTotals", "batch_totals", "grpo_loss", "merge_micro_metrics"]

Array = jax.Array

#: VESPO's bounds on a completion's summed log-ratio (TRL's: ``log(1e-8)`` below, 20 above).
_VESPO_LOG_W = (math.log(1e-8), 20.0)


class GrpoOutput(NamedTuple):
    """A GRPO loss and what to log about it (a pytree: returns from ``jax.jit``).

    Attributes
    ----------
    loss : Array
        Scalar float32, aggregated as the config's ``loss_type`` (the entropy bonus included).
    kl : Array
        Scalar: the token mean of the KL estimate (ratio-weighted with ``kl_correction``, as TRL
        logs it; 0 when ``β = 0``: no reference was given).
    clip_low, clip_high, clip_region : Array
        Scalars: the share of completion tokens (of completions, with sequence-level ratios)
        whose ratio was clipped below (with a negative advantage), above (with a positive one),
        either; 0 for a loss without PPO's clip (cispo, sapo, vespo).
    tokens : Array
        Scalar float32: how many completion tokens the batch scored.
    logged : dict
        TRL's metrics of this loss by TRL's names (`metrics`).
    """

    loss: Array
    kl: Array
    clip_low: Array
    clip_high: Array
    clip_region: Array
    tokens: Array
    logged: dict[str, Array]

    def metrics(self) -> dict[str, Array]:
        """What TRL's ``_compute_loss`` logs, by its names: ``kl`` (also when ``β = 0``: 0),
        ``entropy`` (when the entropies were given); for the clipped losses
        ``clip_ratio/{low,high,region}_mean``, ``clip_ratio/low_min`` and
        ``clip_ratio/high_max`` (the extremes over completions of each one's clipped share);
        ``cispo_clip_ratio`` (cispo), ``vespo/phi_seq_mean`` (vespo); ``policy_loss`` (the loss
        before the bonus) and ``entropy_coef`` with an entropy bonus."""
        return dict(self.logged)


class GrpoTotals(NamedTuple):
    """A whole rollout batch's counts, for `grpo_loss` of one of its micro-batches.

    Attributes
    ----------
    rows : int
        The batch's completions (rows), the divisor of ``grpo``, ``sapo``, ``luspo``,
        ``dr_grpo`` (times the completion length) and of the per-completion shares.
    tokens : Array
        Scalar float32: the batch's scored completion tokens, the divisor of ``bnpo``,
        ``dapo``, ``cispo``, ``vespo`` (without ``total_tokens``), the per-token shares and the
        entropy bonus.
    """

    rows: int
    tokens: Array


def batch_totals(mask: Array) -> GrpoTotals:
    """The `GrpoTotals` of a rollout batch from its ``[rows, T]`` completion mask (counted once,
    before the batch is split into micro-batches)."""
    return GrpoTotals(int(mask.shape[0]), jnp.sum(mask.astype(jnp.float32)))


#: How a logged metric of micro-batches' `grpo_loss` (with `GrpoTotals`) combines into the
#: batch's: these by min or max over the micro-batches, ``entropy_coef`` (a constant) taken
#: once; every other one is a share of the batch's and adds up.
_MICRO_PICK: dict[str, Callable[..., Array]] = {
    "clip_ratio/low_min": jnp.min,
    "clip_ratio/high_max": jnp.max,
}


def merge_micro_metrics(stacked: dict[str, Array]) -> dict[str, Array]:
    """The whole batch's `GrpoOutput.metrics` from its micro-batches' (each scored with the
    batch's `GrpoTotals`), stacked on a leading axis of ``k``: the shares summed, the extremes'
    min / max (a micro-batch without a scored completion gives ±inf there: 0 when all do, as
    for the whole batch), ``entropy_coef`` the first."""
    merged: dict[str, Array] = {}
    for name, values in stacked.items():
        if name in _MICRO_PICK:
            picked = _MICRO_PICK[name](values, axis=0)
            merged[name] = jnp.where(jnp.isinf(picked), 0.0, picked)
        elif name == "entropy_coef":
            merged[name] = values[0]
        else:
            merged[name] = jnp.sum(values, axis=0)
    return merged


def _safe(x: Array) -> Array:
    """``max(x, 1)``: a count to divide by (TRL's ``clamp(min=1.0)``)."""
    return jnp.maximum(x, 1.0)


def _high_entropy_mask(entropies: Array, mask: Array, threshold: float) -> Array:
    """TRL's ``get_high_entropy_mask``: the scored tokens whose entropy is at or above the
    ``threshold`` quantile (linear interpolation, ``torch.quantile``'s) of the batch's scored
    tokens' entropies; none when no token is scored."""
    valid = mask > 0
    count = jnp.sum(valid)
    ranked = jnp.sort(jnp.where(valid, entropies, jnp.inf).reshape(-1))
    last = jnp.maximum(count - 1, 0)
    pos = threshold * last.astype(jnp.float32)
    lo = jnp.floor(pos).astype(jnp.int32)
    hi = jnp.minimum(lo + 1, last)
    a, b = ranked[lo], ranked[hi]
    cut = a + (pos - lo) * (b - a)
    return (entropies * mask >= cut) & valid & (count > 0)


def _vespo_weights(log_ratio: Array, adv: Array, mask: Array, config: GrpoConfig) -> Array:
    """VESPO's ``φ(w) = exp(λ + k log w - λ w)`` per completion (TRL's ``get_gamma_weights``,
    no gradient): ``log w`` the completion's summed token log-ratio, each clamped to ±20, then
    to ``[log 1e-8, 20]``; ``k``, ``λ`` by the advantage's sign; ``[rows, 1]``."""
    lr = jnp.clip(jax.lax.stop_gradient(log_ratio), -20.0, 20.0)
    log_w = jnp.clip(jnp.sum(lr * mask, axis=-1, keepdims=True), *_VESPO_LOG_W)
    nonneg = adv >= 0
    k = jnp.where(nonneg, config.vespo_k_pos, config.vespo_k_neg)
    lam = jnp.maximum(jnp.where(nonneg, config.vespo_lambda_pos, config.vespo_lambda_neg), 1e-4)
    phi = jnp.exp(lam + k * log_w - lam * jnp.exp(log_w))
    return jnp.nan_to_num(phi, nan=0.0, posinf=0.0, neginf=0.0)


def grpo_loss(
    logps: Array,
    old_logps: Array,
    advantages: Array,
    mask: Array,
    *,
    config: GrpoConfig,
    ref_logps: Array | None = None,
    entropies: Array | None = None,
    max_completion_length: int | None = None,
    total_tokens: Array | None = None,
    totals: GrpoTotals | None = None,
) -> GrpoOutput:
    """The GRPO loss of one batch of completions (the module docstring's formulas).

    Parameters
    ----------
    logps : Array
        float32 ``[rows, T]``: the policy's log-probability of each completion token (the
        gradient flows through these).
    old_logps : Array
        ``[rows, T]``: the sampling policy's (no gradient; on the first optimisation step of a
        rollout, the same values as ``logps``).
    advantages : Array
        ``[rows]`` (`group_advantages`).
    mask : Array
        ``[rows, T]``, 1 on the completion tokens scored, 0 on padding and the prompt.
    config : GrpoConfig
        β, ε, the loss type, the ratio's level and the masks.
    ref_logps : Array, optional
        ``[rows, T]``: the reference's; required when ``β > 0``.
    entropies : Array, optional
        ``[rows, T]``: the policy's token entropies (`token_logprobs_and_entropies`); required
        with ``top_entropy_quantile < 1`` or an ``entropy_coef`` (the bonus differentiates
        them), else only logged (``entropy``).
    max_completion_length : int, optional
        ``dr_grpo``'s constant (default: ``T``).
    total_tokens : Array, optional
        The divisor of ``dapo``, ``cispo`` and ``vespo``: the completion tokens of the whole
        generation batch, when this batch is one of several micro-batches (default: this
        batch's).
    totals : GrpoTotals, optional
        This batch is a micro-batch of a rollout batch with these counts (`batch_totals`): the
        loss and the logged shares are its parts of the whole batch's (they add up over the
        micro-batches; `merge_micro_metrics`). Not with ``top_entropy_quantile < 1`` (the
        quantile is the whole batch's). Default: this batch is the whole batch.

    Returns
    -------
    GrpoOutput
    """
    chex.assert_equal_shape([logps, old_logps, mask])
    chex.assert_rank(advantages, 1)
    if config.beta > 0 and ref_logps is None:
        raise ValueError("grpo_loss: beta > 0 needs the reference's log-probabilities (ref_logps)")
    if config.needs_entropies and entropies is None:
        raise ValueError(
            "grpo_loss: top_entropy_quantile < 1 or entropy_coef > 0 needs the policy's token "
            "entropies (entropies)"
        )
    if entropies is not None:
        chex.assert_equal_shape([logps, entropies])
    if totals is not None and config.top_entropy_quantile < 1.0:
        raise ValueError(
            "grpo_loss: the entropy mask's quantile is the whole batch's, which a micro-batch "
            "(totals) cannot see; score the whole batch, or set top_entropy_quantile to 1"
        )
    m = mask.astype(jnp.float32)
    adv = advantages.astype(jnp.float32)[:, None]
    log_ratio = logps - jax.lax.stop_gradient(old_logps)
    sequence = config.importance_sampling_level == "sequence"
    if sequence:  # GSPO: one ratio per completion, [rows, 1]
        log_ratio_seq = jnp.sum(log_ratio * m, axis=-1, keepdims=True)
        ratio = jnp.exp(log_ratio_seq / _safe(jnp.sum(m, axis=-1, keepdims=True)))
    else:
        ratio = jnp.exp(log_ratio)
    kl = jnp.zeros_like(logps)
    if config.beta > 0:
        assert ref_logps is not None
        d = ref_logps - logps
        kl = jnp.exp(d) - d - 1.0
        if config.kl_correction:
            kl = kl * ratio
    kind, high, logged = config.loss_type, config.clip_high, {}
    if kind == "cispo":  # the capped ratio weighs the policy gradient; it has none itself
        capped = jax.lax.stop_gradient(jnp.minimum(ratio, high))
        per_token = -capped * adv * logps
    elif kind == "sapo":  # a soft gate in place of the clip
        tau = jnp.where(adv > 0, config.sapo_temperature_pos, config.sapo_temperature_neg)
        per_token = -jax.nn.sigmoid(tau * (ratio - 1.0)) * 4.0 / tau * adv
    elif kind == "vespo":
        phi = _vespo_weights(log_ratio, adv, m, config)
        per_token = -phi * adv * logps
    else:  # PPO's clipped objective (and INTELLECT-2's cap on the unclipped side)
        clipped = jnp.clip(ratio, 1.0 - config.epsilon, 1.0 + high)
        if config.delta is not None:
            ratio = jnp.minimum(ratio, config.delta)
        per_token = -jnp.minimum(ratio * adv, clipped * adv)
    if config.off_policy_mask_threshold is not None:
        drift = jnp.nan_to_num(jax.lax.stop_gradient(old_logps - logps))
        drift = jnp.sum(drift * m, axis=-1, keepdims=True) / _safe(jnp.sum(m, -1, keepdims=True))
        per_token = per_token * ((adv >= 0) | (drift <= config.off_policy_mask_threshold))
    kept = m
    if config.top_entropy_quantile < 1.0:
        assert entropies is not None
        high_entropy = _high_entropy_mask(
            jax.lax.stop_gradient(entropies), m, 1.0 - config.top_entropy_quantile
        )
        per_token = per_token * high_entropy
        kept = m * high_entropy
    per_token = jnp.broadcast_to(per_token + config.beta * kl, m.shape)
    tokens = jnp.sum(m)
    summed = jnp.sum(per_token * m, axis=-1)
    # The divisors: this batch's counts, or (a micro-batch) the whole batch's.
    all_tokens = tokens if totals is None else totals.tokens
    if totals is not None:
        loss = _micro_loss(summed, m, kind, totals, max_completion_length, total_tokens)
    elif kind in ("grpo", "sapo"):
        loss = jnp.mean(summed / _safe(jnp.sum(m, axis=-1)))
    elif kind == "bnpo":
        loss = jnp.sum(summed) / _safe(tokens)
    elif kind == "dr_grpo":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        loss = jnp.sum(summed) / (per_token.shape[0] * length)
    elif kind == "luspo":
        loss = jnp.mean(summed)
    else:  # dapo, cispo, vespo
        loss = jnp.sum(summed) / _safe(tokens if total_tokens is None else total_tokens)

    def share(x: Array) -> Array:
        """TRL's ``global_masked_mean``: a per-token value's mean over the scored tokens, a
        per-completion one's ([rows, 1]) over the completions."""
        x = jax.lax.stop_gradient(x.astype(jnp.float32))
        if x.shape[1] == 1:
            return jnp.mean(x) if totals is None else jnp.sum(x) / totals.rows
        return jnp.sum(x * m) / _safe(all_tokens)

    logged["kl"] = share(kl)
    if entropies is not None:
        logged["entropy"] = share(entropies)
    zero = jnp.zeros((), jnp.float32)
    low_s = high_s = region_s = zero
    if kind in CLIPPED_LOSSES:
        low = (ratio < 1.0 - config.epsilon) & (adv < 0)
        high_clip = (ratio > 1.0 + high) & (adv > 0)
        low_s, high_s, region_s = share(low), share(high_clip), share(low | high_clip)
        logged["clip_ratio/low_mean"], logged["clip_ratio/high_mean"] = low_s, high_s
        logged["clip_ratio/region_mean"] = region_s
        whole = totals is None  # a micro-batch's extremes are merged (merge_micro_metrics)
        logged["clip_ratio/low_min"] = _extreme(low, m, jnp.min, whole)
        logged["clip_ratio/high_max"] = _extreme(high_clip, m, jnp.max, whole)
    elif kind == "cispo":
        logged["cispo_clip_ratio"] = share((ratio > high) & (adv > 0))
    elif kind == "vespo":
        logged["vespo/phi_seq_mean"] = share(phi)
    if config.entropy_coef > 0:
        assert entropies is not None
        logged["policy_loss"] = jax.lax.stop_gradient(loss)
        logged["entropy_coef"] = jnp.asarray(config.entropy_coef, jnp.float32)
        # Without the entropy mask (refused with totals) the kept tokens are the scored ones.
        kept_count = jnp.sum(kept) if totals is None else totals.tokens
        bonus = jnp.sum(entropies * kept) / _safe(kept_count)
        loss = loss - config.entropy_coef * bonus
    return GrpoOutput(
        loss=loss,
        kl=logged["kl"],
        clip_low=low_s,
        clip_high=high_s,
        clip_region=region_s,
        tokens=tokens,
        logged=logged,
    )


def _micro_loss(
    summed: Array,
    m: Array,
    kind: str,
    totals: GrpoTotals,
    max_completion_length: int | None,
    total_tokens: Array | None,
) -> Array:
    """A micro-batch's share of the whole batch's loss: its completions' token sums
    (``summed``) aggregated as ``kind`` over the batch's counts (``totals``)."""
    if kind in ("grpo", "sapo"):
        return jnp.sum(summed / _safe(jnp.sum(m, axis=-1))) / totals.rows
    if kind == "dr_grpo":
        length = m.shape[1] if max_completion_length is None else max_completion_length
        return jnp.sum(summed) / (totals.rows * length)
    if kind == "luspo":
        return jnp.sum(summed) / totals.rows
    if kind == "bnpo" or total_tokens is None:  # and dapo, cispo, vespo by default
        return jnp.sum(summed) / _safe(totals.tokens)
    return jnp.sum(summed) / _safe(total_tokens)


def _extreme(flags: Array, mask: Array, pick: Callable[..., Array], whole: bool = True) -> Array:
    """TRL's ``clip_ratio/low_min`` and ``high_max``: ``pick`` (min or max) over completions of
    each one's share of clipped tokens (a per-completion flag ``[rows, 1]`` as it is), the
    completions without a scored token left out (0 when none is left; ±inf when not ``whole``:
    a micro-batch's, which `merge_micro_metrics` picks among)."""
    x = jax.lax.stop_gradient(flags.astype(jnp.float32))
    if x.shape[1] == 1:
        return pick(x)
    counts = jnp.sum(mask, axis=-1)
    per_row = jnp.sum(x * mask, axis=-1) / _safe(counts)
    fill = jnp.inf if pick is jnp.min else -jnp.inf
    value = pick(jnp.where(counts > 0, per_row, fill))
    return jnp.where(jnp.any(counts > 0), value, 0.0) if whole else value
