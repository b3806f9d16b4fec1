"""T5's bucketed relative position bias (Raffel et al., 2020): ``position.kind="t5"``.

Each attention logit gets a learned per-head scalar chosen by the bucket of the key/query
distance. One ``[buckets, heads]`` table per stack (encoder, decoder) is shared by all its layers,
as in T5; cross-attention has none. The bias goes into ``tjx.kernels.attention(..., bias=)``
(its XLA path).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.params import make_param, normal

Array = jax.Array


@functools.lru_cache(maxsize=32)
def _distance_buckets(num_buckets: int, max_distance: int) -> np.ndarray:
    """Bucket of every distance ``0..max_distance`` for one direction (int32, float64 maths).

    A table built once in NumPy float64 keeps the log-spaced boundaries exact: the device's
    float32 ``log`` could otherwise move a distance sitting on a boundary (e.g. ``n = 16`` with
    16 buckets and max distance 128, where ``log(2)/log(16)·8`` is exactly 2) into the bucket
    below.
    """
    max_exact = num_buckets // 2
    n = np.arange(max_distance + 1, dtype=np.float64)
    with np.errstate(divide="ignore"):  # log(0) for the exact range, discarded by the where
        large = max_exact + np.floor(
            np.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
        )
    buckets = np.where(n < max_exact, n, np.minimum(large, num_buckets - 1))
    return buckets.astype(np.int32)


def t5_relative_bucket(
    relative_position: Array,
    *,
    bidirectional: bool,
    num_buckets: int = 32,
    max_distance: int = 128,
) -> Array:
    """T5's bucket of each relative position ``key_position - query_position``.

    With ``bidirectional`` (encoders) half the buckets serve keys at or before the query and half
    keys after it (those get ``+ num_buckets // 2``); otherwise (causal self-attention) only
    distances into the past count and keys after the query share bucket 0. Within a direction of
    ``B`` buckets, a distance ``n`` below ``B // 2`` has its own bucket ``n``; larger distances are
    log-spaced, ``B//2 + floor(log(n / (B//2)) / log(max_distance / (B//2)) · (B - B//2))``,
    clipped to ``B - 1``, so every distance ``>= max_distance`` lands in the last bucket.

    Parameters
    ----------
    relative_position : Array
        int ``[...]``: key position minus query position.
    bidirectional : bool
        Encoder-style (both directions) or decoder-style (causal) bucketing.
    num_buckets : int
        Total buckets (``>= 4`` when bidirectional, ``>= 2`` otherwise).
    max_distance : int
        Distance from which everything shares the last bucket; ``> B // 2`` where ``B`` is the
        number of buckets per direction.

    Returns
    -------
    Array
        int32 ``[...]`` in ``[0, num_buckets)``.

    Raises
    ------
    ValueError
        Too few buckets, or ``max_distance`` not above the exact range.
    """
    least = 4 if bidirectional else 2
    if isinstance(num_buckets, bool) or not isinstance(num_buckets, int) or num_buckets < least:
        raise ValueError(f"num_buckets must be an int >= {least}; got {num_buckets!r}")
    per_direction = num_buckets // 2 if bidirectional else num_buckets
    if not isinstance(max_distance, int) or max_distance <= per_direction // 2:
        raise ValueError(
            f"max_distance must be an int > {per_direction // 2} (the exact-bucket range); "
            f"got {max_distance!r}"
        )
    rel = jnp.asarray(relative_position).astype(jnp.int32)
    if bidirectional:
        offset = jnp.where(rel > 0, per_direction, 0)
        dist = jnp.abs(rel)
    else:
        offset = jnp.zeros_like(rel)
        dist = jnp.maximum(-rel, 0)
    table = jnp.asarray(_distance_buckets(per_direction, max_distance))
    # Distances past max_distance all sit in the last bucket, which the table's last row holds.
    return offset + jnp.take(table, jnp.minimum(dist, max_distance))


class RelativePositionBias(nnx.Module):
    """A learned ``[relative_buckets, heads]`` table giving additive attention-logit biases.

    Parameters
    ----------
    config : TransformerConfig
        ``relative_buckets``, ``relative_max_distance``, ``num_heads``, ``init.std``,
        ``precision``.
    bidirectional : bool
        Encoder (True) or causal decoder (False) bucketing.
    """

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, bidirectional: bool) -> None:
        self.bidirectional = bidirectional
        self.num_buckets = config.position.relative_buckets
        self.max_distance = config.position.relative_max_distance
        # The buckets are no logical axis (replicated); heads shard like the attention heads.
        self.table = make_param(
            rngs,
            normal(config.init.std),
            (config.position.relative_buckets, config.num_heads),
            (None, "heads"),
            config.precision.param_dtype,
        )

    def __call__(self, q_positions: Array, k_positions: Array) -> Array:
        """Float32 bias ``[b, heads, s_q, s_k]`` for int positions ``[b, s_q]`` and ``[b, s_k]``.

        Positions (not indices) are used, so packed documents whose positions restart get the
        same bias as when run alone.
        """
        rel = k_positions[:, None, :] - q_positions[:, :, None]
        buckets = t5_relative_bucket(
            rel,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        # The softmax runs in float32 (tjx.kernels), so the bias is float32 whatever the params.
        bias = jnp.take(self.table[...].astype(jnp.float32), buckets, axis=0)  # [b, q, k, h]
        return jnp.transpose(bias, (0, 3, 1, 2))
