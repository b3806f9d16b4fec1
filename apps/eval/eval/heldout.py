"""Held-out metrics of a run: loss, perplexity, bits/token, bits/byte, top-1/5/10 accuracy.

The sums are tjx-metrics' (`lm_stats` on device, `MetricAccumulator` on the host) and the logits
the model's own (`logits()` of a decoder, `masked_lm` of BERT, `continue_halves` of the
encoder-decoder), the same code the trainer's evaluation runs.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

TOP_K = (1, 5, 10)


def make_step(
    model: Any,
    *,
    mlm_key: jax.Array | None = None,
    mlm_prob: float = 0.15,
    seq2seq: bool = False,
) -> Any:
    """A jitted ``step(params, batch) -> lm_stats sums`` for the model's graph.

    A BERT model (``mlm_key`` given) is scored on masked-token prediction, masking
    ``mlm_prob`` of the real tokens with that fixed key; the encoder-decoder (``seq2seq``) on
    continuing each window's first half; a decoder on next-token prediction.
    """
    from tjx import metrics

    graphdef, _, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]

    @jax.jit
    def step(params: Any, batch: dict[str, jax.Array]) -> dict[str, jax.Array]:
        m = nnx.merge(graphdef, params, rest)
        if mlm_key is not None:
            logits, labels = m.masked_lm(
                batch["inputs"],
                mlm_key,
                segment_ids=batch["segment_ids"],
                positions=batch.get("positions"),
                mask_prob=mlm_prob,
            )
        elif seq2seq:
            logits, labels = m.continue_halves(
                batch["inputs"], batch["targets"], segment_ids=batch["segment_ids"]
            )
        else:  # the decoder's own float32 logits of the packed batch
            seg, pos = batch.get("segment_ids"), batch.get("positions")
            logits, labels = m(batch["inputs"], positions=pos, segment_ids=seg), batch["targets"]
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
    mlm_key: jax.Array | None = None,
    mlm_prob: float = 0.15,
    seq2seq: bool = False,
) -> dict[str, float]:
    """Metrics over the held-out shards (in order; the first ``max_batches`` batches).

    ``bits_per_byte`` needs ``bytes_per_token`` and next-token scoring (every token scored);
    masked-LM runs report loss, perplexity and accuracy over the masked tokens, encoder-decoder
    runs over the continued half of each window (every token there is scored, so bits/byte too).
    """
    from tjx import data, metrics

    step = make_step(model, mlm_key=mlm_key, mlm_prob=mlm_prob, seq2seq=seq2seq)
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
    if bytes_per_token and mlm_key is None:
        out["bits_per_byte"] = out["bits_per_token"] / bytes_per_token
    return out
