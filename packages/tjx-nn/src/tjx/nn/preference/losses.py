"""Preference optimisation: sequence log-probabilities and the DPO (sigmoid) and IPO losses.

A preference batch is the chat layout with pair ``i`` in rows ``2i`` (prompt + chosen) and
``2i + 1`` (prompt + rejected), targets ``-100`` outside the completions (what
``tjx.data.PreferenceLoader`` yields). Per row, the policy's log-probability of its completion is
``log π(y | x) = Σ log p(target)`` over the scored targets; the reference model's is the same sum
under the frozen base, by default the policy itself with its LoRA adapters zeroed
(`tjx.nn.adapters_off`: the same weights, no second copy).

With ``Δ = (log π(y_w) - log π_ref(y_w)) - (log π(y_l) - log π_ref(y_l))`` per pair:

- ``sigmoid`` (DPO, Rafailov et al. 2023): ``-log σ(β Δ)``;
- ``ipo`` (Azar et al. 2023, as TRL computes it): each side's log-ratio divided by its completion
  tokens, then ``(Δ_avg - 1 / (2β))²``.

The loss is the mean over the batch's pairs (rows that are padding, with no scored token on
either side, are left out), as TRL's ``DPOTrainer`` averages. Rewards are ``β`` times each side's
log-ratio; margins their difference; accuracy the share of pairs whose chosen reward is higher.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from tjx.kernels import chunked_cross_entropy
from tjx.nn.decoder import DecoderLM
from tjx.nn.lora import adapters_off, has_lora
from tjx.nn.losses import target_logprobs
from tjx.nn.preference.config import PREFERENCE_LOSSES, PreferenceConfig

__all__ = [
    "PREFERENCE_LOSSES",
    "PreferenceConfig",
    "PreferenceOutput",
    "dpo_loss",
    "heldout_preference",
    "preference_loss",
    "preference_means",
    "sequence_logprobs",
]

Array = jax.Array
Batch = dict[str, Array]


class PreferenceOutput(NamedTuple):
    """A preference loss and what to log about it (a pytree: returns from ``jax.jit``).

    Attributes
    ----------
    loss : Array
        Scalar float32: the mean over real pairs.
    chosen_logps, rejected_logps : Array
        ``[pairs]`` the policy's completion log-probabilities.
    chosen_rewards, rejected_rewards : Array
        ``[pairs]`` ``β · (log π - log π_ref)`` of each side.
    valid : Array
        bool ``[pairs]``: a real pair (not padding).
    """

    loss: Array
    chosen_logps: Array
    rejected_logps: Array
    chosen_rewards: Array
    rejected_rewards: Array
    valid: Array

    def metrics(self) -> dict[str, Array]:
        """Means over real pairs: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
        ``rewards/accuracies``, ``logps/chosen``, ``logps/rejected`` (TRL's names)."""
        means = preference_means(self.sums())
        return {k: v for k, v in means.items() if k not in ("loss", "logps/accuracies")}

    def sums(self) -> dict[str, Array]:
        """Sums over real pairs, which add across micro-batches and held-out batches: ``pairs``
        (their count), ``loss``, every `metrics` key and ``logps/accuracies`` (pairs whose chosen
        completion the policy itself finds likelier, reference aside: the preference accuracy of
        a model on its own, which DPO's first step, equal to its reference, also has);
        `preference_means` turns them into means (the loss of a whole batch stays the mean over
        its pairs, as TRL averages)."""
        w = self.valid.astype(jnp.float32)

        def total(x: Array) -> Array:
            return jnp.sum(jax.lax.stop_gradient(x).astype(jnp.float32) * w)

        margins = self.chosen_rewards - self.rejected_rewards
        return {
            "pairs": jnp.sum(w),
            # the mean's numerator: loss × pairs (0 for a batch of padding, as the loss is)
            "loss": jax.lax.stop_gradient(self.loss) * jnp.sum(w),
            "rewards/chosen": total(self.chosen_rewards),
            "rewards/rejected": total(self.rejected_rewards),
            "rewards/margins": total(margins),
            "rewards/accuracies": total((margins > 0).astype(jnp.float32)),
            # the policy's own ranking, no reference: chosen likelier than rejected
            "logps/accuracies": total(
                (self.chosen_logps > self.rejected_logps).astype(jnp.float32)
            ),
            "logps/chosen": total(self.chosen_logps),
            "logps/rejected": total(self.rejected_logps),
        }


def preference_means(sums: dict[str, Any]) -> dict[str, Any]:
    """The means over pairs of `PreferenceOutput.sums` (summed over any number of batches):
    every key but ``pairs`` divided by the pairs (0 when there were none)."""
    n = jnp.maximum(jnp.asarray(sums["pairs"], jnp.float32), 1.0)
    return {k: v / n for k, v in sums.items() if k != "pairs"}


def heldout_preference(sums: Iterable[dict[str, Any]], *, empty: str) -> dict[str, float]:
    """Held-out preference metrics over many batches: their `PreferenceOutput.sums` (on the host
    or device, one dict per batch) added up, then `preference_means` (every pair weighs the
    same, so padded last batches count their real pairs only) and ``pairs``, the total; what the
    trainer's validation logs as ``val_*`` and the evaluator prints.

    Parameters
    ----------
    sums : iterable of dict
        `PreferenceOutput.sums` of each batch.
    empty : str
        The `ValueError`'s message when no real pair was scored.

    Returns
    -------
    dict[str, float]
        ``loss``, ``rewards/*``, ``logps/*`` means, and ``pairs``.
    """
    total: dict[str, Any] | None = None
    for one in sums:
        one = jax.device_get(one)
        total = dict(one) if total is None else {k: total[k] + one[k] for k in total}
    if total is None or float(total["pairs"]) == 0:
        raise ValueError(empty)
    means = {k: float(v) for k, v in preference_means(total).items()}
    return {**means, "pairs": float(total["pairs"])}


def sequence_logprobs(
    model: DecoderLM,
    batch: Batch,
    *,
    deterministic: bool = True,
    chunked: bool = True,
    chunk_size: int | None = None,
) -> tuple[Array, Array]:
    """Each row's summed log-probability of its scored targets, and how many it has.

    Parameters
    ----------
    model : DecoderLM
        The decoder.
    batch : dict
        ``inputs``, ``targets`` (``-100`` unscored), ``positions`` and ``segment_ids``
        (optional), int ``[rows, seq]``.
    deterministic : bool
        Disable dropout.
    chunked, chunk_size
        Score through ``tjx.kernels.chunked_cross_entropy`` per row (no ``[rows, seq, vocab]``
        logits in memory), else from the float32 logits.

    Returns
    -------
    (Array, Array)
        float32 ``[rows]`` sums and int32 ``[rows]`` counts (a row with none sums to 0).
    """
    targets = batch["targets"]
    hidden = model.on_batch(batch, deterministic=deterministic, return_hidden=True)
    counts = jnp.sum(targets != -100, axis=-1, dtype=jnp.int32)
    if chunked:
        dt = model.config.precision.compute_dtype
        w = model.unembedding().astype(dt)

        def row(h: Array, labels: Array) -> Array:
            return chunked_cross_entropy(h.astype(dt), w, labels, chunk_size=chunk_size).sum_loss

        return -jax.vmap(row)(hidden, targets), counts
    return jnp.sum(target_logprobs(model.logits(hidden), targets), axis=-1), counts


def dpo_loss(
    chosen_logps: Array,
    rejected_logps: Array,
    ref_chosen_logps: Array,
    ref_rejected_logps: Array,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    chosen_tokens: Array | None = None,
    rejected_tokens: Array | None = None,
    valid: Array | None = None,
) -> PreferenceOutput:
    """The preference loss of per-pair log-probabilities (see the module docstring).

    Parameters
    ----------
    chosen_logps, rejected_logps : Array
        float ``[pairs]`` the policy's completion log-probabilities.
    ref_chosen_logps, ref_rejected_logps : Array
        float ``[pairs]`` the reference model's (no gradient flows into them).
    beta : float
        β > 0: the strength of the pull towards the reference.
    loss_type : str
        ``"sigmoid"`` (DPO) or ``"ipo"``.
    chosen_tokens, rejected_tokens : Array, optional
        int ``[pairs]`` completion tokens per side (IPO's normaliser; required for ``"ipo"``).
    valid : Array, optional
        bool ``[pairs]``: real pairs (default all).

    Returns
    -------
    PreferenceOutput

    Raises
    ------
    ValueError
        ``beta`` not positive, an unknown ``loss_type``, IPO without token counts.
    """
    if not beta > 0:
        raise ValueError(f"beta must be > 0; got {beta}")
    if loss_type not in PREFERENCE_LOSSES:
        raise ValueError(f"loss_type must be one of {PREFERENCE_LOSSES}; got {loss_type!r}")
    f32 = jnp.float32
    chosen_logps, rejected_logps = chosen_logps.astype(f32), rejected_logps.astype(f32)
    ref_c = jax.lax.stop_gradient(ref_chosen_logps.astype(f32))
    ref_r = jax.lax.stop_gradient(ref_rejected_logps.astype(f32))
    chosen_ratio, rejected_ratio = chosen_logps - ref_c, rejected_logps - ref_r
    if loss_type == "sigmoid":
        per_pair = -jax.nn.log_sigmoid(beta * (chosen_ratio - rejected_ratio))
    else:
        if chosen_tokens is None or rejected_tokens is None:
            raise ValueError("the ipo loss needs chosen_tokens and rejected_tokens")
        c = chosen_ratio / jnp.maximum(chosen_tokens, 1).astype(f32)
        r = rejected_ratio / jnp.maximum(rejected_tokens, 1).astype(f32)
        per_pair = jnp.square(c - r - 1.0 / (2.0 * beta))
    if valid is None:
        valid = jnp.ones(per_pair.shape, bool)
    w = valid.astype(f32)
    loss = jnp.sum(per_pair * w) / jnp.maximum(jnp.sum(w), 1.0)
    return PreferenceOutput(
        loss=loss,
        chosen_logps=chosen_logps,
        rejected_logps=rejected_logps,
        chosen_rewards=beta * jax.lax.stop_gradient(chosen_ratio),
        rejected_rewards=beta * jax.lax.stop_gradient(rejected_ratio),
        valid=valid,
    )


def preference_loss(
    model: DecoderLM,
    batch: Batch,
    *,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    reference: Any = None,
    deterministic: bool = True,
    chunked: bool = True,
    chunk_size: int | None = None,
) -> PreferenceOutput:
    """The DPO (or IPO) loss of ``model`` on a preference batch (rows ``2i``/``2i + 1``).

    Parameters
    ----------
    model : DecoderLM
        The policy.
    batch : dict
        The preference layout (module docstring); an even number of rows.
    beta, loss_type
        As for `dpo_loss`.
    reference : DecoderLM, optional
        The frozen reference; default: ``model`` with its LoRA adapters off (`adapters_off`),
        which needs a model with adapters.
    deterministic : bool
        The policy's dropout off (the reference always runs without dropout).
    chunked, chunk_size
        As for `sequence_logprobs`.

    Returns
    -------
    PreferenceOutput

    Raises
    ------
    ValueError
        No reference and no adapters, an odd number of rows, or `dpo_loss`'s errors.
    """
    rows = batch["targets"].shape[0]
    if rows % 2:
        raise ValueError(f"a preference batch has rows in pairs (chosen, rejected); got {rows}")
    if reference is None:
        if not has_lora(model):
            raise ValueError(
                "DPO needs a reference model: give reference=, or train LoRA adapters "
                "(the reference is then the same model with its adapters off)"
            )
        reference = adapters_off(model)
    kw: dict[str, Any] = dict(chunked=chunked, chunk_size=chunk_size)
    logps, counts = sequence_logprobs(model, batch, deterministic=deterministic, **kw)
    ref_logps, _ = sequence_logprobs(reference, batch, deterministic=True, **kw)
    ref_logps = jax.lax.stop_gradient(ref_logps)
    valid = (counts[0::2] > 0) & (counts[1::2] > 0)
    return dpo_loss(
        logps[0::2],
        logps[1::2],
        ref_logps[0::2],
        ref_logps[1::2],
        beta=beta,
        loss_type=loss_type,
        chosen_tokens=counts[0::2],
        rejected_tokens=counts[1::2],
        valid=valid,
    )
