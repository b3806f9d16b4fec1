"""The policy's per-token log-probabilities and entropies that GRPO scores (`token_logprobs`,
`token_logprobs_and_entropies`): from the float32 logits over the sampling temperature."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from tjx.nn.decoder import DecoderLM
from tjx.nn.losses import target_logprobs

__all__ = ["token_logprobs", "token_logprobs_and_entropies"]

Array = jax.Array


def _scaled_logits(model: DecoderLM, batch: dict[str, Array], temperature: float) -> Array:
    logits = model(
        batch["inputs"],
        positions=batch.get("positions"),
        segment_ids=batch.get("segment_ids"),
        deterministic=True,
    ).astype(jnp.float32)
    return logits / temperature


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
    return target_logprobs(_scaled_logits(model, batch, temperature), batch["targets"])


def token_logprobs_and_entropies(
    model: DecoderLM, batch: dict[str, Array], *, temperature: float = 1.0
) -> tuple[Array, Array]:
    """`token_logprobs` and, from the same logits, the entropy of each scored position's
    next-token distribution (TRL's ``entropy``: ``logsumexp(z) - Σ softmax(z) z`` of the logits
    over ``temperature``; 0 where the target is ``-100``), which carries a gradient (the entropy
    bonus).

    Parameters
    ----------
    model, batch, temperature
        As `token_logprobs`'.

    Returns
    -------
    tuple of Array
        float32 ``[rows, seq]`` each: the log-probabilities and the entropies.
    """
    targets = batch["targets"]
    logits = _scaled_logits(model, batch, temperature)
    lse = jax.nn.logsumexp(logits, axis=-1)
    entropy = lse - jnp.sum(jax.nn.softmax(logits, axis=-1) * logits, axis=-1)
    return target_logprobs(logits, targets), jnp.where(targets >= 0, entropy, 0.0)
