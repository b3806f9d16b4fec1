"""Language-model metrics from logits or per-token losses.

Two layers:

* :func:`lm_stats` is a pure, jit-friendly function that reduces one batch to *sums and counts*
  (summed token loss, number of scored tokens, top-k correct counts). It stays on device, so a train
  or eval step can return it without a host sync.
* :func:`lm_metrics` / :func:`loss_metrics` are one-shot conveniences that run :func:`lm_stats` and
  turn the sums into means on the host through :class:`~tjx.metrics.MetricAccumulator` — the same
  code path the streaming evaluation uses, so one-shot and streaming results agree exactly.

Means are always token-weighted: ``loss = Σ token_loss / Σ tokens`` over everything seen, never an
average of per-batch averages (which over-weights short or heavily padded batches).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.metrics.accumulate import MetricAccumulator

__all__ = ["lm_metrics", "lm_stats", "loss_metrics", "validate_top_k"]


def validate_top_k(top_k: Sequence[int]) -> tuple[int, ...]:
    """Return ``top_k`` as a sorted tuple of distinct positive ints.

    Raises
    ------
    ValueError
        If any entry is not a positive integer.
    """
    out: set[int] = set()
    for k in top_k:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or int(k) < 1:
            raise ValueError(f"top_k must hold positive integers (e.g. (1, 5, 10)); got {k!r}")
        out.add(int(k))
    return tuple(sorted(out))


def lm_stats(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_index: int = -100,
    top_k: Sequence[int] = (1, 5, 10),
) -> dict[str, jax.Array]:
    """Reduce a batch of next-token predictions to exact sums and counts (on device, jit-safe).

    Parameters
    ----------
    logits
        ``[..., vocab]`` unnormalised scores (any float dtype; computed in float32).
    labels
        ``[...]`` integer targets; positions equal to ``ignore_index`` are not scored.
    ignore_index
        Label value that marks padding / unscored positions. Other labels must lie in
        ``[0, vocab)``; an out-of-range label cannot be checked under jit and gives a NaN loss
        (:func:`lm_metrics` checks and raises).
    top_k
        Which top-k accuracies to count.

    Returns
    -------
    dict
        ``sum_loss`` (float32, summed cross-entropy in nats over scored tokens), ``num_tokens``
        (int32), and ``correct_top{k}`` (int32) for each ``k``. A label counts as top-k correct when
        fewer than ``k`` vocabulary entries score *strictly* higher than it (ties favour the label;
        with continuous logits ties have probability zero); a position whose logits hold a NaN or
        an infinity is never correct.
    """
    ks = validate_top_k(top_k)
    if logits.ndim < 1 or logits.shape[:-1] != labels.shape:
        raise ValueError(
            f"logits must be [..., vocab] and labels the leading shape: got logits {logits.shape}, "
            f"labels {labels.shape}"
        )
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise ValueError(f"labels must be an integer array; got dtype {labels.dtype}")
    logits32 = logits.astype(jnp.float32)
    mask = labels != ignore_index
    # Clamp ignored labels to a valid index so the gather is defined; they are masked out below.
    safe = jnp.where(mask, labels, 0).astype(jnp.int32)
    log_z = jax.nn.logsumexp(logits32, axis=-1)
    label_logit = jnp.take_along_axis(logits32, safe[..., None], axis=-1)[..., 0]
    token_loss = log_z - label_logit
    sum_loss = jnp.sum(jnp.where(mask, token_loss, 0.0))
    # Rank of the label = how many entries beat it; one compare over the vocab, no sort needed.
    rank = jnp.sum(logits32 > label_logit[..., None], axis=-1)
    # A comparison with NaN is False, so a NaN row would rank its label first ("top-1 correct"):
    # a row with any non-finite score counts as wrong, never as a hit of a broken model.
    finite = jnp.all(jnp.isfinite(logits32), axis=-1)
    out: dict[str, jax.Array] = {
        "sum_loss": sum_loss,
        "num_tokens": jnp.sum(mask, dtype=jnp.int32),
    }
    for k in ks:
        out[f"correct_top{k}"] = jnp.sum(mask & finite & (rank < k), dtype=jnp.int32)
    return out


# One fused computation instead of op-by-op dispatch; re-traced only per shape / ignore_index / k.
_lm_stats_jit = jax.jit(lm_stats, static_argnames=("ignore_index", "top_k"))


def lm_metrics(
    logits: Any,
    labels: Any,
    *,
    ignore_index: int = -100,
    byte_counts: Any = None,
    top_k: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """One-shot LM metrics of a batch of logits (host floats).

    Parameters
    ----------
    logits, labels, ignore_index, top_k
        As in :func:`lm_stats`.
    byte_counts
        Optional number of UTF-8 bytes of text that the *scored* tokens encode: a scalar or an
        array (e.g. per sequence) that is summed. Enables ``bits_per_byte``, a tokenizer-independent
        measure.

    Returns
    -------
    dict
        ``loss`` (mean nats/token), ``perplexity``, ``bits_per_token``, ``bits_per_byte`` (only with
        ``byte_counts``), ``top{k}`` accuracies, and ``num_tokens``.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> m = lm_metrics(jnp.zeros((1, 2, 4)), jnp.array([[0, 3]]), top_k=(1,))
    >>> round(m["perplexity"], 6)
    4.0
    """
    logits, labels = jnp.asarray(logits), jnp.asarray(labels)
    if logits.ndim >= 1 and jnp.issubdtype(labels.dtype, jnp.integer):
        host_labels = np.asarray(jax.device_get(labels))
        scored = host_labels[host_labels != ignore_index]
        vocab = logits.shape[-1]
        if scored.size and (scored.min() < 0 or scored.max() >= vocab):
            raise ValueError(
                f"labels must be in [0, {vocab}) or equal ignore_index={ignore_index}; "
                f"got values in [{scored.min()}, {scored.max()}]"
            )
    stats = _lm_stats_jit(
        logits,
        labels,
        ignore_index=int(ignore_index),
        top_k=validate_top_k(top_k),
    )
    acc = MetricAccumulator()
    acc.update_stats(stats, num_bytes=None if byte_counts is None else np.sum(byte_counts))
    return acc.compute()


def loss_metrics(
    token_losses: Any,
    *,
    mask: Any = None,
    byte_counts: Any = None,
) -> dict[str, float]:
    """One-shot metrics from per-token losses (nats), e.g. from a fused cross-entropy kernel.

    Parameters
    ----------
    token_losses
        ``[...]`` per-token cross-entropy in nats.
    mask
        Optional boolean ``[...]``; ``False`` positions are not scored.
    byte_counts
        Optional UTF-8 byte count of the scored text (scalar or array, summed).

    Returns
    -------
    dict
        ``loss``, ``perplexity``, ``bits_per_token``, ``num_tokens`` and, with ``byte_counts``,
        ``bits_per_byte``. Summed in float64 on the host.
    """
    losses = np.asarray(jax.device_get(token_losses), dtype=np.float64)
    if mask is None:
        m = np.ones(losses.shape, dtype=bool)
    else:
        m = np.asarray(jax.device_get(mask)).astype(bool)
        if m.shape != losses.shape:
            raise ValueError(f"mask shape {m.shape} must equal token_losses shape {losses.shape}")
    acc = MetricAccumulator()
    acc.update(
        sum_loss=float(np.sum(losses, where=m)),
        num_tokens=int(np.sum(m)),
        num_bytes=None if byte_counts is None else np.sum(byte_counts),
    )
    return acc.compute()
