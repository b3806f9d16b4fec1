"""Batched log-likelihood of continuation tokens on a small fixed set of padded shapes.

The harness asks for thousands of (context, continuation) scores of every length. Each jitted call
here takes a ``[batch_size, L]`` block where ``L`` is one of a few *length buckets* (powers of two
up to the model's ``max_seq_len``, and ``max_seq_len`` itself), so a whole task compiles at most
once per bucket, never once per request length. Rows are right-padded: the model is causal, so a
pad after a row's last real token changes none of that row's logits; missing rows of the last
block are padding rows whose scores are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

#: The shortest bucket: shorter rows all share it (a few wasted positions cost less than a compile).
SMALLEST_BUCKET = 32


def length_buckets(max_len: int, smallest: int = SMALLEST_BUCKET) -> tuple[int, ...]:
    """Powers of two from ``smallest`` below ``max_len``, then ``max_len`` itself.

    Parameters
    ----------
    max_len : int
        The model's longest input (``max_seq_len``).
    smallest : int
        The first bucket.

    Returns
    -------
    tuple of int
        Increasing lengths; the last is ``max_len``.
    """
    out, n = [], smallest
    while n < max_len:
        out.append(n)
        n *= 2
    return (*out, max_len)


def bucket_for(n: int, buckets: Sequence[int]) -> int:
    """The smallest bucket holding ``n`` positions (``ValueError`` if none does)."""
    for b in buckets:
        if n <= b:
            return b
    raise ValueError(f"{n} positions exceed the longest bucket {buckets[-1]}")


class Scorer:
    """Summed log-probability and greediness of each row's last tokens, batched and jitted.

    Parameters
    ----------
    model : DecoderLM
        Any tjx.nn decoder (its ``__call__`` gives float32 logits).
    batch_size : int
        Rows per jitted call (the last block is padded up to it).
    """

    def __init__(self, model: Any, batch_size: int) -> None:
        self.batch_size = batch_size
        self.max_len = int(model.config.max_seq_len)
        self.buckets = length_buckets(self.max_len)
        #: How many times the scoring function was traced (one per bucket used, at most).
        self.compiles = 0
        graphdef, params, rest = nnx.split(model, nnx.Param, ...)  # type: ignore[misc]
        self._params = params

        def score(
            params: Any, tokens: jax.Array, targets: jax.Array, mask: jax.Array
        ) -> tuple[jax.Array, jax.Array]:
            self.compiles += 1  # runs only while tracing
            m = nnx.merge(graphdef, params, rest)
            logits = m(tokens).astype(jnp.float32)
            logp = jax.nn.log_softmax(logits, axis=-1)
            picked = jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
            greedy = jnp.argmax(logits, axis=-1) == targets
            sums = jnp.sum(jnp.where(mask, picked, 0.0), axis=-1)
            return sums, jnp.all(jnp.where(mask, greedy, True), axis=-1)

        self._score = jax.jit(score)

    def score(
        self, seqs: Sequence[Sequence[int]], cont_lens: Sequence[int]
    ) -> list[tuple[float, bool]]:
        """Score up to ``batch_size`` rows in one call.

        Parameters
        ----------
        seqs : sequence of int sequences
            Each row's tokens, at most ``max_seq_len + 1`` of them: the model reads all but the
            last and predicts each next one.
        cont_lens : sequence of int
            How many of each row's last tokens are scored (``1 <= n < len(row)``).

        Returns
        -------
        list of (float, bool)
            Per row: the summed log-probability (nats) of its scored tokens and whether each of
            them is the model's argmax.
        """
        if not 0 < len(seqs) <= self.batch_size:
            raise ValueError(f"score: 1..{self.batch_size} rows per call; got {len(seqs)}")
        width = bucket_for(max(len(s) - 1 for s in seqs), self.buckets)
        tokens = np.zeros((self.batch_size, width), np.int32)
        targets = np.zeros((self.batch_size, width), np.int32)
        mask = np.zeros((self.batch_size, width), bool)
        for r, (seq, n) in enumerate(zip(seqs, cont_lens, strict=True)):
            row = np.asarray(seq, np.int32)
            if not 1 <= n < len(row) or len(row) > self.max_len + 1:
                raise ValueError(
                    f"score: row {r} has {len(row)} tokens and {n} scored; need 1 <= scored < "
                    f"tokens <= {self.max_len + 1}"
                )
            k = len(row) - 1
            tokens[r, :k], targets[r, :k] = row[:-1], row[1:]
            mask[r, k - n : k] = True
        sums, greedy = self._score(self._params, tokens, targets, mask)
        sums_np, greedy_np = np.asarray(sums, np.float64), np.asarray(greedy)
        return [(float(sums_np[r]), bool(greedy_np[r])) for r in range(len(seqs))]
