"""Held-out metrics of a run: loss, perplexity, bits/token, bits/byte, top-1/5/10 accuracy.

The sums are tjx-metrics' (`lm_stats` on device, `MetricAccumulator` on the host) and the logits
and labels tjx-nn's (`objective_logits`: next token for a decoder, masked tokens for BERT, the
continued half for the encoder-decoder), the same code the trainer's evaluation runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

TOP_K = (1, 5, 10)


def make_step(model: Any, *, key: jax.Array | None = None, mask_prob: float = 0.15) -> Any:
    """A jitted ``step(params, batch) -> lm_stats sums`` of tjx-nn's ``objective_logits`` for the
    model's graph; ``key`` and ``mask_prob`` are BERT's fixed masking (see ``evaluate``)."""
    from tjx import metrics, nn

    graphdef, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

    @jax.jit
    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        m = nnx.merge(graphdef, params, rest)
        logits, labels = nn.objective_logits(m, batch, key=key, mask_prob=mask_prob)
        return metrics.lm_stats(logits, labels, top_k=TOP_K)

    return step


def evaluate(
    model: Any,
    shard_dir: Path,
    *,
    seq_len: int,
    batch_size: int,
    max_batches: int | None,
    bytes_per_token: float | None,
    key: jax.Array | None = None,
    mask_prob: float = 0.15,
) -> dict[str, float]:
    """Metrics over the held-out shards (in order; the first ``max_batches`` batches).

    ``bits_per_byte`` needs ``bytes_per_token`` and an objective that scores every token
    (tjx.nn's ``Objective.scores_every_token``);
    masked-LM runs (BERT: ``key``, e.g. ``tjx.nn.eval_mask_key(seed)``, masks ``mask_prob`` of
    the real tokens, the same at every call) report loss, perplexity and accuracy over the
    masked tokens, encoder-decoder runs over the continued half of each window (every token
    there is scored, so bits/byte too).
    """
    from tjx import data, metrics, nn

    step = make_step(model, key=key, mask_prob=mask_prob)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    acc = metrics.MetricAccumulator()
    batches = data.validation_batches(shard_dir, seq_len, batch_size)
    for batch in itertools.islice(batches, max_batches):  # None: all of them
        acc.update_stats(step(params, {k: jnp.asarray(v) for k, v in batch.items()}))
    if acc.num_tokens == 0:
        raise ValueError(
            f"{shard_dir}: no full held-out batch of {batch_size}×{seq_len} tokens; "
            "lower --batch-size"
        )
    out = acc.compute()
    if nn.objective_of(model).scores_every_token:  # not BERT's masked share
        out = metrics.with_bits_per_byte(out, bytes_per_token)
    return out
