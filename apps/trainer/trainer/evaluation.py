"""Held-out metrics during training: loss, perplexity, bits/token, bits/byte, top-k accuracy."""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from trainer.config import Config
from trainer.step import make_eval_step

_EVAL_STEPS: dict[int, Any] = {}


def _eval_step(setup: Any, cfg: Config) -> Any:
    key = id(setup)
    if key not in _EVAL_STEPS:
        _EVAL_STEPS.clear()
        _EVAL_STEPS[key] = jax.jit(make_eval_step(setup.graphdef, setup.rest, cfg))
    return _EVAL_STEPS[key]


def summarize(
    sums: dict[str, float], top_k: tuple[int, ...], bytes_per_token: float | None
) -> dict[str, float]:
    """Token-weighted metrics from summed counts (exact over any number of batches)."""
    n = max(sums["num_tokens"], 1.0)
    loss = sums["sum_loss"] / n
    out = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
        "tokens": sums["num_tokens"],
    }
    if bytes_per_token:
        out["bits_per_byte"] = sums["sum_loss"] / math.log(2) / (n * bytes_per_token)
    for k in top_k:
        out[f"top{k}"] = sums[f"correct_{k}"] / n
    return out


def evaluate(setup: Any, params: Any, bundle: Any, cfg: Config) -> dict[str, float]:
    """Metrics over the first ``train.eval_batches`` validation batches (always the same ones)."""
    from trainer import data_setup

    step = _eval_step(setup, cfg)
    sums: dict[str, float] = {}
    for batch in data_setup.val_batches(bundle, cfg, cfg.train.eval_batches):
        out = step(params, data_setup.to_global(batch, setup.mesh))
        for key, value in jax.device_get(out).items():
            sums[key] = sums.get(key, 0.0) + float(np.asarray(value))
    if not sums:
        raise ValueError("validation data is empty: no batch of the configured size fits")
    top_k = tuple(sorted(set(cfg.eval.top_k)))
    bpt = bundle.bytes_per_token if cfg.task != "classify" else None
    return summarize(sums, top_k, bpt)
