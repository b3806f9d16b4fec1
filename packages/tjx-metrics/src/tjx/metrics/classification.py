"""Classification metrics under their own names.

A classifier is scored with the LM sums (:func:`~tjx.metrics.lm_stats` over ``[batch, classes]``
logits and one label per image), whose means come out as ``top1``, ``num_tokens`` and
``perplexity``. :func:`classification_metrics` renames them into what a reader of an image run
expects: ``accuracy`` and ``num_images``, no perplexity or bits, and only the top-k accuracies
that say something (top-k with ``k >= num_classes`` is always 1).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["classification_metrics"]

#: The means a classification report needs, as `MetricAccumulator.compute` names them.
_REQUIRED = ("loss", "top1", "num_tokens")


def classification_metrics(metrics: Mapping[str, float], num_classes: int) -> dict[str, float]:
    """A classifier's metrics from LM-named means (``MetricAccumulator.compute``, ``lm_metrics``).

    Parameters
    ----------
    metrics : Mapping[str, float]
        At least ``loss``, ``top1`` and ``num_tokens`` (scored labels: images); ``top{k}``
        accuracies are read too.
    num_classes : int
        The classifier's number of classes (>= 2).

    Returns
    -------
    dict
        ``loss``, ``accuracy`` (top-1), ``num_images`` and ``top{k}`` for ``1 < k <
        num_classes``, in that order; perplexity and bits per token are left out.

    Raises
    ------
    ValueError
        ``num_classes`` below 2, or a required mean missing (compute with ``1`` in ``top_k``).

    Examples
    --------
    >>> m = {"loss": 0.7, "perplexity": 2.0, "top1": 0.5, "top5": 0.9, "top10": 1.0,
    ...      "num_tokens": 8}
    >>> classification_metrics(m, num_classes=10)
    {'loss': 0.7, 'accuracy': 0.5, 'num_images': 8, 'top5': 0.9}
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2; got {num_classes!r}")
    missing = [key for key in _REQUIRED if key not in metrics]
    if missing:
        raise ValueError(
            f"classification_metrics: no {', '.join(missing)} in the metrics (have "
            f"{sorted(metrics)}); compute them with lm_stats(..., top_k) holding 1"
        )
    named = {
        "loss": metrics["loss"],
        "accuracy": metrics["top1"],
        "num_images": metrics["num_tokens"],
    }
    for key, value in metrics.items():
        k = key[3:]
        if key.startswith("top") and k.isdigit() and 1 < int(k) < num_classes:
            named[key] = value
    return named
