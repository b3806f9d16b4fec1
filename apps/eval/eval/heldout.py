"""Held-out metrics of a run: loss, perplexity, bits/token, bits/byte, top-1/5/10 accuracy."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

TOP_K = (1, 5, 10)


def _sums(logits: jax.Array, labels: jax.Array, mask: jax.Array) -> dict[str, jax.Array]:
    safe = jnp.where(mask, labels, 0)
    logz = jax.nn.logsumexp(logits, axis=-1)
    label_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    # Rank of the label = number of strictly larger logits; a top-k hit ⇔ rank < k.
    rank = (logits > label_logit[..., None]).sum(-1)
    out = {"sum_loss": jnp.where(mask, logz - label_logit, 0.0).sum(), "num_tokens": mask.sum()}
    for k in TOP_K:
        out[f"correct_{k}"] = jnp.where(mask, rank < k, False).sum()
    return out


def make_step(model: Any) -> Any:
    """A jitted ``step(params, batch) -> sums`` for the model's graph."""
    graphdef, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

    @jax.jit
    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        m = nnx.merge(graphdef, params, rest)
        hidden = m(
            batch["inputs"],
            positions=batch.get("positions"),
            segment_ids=batch.get("segment_ids"),
            deterministic=True,
            return_hidden=True,
        )
        logits = jnp.einsum(
            "...d,dv->...v", hidden.astype(jnp.float32), m.unembedding().astype(jnp.float32)
        )
        labels = batch["targets"]
        return _sums(logits, labels, labels != -100)

    return step


def finish(sums: dict[str, float], bytes_per_token: float | None) -> dict[str, float]:
    """Token-weighted metrics from the summed counts."""
    n = max(sums["num_tokens"], 1.0)
    loss = sums["sum_loss"] / n
    out = {
        "loss": loss,
        "perplexity": math.exp(min(loss, 700.0)),
        "bits_per_token": loss / math.log(2),
    }
    if bytes_per_token:
        out["bits_per_byte"] = out["bits_per_token"] / bytes_per_token
    for k in TOP_K:
        out[f"top{k}"] = sums[f"correct_{k}"] / n
    out["tokens"] = sums["num_tokens"]
    return out


def evaluate(
    model: Any,
    shard_dir: Path,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
    bytes_per_token: float | None,
) -> dict[str, float]:
    """Metrics over the held-out shards (in order; the first ``max_batches`` batches)."""
    from tjx import data

    step = make_step(model)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    sums: dict[str, float] = {}
    for i, batch in enumerate(data.validation_batches(shard_dir, seq_len, batch_size)):
        if max_batches is not None and i >= max_batches:
            break
        out = jax.device_get(step(params, {k: jnp.asarray(v) for k, v in batch.items()}))
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + float(np.asarray(value))
    if not sums:
        raise ValueError(
            f"{shard_dir}: no full held-out batch of {batch_size}×{seq_len} tokens; "
            "lower --batch-size"
        )
    return finish(sums, bytes_per_token)
