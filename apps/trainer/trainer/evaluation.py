"""Held-out metrics during training: loss, perplexity, bits/token, bits/byte, top-k accuracy."""

from __future__ import annotations

from typing import Any

import jax

from trainer.config import Config
from trainer.step import make_eval_step

_EVAL_STEPS: dict[int, Any] = {}


def _eval_step(setup: Any, cfg: Config) -> Any:
    key = id(setup)
    if key not in _EVAL_STEPS:
        _EVAL_STEPS.clear()
        _EVAL_STEPS[key] = jax.jit(make_eval_step(setup.graphdef, setup.rest, cfg))
    return _EVAL_STEPS[key]


def evaluate(setup: Any, params: Any, bundle: Any, cfg: Config) -> dict[str, float]:
    """Metrics over the first ``train.eval_batches`` validation batches (always the same ones):
    tjx-metrics' token-weighted ``loss``, ``perplexity``, ``bits_per_token``, ``top{k}``,
    ``num_tokens`` and, for text, ``bits_per_byte``."""
    from tjx import metrics, parallel
    from trainer import data_setup

    step = _eval_step(setup, cfg)
    acc = metrics.MetricAccumulator()
    for batch in data_setup.val_batches(bundle, cfg, cfg.train.eval_batches):
        acc.update_stats(step(params, parallel.place_batch(batch, setup.mesh)))
    if acc.num_tokens == 0:
        raise ValueError("validation data is empty: no batch of the configured size fits")
    out = acc.compute()
    if cfg.task == "classify":  # accuracy and images, not top1 and tokens (tjx-metrics' names)
        return metrics.classification_metrics(out, cfg.model.num_classes)
    # Where every token is scored, bytes follow from the shards' bytes/token.
    if cfg.objective.scores_every_token and bundle.bytes_per_token:
        out["bits_per_byte"] = out["bits_per_token"] / bundle.bytes_per_token
    return out
