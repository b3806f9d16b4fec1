"""Losses: token cross-entropy, masked-LM, classification and contrastive (InfoNCE / CLIP).

All compute in float32 and return a scalar mean; ``logits_cross_entropy`` adds the exact sums a
metric needs. For the LM loss over a big vocabulary prefer ``tjx.kernels.chunked_cross_entropy``
on final hidden states (``return_hidden=True``).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from tjx.kernels import CrossEntropyOutput
from tjx.nn.moe.layer import MoEStats
from tjx.nn.mtp import MTPLoss

Array = jax.Array


class ObjectiveLoss(NamedTuple):
    """`objective_loss`'s result: ``tjx.kernels.CrossEntropyOutput``'s fields, the training loss
    with the router's losses in it, and the MoE layers' statistics.

    Attributes
    ----------
    loss : Array
        float32 scalar to differentiate: the mean cross-entropy over scored labels (z-loss
        included) plus, for an MoE model, ``moe.router_penalty`` (the load-balancing and router
        z-losses times their coefficients, summed over MoE layers).
    sum_loss, num_tokens, num_correct : Array
        As ``CrossEntropyOutput``'s: the summed cross-entropy (nothing else), the scored labels,
        the top-1 correct ones.
    moe : MoEStats or None
        The MoE layers' router statistics, stacked in layer order (sums: add them over
        micro-batches; ``tjx.metrics.moe_metrics`` makes the logged values of them); None for a
        model without MoE layers.
    mtp : MTPLoss or None
        A multi-token-prediction model's (``mtp.depths``) loss and its per-depth sums (the
        ``loss`` holds ``mtp.loss_weight`` times its ``loss``); None without.
    """

    loss: Array
    sum_loss: Array
    num_tokens: Array
    num_correct: Array
    moe: MoEStats | None = None
    mtp: MTPLoss | None = None


def _token_ce(logits: Array, labels: Array, label_smoothing: float) -> tuple[Array, Array, Array]:
    """Per-token (cross-entropy, logsumexp, label's logit) in float32; negative labels read 0."""
    logits = logits.astype(jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    safe = jnp.where(labels < 0, 0, labels)
    target = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    nll = lse - target
    if label_smoothing > 0.0:
        # Smoothed target: (1-ε) on the label, ε spread uniformly over the vocabulary.
        smooth = lse - jnp.mean(logits, axis=-1)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth
    return nll, lse, target


def target_logprobs(logits: Array, targets: Array) -> Array:
    """Each target's log-probability under ``logits`` ``[..., vocab]``, float32, 0 where the
    target is negative (``-100``: not scored): the per-token reading DPO's unchunked path and
    GRPO's ratios take, from the loss's own per-token cross-entropy (`_token_ce`)."""
    nll, _, _ = _token_ce(logits, targets, 0.0)
    return jnp.where(targets >= 0, -nll, 0.0)


def cross_entropy_loss(
    logits: Array,
    labels: Array,
    *,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
) -> Array:
    """Mean token cross-entropy over labels not equal to ``ignore_index``.

    Parameters
    ----------
    logits : Array
        ``[..., vocab]``.
    labels : Array
        int ``[...]``; entries equal to ``ignore_index`` do not count.
    label_smoothing : float
        ε in ``[0, 1)``: the target puts ``1-ε`` on the label and ``ε/vocab`` on every class.
    z_loss : float
        Coefficient of ``logsumexp(logits)²`` (PaLM), added per counted token.

    Returns
    -------
    Array
        Scalar float32 (0 when no token counts).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1); got {label_smoothing}")
    if z_loss < 0:
        raise ValueError(f"z_loss must be >= 0; got {z_loss}")
    mask = labels != ignore_index
    labels = jnp.where(mask, labels, 0)
    nll, lse, _ = _token_ce(logits, labels, label_smoothing)
    loss = nll + z_loss * jnp.square(lse)
    count = jnp.sum(mask)
    return jnp.sum(jnp.where(mask, loss, 0.0)) / jnp.maximum(count, 1)


def masked_mean(values: Array, mask: Array) -> Array:
    """The mean of ``values`` over the batch's unmasked entries: ``Σ values·mask / Σ mask``.

    tjx's token losses average this way, per token over the whole batch (as MaxText, torchtitan,
    levanter and TRL do), not as a mean of per-sequence means: every scored token weighs the
    same whatever the length of its sequence (a per-sequence mean gives each token of a short
    answer more weight than one of a long answer, and its value would depend on how sequences are
    packed into rows), and micro-batches accumulate exactly by weighting with their token counts.

    Parameters
    ----------
    values : Array
        Per-token values ``[...]`` (computed in float32).
    mask : Array
        bool ``[...]``: the entries that count.

    Returns
    -------
    Array
        Scalar float32 (0 when nothing counts).
    """
    mask = mask.astype(bool)
    total = jnp.sum(jnp.where(mask, values.astype(jnp.float32), 0.0))
    return total / jnp.maximum(jnp.sum(mask), 1)


def logits_cross_entropy(
    logits: Array, labels: Array, *, ignore_index: int = -100, z_loss: float = 0.0
) -> CrossEntropyOutput:
    """Cross-entropy of full logits with exact sums: the plain twin of
    ``tjx.kernels.chunked_cross_entropy`` (same output, same meaning).

    Parameters
    ----------
    logits : Array
        ``[..., vocab]`` (computed in float32).
    labels : Array
        int ``[...]``; entries equal to ``ignore_index`` do not count.
    ignore_index : int
        Label of unscored positions.
    z_loss : float
        Coefficient of ``logsumexp(logits)²`` in ``loss`` (not in ``sum_loss``), >= 0.

    Returns
    -------
    CrossEntropyOutput
        ``loss`` (float32 mean over counted labels, z-loss included; 0 when none counts; equal
        to ``cross_entropy_loss(..., z_loss=z_loss)``), ``sum_loss`` (float32 sum of the
        cross-entropy), ``num_tokens`` and ``num_correct`` (int32; a label is correct when no
        class scores strictly above it, ties counting for it as in ``tjx.metrics.lm_stats``).
    """
    if z_loss < 0:
        raise ValueError(f"z_loss must be >= 0; got {z_loss}")
    logits = logits.astype(jnp.float32)
    mask = labels != ignore_index
    nll, lse, target = _token_ce(logits, jnp.where(mask, labels, 0), 0.0)
    count = jnp.sum(mask, dtype=jnp.int32)
    sum_loss = jnp.sum(jnp.where(mask, nll, 0.0))
    # Its own sum even at z_loss=0: the mean is then cross_entropy_loss's to the bit (XLA rounds
    # the two reductions differently).
    total = jnp.sum(jnp.where(mask, nll + z_loss * jnp.square(lse), 0.0))
    # Only the top-1 count a training step reports (top-k is tjx-metrics' business): no class
    # strictly above the label.
    correct = mask & ~jnp.any(logits > target[..., None], axis=-1)
    return CrossEntropyOutput(
        loss=total / jnp.maximum(count, 1),
        sum_loss=sum_loss,
        num_tokens=count,
        num_correct=jnp.sum(correct, dtype=jnp.int32),
    )


def masked_lm_loss(
    logits: Array, labels: Array, *, ignore_index: int = -100, label_smoothing: float = 0.0
) -> Array:
    """BERT's masked-LM loss: cross-entropy on the masked positions only.

    ``labels`` is what ``mlm_mask`` returns: the original token where a position was selected,
    ``ignore_index`` elsewhere.

    Parameters
    ----------
    logits : Array
        ``[..., vocab]`` MLM logits.
    labels : Array
        int ``[...]`` from ``mlm_mask``.
    ignore_index : int
        Label of unselected positions.
    label_smoothing : float
        ε in ``[0, 1)``.

    Returns
    -------
    Array
        Scalar float32 mean over the selected positions (0 when none).
    """
    return cross_entropy_loss(
        logits, labels, ignore_index=ignore_index, label_smoothing=label_smoothing
    )


def classification_loss(logits: Array, labels: Array, *, label_smoothing: float = 0.0) -> Array:
    """Mean cross-entropy of ``logits`` ``[b, classes]`` against int ``labels`` ``[b]``.

    Parameters
    ----------
    logits : Array
        ``[b, classes]``.
    labels : Array
        int ``[b]`` in ``[0, classes)``; ``-1`` is ignored.
    label_smoothing : float
        ε in ``[0, 1)``.

    Returns
    -------
    Array
        Scalar float32 mean.
    """
    return cross_entropy_loss(logits, labels, ignore_index=-1, label_smoothing=label_smoothing)


def contrastive_loss(a: Array, b: Array, *, temperature: float = 0.07) -> Array:
    """Symmetric InfoNCE (CLIP): row ``i`` of ``a`` and of ``b`` ``[n, d]`` are the positives.

    Embeddings are L2-normalised; logits are cosine similarities / ``temperature``; the loss is
    the mean of the a→b and b→a cross-entropies.

    Parameters
    ----------
    a, b : Array
        ``[n, d]`` embeddings of the two views (any float dtype; computed in float32).
    temperature : float
        Softmax temperature (> 0).

    Returns
    -------
    Array
        Scalar float32 loss.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0; got {temperature}")
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    a = a / jnp.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / jnp.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    logits = a @ b.T / temperature
    labels = jnp.arange(a.shape[0])
    return 0.5 * (classification_loss(logits, labels) + classification_loss(logits.T, labels))


def mlm_mask(
    tokens: Array,
    key: Array,
    *,
    mask_id: int,
    vocab_size: int,
    mask_prob: float = 0.15,
    special_mask: Array | None = None,
    ignore_index: int = -100,
) -> tuple[Array, Array]:
    """BERT masking: select ``mask_prob`` of tokens; of those 80 % → ``mask_id``, 10 % → a random
    token, 10 % unchanged.

    Parameters
    ----------
    tokens : Array
        int ``[...]`` inputs.
    key : Array
        PRNG key.
    special_mask : Array, optional
        bool ``[...]``: positions never selected (padding, [CLS], [SEP]).

    Returns
    -------
    (inputs, labels)
        ``inputs`` with replacements; ``labels`` = original token at selected positions,
        ``ignore_index`` elsewhere.
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1); got {mask_prob}")
    k_sel, k_kind, k_tok = jax.random.split(key, 3)
    selected = jax.random.bernoulli(k_sel, mask_prob, tokens.shape)
    if special_mask is not None:
        selected = selected & ~special_mask
    kind = jax.random.uniform(k_kind, tokens.shape)
    random_tokens = jax.random.randint(k_tok, tokens.shape, 0, vocab_size, dtype=tokens.dtype)
    inputs = jnp.where(selected & (kind < 0.8), mask_id, tokens)
    inputs = jnp.where(selected & (kind >= 0.8) & (kind < 0.9), random_tokens, inputs)
    labels = jnp.where(selected, tokens, ignore_index)
    return inputs.astype(tokens.dtype), labels.astype(jnp.int32)
