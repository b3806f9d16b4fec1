"""Group-relative policy optimisation (GRPO): group advantages, token log-probabilities, the loss.

GRPO (Shao et al. 2024, DeepSeekMath) samples ``G`` completions per prompt, scores each with a
program (a reward), and trains the policy on the completion tokens with PPO's clipped objective,
where the baseline is the group's own mean reward instead of a value model:

- **advantages** (`group_advantages`): ``A_i = r_i - mean(r_group)``, divided by the group's
  standard deviation (``scale="group"``, Bessel-corrected as TRL's ``nanstd``) or the batch's
  (``"batch"``) plus ``1e-4``, or not divided (``"none"``, Dr. GRPO's advice);
- **ratio**: per completion token ``ρ = exp(log π(t) - log π_old(t))``, where ``π_old`` is the
  policy that sampled the rollout (``ρ = 1`` on the first of the μ optimisation steps);
- **per-token loss**: ``-min(ρ A, clip(ρ, 1 - ε_low, 1 + ε_high) A) + β KL``, with the KL to the
  reference policy estimated per token as ``exp(r - l) - (r - l) - 1`` (Schulman's k3, ``l`` and
  ``r`` the policy's and the reference's log-probabilities), only when ``β > 0``, and multiplied
  by the (differentiable) ratio ``ρ`` by default (``kl_correction``: DeepSeek-V3.2's unbiased
  reverse-KL gradient, TRL's ``use_bias_correction_kl``, on by default in trl 1.16);
- **aggregation** (`GRPO_LOSSES`, TRL's ``loss_type``): ``grpo`` the mean over completions of each
  one's token mean; ``bnpo`` the token mean over the batch; ``dr_grpo`` the token sum over
  ``rows × max_completion_length``; ``dapo`` (TRL's default) the token sum over the tokens of the
  whole generation batch (``total_tokens``; the batch's own count when not given).

These are the formulas of TRL's ``GRPOTrainer._compute_loss`` (trl 1.16) with its defaults
(token-level importance sampling, no entropy mask, no two-sided ``delta``, no vLLM correction);
the peer test holds tjx's loss and gradient to TRL's within 1e-5. The metrics carry TRL's names
(``kl``, ``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from tjx.core.config.values import choice
from tjx.core.fields import setting
from tjx.nn.decoder import DecoderLM
from tjx.nn.losses import target_logprobs

__all__ = [
    "ADVANTAGE_SCALES",
    "GRPO_LOSSES",
    "GrpoConfig",
    "GrpoOutput",
    "grpo_loss",
    "group_advantages",
    "token_logprobs",
]

Array = jax.Array

#: How the per-token losses are aggregated (TRL's ``loss_type`` of the same names).
GRPO_LOSSES = ("grpo", "bnpo", "dr_grpo", "dapo")
#: What the advantages are divided by (TRL's ``scale_rewards``).
ADVANTAGE_SCALES = ("group", "batch", "none")
#: Added to the standard deviation before dividing by it (TRL's constant): a group whose rewards
#: are all equal gets advantages of 0, not a division by 0.
STD_EPS = 1e-4


@dataclass(frozen=True)
class GrpoConfig:
    """How GRPO turns rewards into a loss (`group_advantages`' and `grpo_loss`'s settings)."""

    beta: float = setting(
        0.0,
        min=0,
        help="β: the weight of the per-token KL to the reference policy (0: no reference pass)",
    )
    epsilon: float = setting(
        0.2, gt=0, help="ε_low: the ratio is clipped below at 1 - ε (TRL's epsilon)"
    )
    epsilon_high: float | None = setting(
        None, help="ε_high: clipped above at 1 + ε_high (DAPO: 0.28); null: ε"
    )
    loss_type: str = setting(
        "dapo",
        choices=GRPO_LOSSES,
        help="how token losses are aggregated: grpo, bnpo, dr_grpo or dapo (TRL's loss_type)",
    )
    kl_correction: bool = setting(
        True,
        help="multiply the per-token KL by the policy ratio (the unbiased reverse-KL gradient, "
        "DeepSeek-V3.2; TRL's use_bias_correction_kl)",
    )
    scale_rewards: str = setting(
        "group",
        choices=ADVANTAGE_SCALES,
        help="divide the advantages by the group's or the batch's reward std, or none",
    )

    def __post_init__(self) -> None:
        for name, strict in (("beta", False), ("epsilon", True)):
            value = getattr(self, name)
            bad = isinstance(value, bool) or not isinstance(value, int | float)
            if bad or value < 0 or (strict and value == 0):
                rule = "> 0" if strict else ">= 0"
                raise ValueError(f"GrpoConfig.{name} must be a number {rule}; got {value!r}")
        high = self.epsilon_high
        if high is not None and (
            isinstance(high, bool) or not isinstance(high, int | float) or not high > 0
        ):
            raise ValueError(f"GrpoConfig.epsilon_high must be a number > 0 or null; got {high!r}")
        choice("GrpoConfig", "loss_type", self.loss_type, GRPO_LOSSES)
        choice("GrpoConfig", "scale_rewards", self.scale_rewards, ADVANTAGE_SCALES)

    @property
    def clip_high(self) -> float:
        """ε_high, which defaults to ε."""
        return float(self.epsilon if self.epsilon_high is None else self.epsilon_high)


class GrpoOutput(NamedTuple):
    """A GRPO loss and what to log about it (a pytree: returns from ``jax.jit``).

    Attributes
    ----------
    loss : Array
        Scalar float32, aggregated as the config's ``loss_type``.
    kl : Array
        Scalar: the token mean of the KL estimate (ratio-weighted with ``kl_correction``, as TRL
        logs it; 0 when ``β = 0``: no reference was given).
    clip_low, clip_high, clip_region : Array
        Scalars: the share of completion tokens whose ratio was clipped below (with a negative
        advantage), above (with a positive one), either.
    tokens : Array
        Scalar float32: how many completion tokens the batch scored.
    """

    loss: Array
    kl: Array
    clip_low: Array
    clip_high: Array
    clip_region: Array
    tokens: Array

    def metrics(self) -> dict[str, Array]:
        """TRL's names: ``kl``, ``clip_ratio/low_mean``, ``clip_ratio/high_mean``,
        ``clip_ratio/region_mean``."""
        return {
            "kl": self.kl,
            "clip_ratio/low_mean": self.clip_low,
            "clip_ratio/high_mean": self.clip_high,
            "clip_ratio/region_mean": self.clip_region,
        }


def group_advantages(rewards: Array, group_size: int, *, scale: str = "group") -> Array:
    """Each completion's reward less its group's mean, scaled as ``scale`` says.

    Parameters
    ----------
    rewards : Array
        float ``[prompts * group_size]``: the completions of one prompt are consecutive (TRL's
        ``repeat_interleave`` order).
    group_size : int
        ``G``, completions per prompt (≥ 2: one completion has no baseline but itself).
    scale : str
        ``"group"``: divide by the group's standard deviation + 1e-4; ``"batch"``: by the whole
        batch's; ``"none"``: do not divide.

    Returns
    -------
    Array
        float32 ``[prompts * group_size]``.
    """
    choice("group_advantages", "scale", scale, ADVANTAGE_SCALES)
    if group_size < 2 or rewards.shape[0] % group_size:
        raise ValueError(
            f"group_advantages: {rewards.shape[0]} rewards do not split into groups of "
            f"{group_size} (a group needs 2 completions or more)"
        )
    chex.assert_rank(rewards, 1)
    r = rewards.astype(jnp.float32)
    groups = r.reshape(-1, group_size)
    advantages = (groups - groups.mean(axis=1, keepdims=True)).reshape(-1)
    if scale == "group":
        std = jnp.repeat(jnp.std(groups, axis=1, ddof=1), group_size)
    elif scale == "batch":
        std = jnp.std(r, ddof=1) if r.shape[0] > 1 else jnp.zeros(())
    else:
        return advantages
    return advantages / (std + STD_EPS)


def token_logprobs(model: DecoderLM, batch: dict[str, Array], *, temperature: float = 1.0) -> Array:
    """Each target's log-probability under ``model`` (0 where the target is ``-100``).

    Parameters
    ----------
    model : DecoderLM
        The policy (or the reference: the same call with adapters off, or the frozen start).
    batch : dict
        ``inputs`` and ``targets`` int ``[rows, seq]`` (``-100`` outside the completion),
        ``positions`` and ``segment_ids`` optional.
    temperature : float
        The logits are divided by it first: the distribution the rollouts were sampled from
        (TRL's ``temperature``; 1.0 by default).

    Returns
    -------
    Array
        float32 ``[rows, seq]``. From the float32 logits: the rollouts are short and the
        chunked loss kernel gives sums, not tokens.
    """
    targets = batch["targets"]
    logits = model(
        batch["inputs"],
        positions=batch.get("positions"),
        segment_ids=batch.get("segment_ids"),
        deterministic=True,
    ).astype(jnp.float32)
    return target_logprobs(logits / temperature, targets)


def grpo_loss(
    logps: Array,
    old_logps: Array,
    advantages: Array,
    mask: Array,
    *,
    config: GrpoConfig,
    ref_logps: Array | None = None,
    max_completion_length: int | None = None,
    total_tokens: Array | None = None,
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
        β, ε, the aggregation.
    ref_logps : Array, optional
        ``[rows, T]``: the reference's; required when ``β > 0``.
    max_completion_length : int, optional
        ``dr_grpo``'s constant (default: ``T``).
    total_tokens : Array, optional
        ``dapo``'s divisor: the completion tokens of the whole generation batch, when this batch
        is one of several micro-batches (default: this batch's).

    Returns
    -------
    GrpoOutput
    """
    chex.assert_equal_shape([logps, old_logps, mask])
    chex.assert_rank(advantages, 1)
    if config.beta > 0 and ref_logps is None:
        raise ValueError("grpo_loss: beta > 0 needs the reference's log-probabilities (ref_logps)")
    m = mask.astype(jnp.float32)
    adv = advantages.astype(jnp.float32)[:, None]
    ratio = jnp.exp(logps - jax.lax.stop_gradient(old_logps))
    clipped = jnp.clip(ratio, 1.0 - config.epsilon, 1.0 + config.clip_high)
    per_token = -jnp.minimum(ratio * adv, clipped * adv)
    kl = jnp.zeros_like(per_token)
    if config.beta > 0:
        assert ref_logps is not None
        d = ref_logps - logps
        kl = jnp.exp(d) - d - 1.0
        if config.kl_correction:
            kl = kl * ratio
        per_token = per_token + config.beta * kl
    tokens = jnp.sum(m)

    def safe(x: Array) -> Array:
        return jnp.maximum(x, 1.0)

    if config.loss_type == "grpo":
        loss = jnp.mean(jnp.sum(per_token * m, axis=-1) / safe(jnp.sum(m, axis=-1)))
    elif config.loss_type == "bnpo":
        loss = jnp.sum(per_token * m) / safe(tokens)
    elif config.loss_type == "dr_grpo":
        length = per_token.shape[1] if max_completion_length is None else max_completion_length
        loss = jnp.sum(per_token * m) / (per_token.shape[0] * length)
    else:  # dapo
        loss = jnp.sum(per_token * m) / safe(tokens if total_tokens is None else total_tokens)

    def share(x: Array) -> Array:
        return jax.lax.stop_gradient(jnp.sum(x.astype(jnp.float32) * m) / safe(tokens))

    low = (ratio < 1.0 - config.epsilon) & (adv < 0)
    high = (ratio > 1.0 + config.clip_high) & (adv > 0)
    return GrpoOutput(
        loss=loss,
        kl=share(kl),
        clip_low=share(low),
        clip_high=share(high),
        clip_region=share(low | high),
        tokens=tokens,
    )
