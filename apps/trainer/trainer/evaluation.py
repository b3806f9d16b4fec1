"""Held-out metrics during training: loss, perplexity, bits/token, bits/byte, top-k accuracy."""

from __future__ import annotations

from typing import Any

import jax

from trainer.config import Config
from trainer.step import make_eval_step

_EVAL_STEPS: dict[int, Any] = {}
#: A mixture's metrics kept per source (``val_loss/<name>``, ...): the rest only pooled.
PER_SOURCE = ("loss", "bits_per_byte", "top1", "num_tokens")


def _eval_step(setup: Any, cfg: Config) -> Any:
    key = id(setup)
    if key not in _EVAL_STEPS:
        _EVAL_STEPS.clear()
        _EVAL_STEPS[key] = jax.jit(make_eval_step(setup.graphdef, setup.rest, cfg))
    return _EVAL_STEPS[key]


def evaluate(setup: Any, params: Any, bundle: Any, cfg: Config) -> dict[str, float]:
    """Metrics over the first ``train.eval_batches`` validation batches (always the same ones):
    tjx-metrics' token-weighted ``loss``, ``perplexity``, ``bits_per_token``, ``top{k}``,
    ``num_tokens`` and, for text, ``bits_per_byte``.

    A mixture (``data.sources``) evaluates each source's own held-out split: `PER_SOURCE`'s
    metrics per source as ``<metric>/<name>`` (``loss/web``, logged ``val_loss/web``), and every
    plain key over all of them together (the sources' tokens pooled, bytes by each source's
    bytes/token).
    """
    from tjx import metrics
    from trainer import data_setup

    step = _eval_step(setup, cfg)
    if getattr(bundle, "mixture", None) is None:
        batches = data_setup.val_batches(bundle, cfg, cfg.train.eval_batches)
        out = _accumulate(step, params, setup.mesh, batches).compute()
        if cfg.task == "classify":  # accuracy and images, not top1 and tokens (tjx-metrics' names)
            return metrics.classification_metrics(out, cfg.model.num_classes)
        return _with_bits_per_byte(out, bundle.bytes_per_token, cfg)
    pooled, per_source = metrics.MetricAccumulator(), {}
    num_bytes: float | None = 0.0  # None once a source has no bytes/token
    for name, (batches, bpt) in data_setup.val_sets(bundle, cfg, cfg.train.eval_batches).items():
        acc = _accumulate(step, params, setup.mesh, batches)
        for key, value in _with_bits_per_byte(acc.compute(), bpt, cfg).items():
            if key in PER_SOURCE:
                per_source[f"{key}/{name}"] = value
        num_bytes = None if num_bytes is None or not bpt else num_bytes + acc.num_tokens * bpt
        pooled.merge(acc)
    out = pooled.compute()
    if num_bytes:  # bits over all sources' tokens / their bytes: bits per token / bytes per token
        out = _with_bits_per_byte(out, num_bytes / pooled.num_tokens, cfg)
    return {**out, **per_source}


def _accumulate(step: Any, params: Any, mesh: Any, batches: Any) -> Any:
    """tjx-metrics' accumulator over ``batches``; an empty validation set is an error."""
    from tjx import metrics, parallel

    acc = metrics.MetricAccumulator()
    for batch in batches:
        acc.update_stats(step(params, parallel.place_batch(batch, mesh)))
    if acc.num_tokens == 0:
        raise ValueError("validation data is empty: no batch of the configured size fits")
    return acc


def _with_bits_per_byte(
    out: dict[str, float], bytes_per_token: float | None, cfg: Config
) -> dict[str, float]:
    from tjx import metrics

    # Where every token is scored, bytes follow from the shards' bytes/token.
    if not cfg.objective.scores_every_token:
        return out
    return metrics.with_bits_per_byte(out, bytes_per_token)
