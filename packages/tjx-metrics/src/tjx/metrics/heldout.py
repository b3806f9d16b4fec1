"""One held-out evaluation for every objective: the per-batch sums and the host loop over them.

A trainer's validation and an evaluator score a checkpoint with the same two pieces, so their
numbers are the same on the same batches:

* :func:`heldout_step` turns a model's ``logits_fn(params, batch) -> (logits, labels)`` (tjx-nn's
  ``objective_logits_fn``) into a jit-friendly step returning :func:`~tjx.metrics.lm_stats`' sums.
* :func:`evaluate_heldout` runs a step over batches and names the means for the objective:
  :func:`accumulate_heldout` (exact, token- or image-weighted sums) then :func:`heldout_metrics`
  (bits per byte where every token is scored, a classifier's ``accuracy`` and ``num_images``);
  :func:`evaluate_heldout_sources` does it for a weighted mixture: each source, and all pooled.

This package knows no model: the caller says what the objective is (``scores_every_token``,
``num_classes``) and where a batch goes (``place``: one device, or sharded on a mesh).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from tjx.metrics.accumulate import MetricAccumulator, with_bits_per_byte
from tjx.metrics.classification import classification_metrics
from tjx.metrics.lm import lm_stats

__all__ = [
    "DEFAULT_TOP_K",
    "PER_SOURCE",
    "accumulate_heldout",
    "evaluate_heldout",
    "evaluate_heldout_sources",
    "heldout_metrics",
    "heldout_step",
]

Batch = Mapping[str, Any]
#: ``step(params, batch) -> sums``; the batch is whatever ``place`` made of a host batch.
Step = Callable[[Any, Any], Mapping[str, Any]]

#: The top-k accuracies reported when the caller names none.
DEFAULT_TOP_K = (1, 5, 10)
_EMPTY = "no held-out batch was scored (the data is empty, or too small for one batch)"


def heldout_step(
    logits_fn: Callable[[Any, Any], tuple[jax.Array, jax.Array]],
    *,
    top_k: Sequence[int] = DEFAULT_TOP_K,
) -> Callable[[Any, Any], dict[str, jax.Array]]:
    """``step(params, batch) -> sums``: :func:`lm_stats` of ``logits_fn``'s logits and labels.

    Parameters
    ----------
    logits_fn
        ``(params, batch) -> (logits [..., classes], int labels [...])``, ``-100`` unscored.
    top_k
        The top-k correct counts to sum (duplicates and order do not matter).

    Returns
    -------
    Callable
        A pure function of ``(params, batch)``, for ``jax.jit`` by the caller (who knows the
        shardings).
    """
    ks = tuple(sorted({int(k) for k in top_k}))

    def step(params: Any, batch: Any) -> dict[str, jax.Array]:
        logits, labels = logits_fn(params, batch)
        return lm_stats(logits, labels, top_k=ks)

    return step


def _to_device(batch: Batch) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in batch.items()}


def accumulate_heldout(
    step: Step,
    params: Any,
    batches: Iterable[Batch],
    *,
    place: Callable[[Batch], Any] | None = None,
    empty: str = _EMPTY,
) -> MetricAccumulator:
    """The exact sums of ``step`` over ``batches`` (no host wait between batches).

    Parameters
    ----------
    step
        From :func:`heldout_step` (jitted or not).
    params
        The parameters ``step`` takes.
    batches
        Host batches (NumPy arrays), read once.
    place
        Puts a host batch where ``step`` reads it (e.g. sharded on a mesh); default: the default
        device (``jnp.asarray`` of every entry).
    empty
        The message of the ``ValueError`` raised when nothing was scored.

    Returns
    -------
    MetricAccumulator
        The sums, for :func:`heldout_metrics` (or ``merge`` with other sources' first).

    Raises
    ------
    ValueError
        No scored unit (no batch, or every label unscored): ``empty``.
    """
    put = place or _to_device
    acc = MetricAccumulator()
    for batch in batches:
        acc.update_stats(step(params, put(batch)))
    if acc.num_tokens == 0:
        raise ValueError(empty)
    return acc


def heldout_metrics(
    acc: MetricAccumulator,
    *,
    bytes_per_token: float | None = None,
    scores_every_token: bool = True,
    num_classes: int | None = None,
) -> dict[str, float]:
    """The means of ``acc``, named for the objective.

    Parameters
    ----------
    acc
        Held-out sums (:func:`accumulate_heldout`).
    bytes_per_token
        UTF-8 bytes per token of the held-out text; with ``scores_every_token`` it adds
        ``bits_per_byte`` (:func:`~tjx.metrics.with_bits_per_byte`). ``None`` or 0: unknown.
    scores_every_token
        Every token of the text is scored (not a masked LM's share), so bits per token over the
        text's bytes per token is its bits per byte.
    num_classes
        A classifier's class count: the means come out as
        :func:`~tjx.metrics.classification_metrics` names them (``accuracy``, ``num_images``,
        ``top{k}`` below the class count), with no bits.

    Returns
    -------
    dict
        ``loss``, ``perplexity``, ``bits_per_token``, ``top{k}``, ``num_tokens`` (and
        ``bits_per_byte``); or a classifier's names.
    """
    out = acc.compute()
    if num_classes is not None:
        return classification_metrics(out, num_classes)
    if not scores_every_token:
        return out
    return with_bits_per_byte(out, bytes_per_token)


def evaluate_heldout(
    step: Step,
    params: Any,
    batches: Iterable[Batch],
    *,
    place: Callable[[Batch], Any] | None = None,
    empty: str = _EMPTY,
    bytes_per_token: float | None = None,
    scores_every_token: bool = True,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Held-out metrics of ``step`` over ``batches``: :func:`accumulate_heldout`, then
    :func:`heldout_metrics` (see them for the arguments).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> logits = jnp.log(jnp.array([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3]]))
    >>> step = heldout_step(lambda params, batch: (logits, batch["labels"]), top_k=(1, 2))
    >>> out = evaluate_heldout(step, None, [{"labels": [0, 2]}], num_classes=3)
    >>> out["accuracy"], out["top2"], out["num_images"]
    (0.5, 1.0, 2.0)
    """
    acc = accumulate_heldout(step, params, batches, place=place, empty=empty)
    return heldout_metrics(
        acc,
        bytes_per_token=bytes_per_token,
        scores_every_token=scores_every_token,
        num_classes=num_classes,
    )


#: The metrics :func:`evaluate_heldout_sources` reports per source (the rest only pooled).
PER_SOURCE = ("loss", "bits_per_byte", "top1", "num_tokens")


def evaluate_heldout_sources(
    step: Step,
    params: Any,
    sources: Mapping[str, tuple[Iterable[Batch], float | None]],
    *,
    per_source: Sequence[str] = PER_SOURCE,
    place: Callable[[Batch], Any] | None = None,
    empty: str = _EMPTY,
    scores_every_token: bool = True,
    num_classes: int | None = None,
) -> dict[str, float]:
    """Held-out metrics of a weighted mixture: each source's, and all of them pooled.

    Parameters
    ----------
    step, params
        As for :func:`accumulate_heldout`.
    sources
        ``{name: (batches, bytes_per_token)}``: each source's own held-out batches and the UTF-8
        bytes per token of its text (``None`` or 0: unknown).
    per_source
        The metrics reported per source, as ``<metric>/<name>`` (``loss/web``).
    place, empty, scores_every_token, num_classes
        As for :func:`evaluate_heldout` (``empty``: any source with nothing scored).

    Returns
    -------
    dict
        :func:`heldout_metrics` of every source's sums pooled (its tokens weighted alike; bits
        per byte over all sources' bytes, each counted by its own bytes per token, or none once
        one source's is unknown), then ``per_source``'s metrics of each source.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> step = heldout_step(lambda _, batch: (jnp.log(batch["p"]), batch["labels"]), top_k=(1,))
    >>> a = [{"p": jnp.array([[0.5, 0.5]]), "labels": jnp.array([0])}]
    >>> b = [{"p": jnp.array([[0.25, 0.75], [0.25, 0.75]]), "labels": jnp.array([1, 1])}]
    >>> out = evaluate_heldout_sources(step, None, {"a": (a, 2.0), "b": (b, None)})
    >>> out["num_tokens"], out["num_tokens/a"], out["top1/b"], "bits_per_byte" in out
    (3.0, 1.0, 1.0, False)
    """
    naming: dict[str, Any] = {"scores_every_token": scores_every_token, "num_classes": num_classes}
    pooled, each = MetricAccumulator(), {}
    num_bytes: float | None = 0.0  # None once a source has no bytes/token
    for name, (batches, bpt) in sources.items():
        acc = accumulate_heldout(step, params, batches, place=place, empty=empty)
        for key, value in heldout_metrics(acc, bytes_per_token=bpt, **naming).items():
            if key in per_source:
                each[f"{key}/{name}"] = value
        num_bytes = None if num_bytes is None or not bpt else num_bytes + acc.num_tokens * bpt
        pooled.merge(acc)
    # Bits over all sources' tokens / their bytes: bits per token / bytes per token.
    bpt_all = num_bytes / pooled.num_tokens if num_bytes else None
    return {**heldout_metrics(pooled, bytes_per_token=bpt_all, **naming), **each}
