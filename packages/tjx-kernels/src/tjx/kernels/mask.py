"""`AttentionMask`: which keys each query of an attention call sees, as one value.

Every attention kernel of tjx.kernels (the dispatcher ``attention``, the XLA reference, Pallas
flash, cuDNN, tokamax, the split forward and backward halves) receives one `AttentionMask`
rather than its parts as keywords: a causal mask, segment ids (packed documents; a pair for
cross-attention), valid key counts, a sliding window, Llama 4's chunks and gpt-oss's sinks.

It is a pytree: the arrays (segment ids, key lengths, sinks) are its leaves and the rest (causal,
window, chunk) its static aux data, so a mask crosses ``jit``, ``vmap``, ``shard_map``,
``custom_vjp`` and ``lax.cond`` as its arrays do, and a change of a static part is a new trace.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from tjx.kernels._checks import (
    AttentionShapes,
    SegmentIds,
    check_chunk,
    check_kv_lengths,
    check_segment_ids,
    check_sinks,
    check_window,
    chunk_segment_ids,
)

Array = jax.Array

__all__ = ["AttentionMask", "check_mask"]


@dataclasses.dataclass(frozen=True)
class AttentionMask:
    """Which keys each query sees (and the sinks every softmax row adds).

    Parameters
    ----------
    causal : bool
        Top-left aligned causal mask (query ``i`` sees keys ``j <= i``).
    segment_ids : Array or (Array, Array), optional
        int ``[batch, seq]`` (self-attention) or a pair ``(q_ids [batch, q_len], kv_ids
        [batch, kv_len])``: a query sees only keys of its own segment; 0 = padding (sees and is
        seen by nothing).
    kv_lengths : Array, optional
        int ``[batch]``: keys at positions ``>= kv_lengths[b]`` are not seen.
    window : int, optional
        Sliding window: query ``i`` sees keys ``i - window < j`` (``<= i`` when causal, else
        ``< i + window``). None: every key.
    chunk : int, optional
        Chunked local attention (Llama 4's local layers): token ``t`` sees only keys of its own
        chunk ``t // chunk`` (a self-attention call: ``q_len == kv_len``).
    sinks : Array, optional
        Attention sinks (gpt-oss): one logit per query head ``[heads]`` added to every row's
        softmax denominator, a column every query sees with no value behind it.
    """

    causal: bool = False
    segment_ids: SegmentIds | None = None
    kv_lengths: Array | None = None
    window: int | None = None
    chunk: int | None = None
    sinks: Array | None = None

    def replace(self, **changes: Any) -> AttentionMask:
        """This mask with ``changes`` (field name -> new value)."""
        return dataclasses.replace(self, **changes)

    def check(self, shapes: AttentionShapes) -> None:
        """Validate every part against a call's sizes (``ValueError`` naming the part and what
        is supported)."""
        check_segment_ids(self.segment_ids, shapes)
        check_kv_lengths(self.kv_lengths, shapes)
        check_window(self.window)
        check_sinks(self.sinks, shapes)
        check_chunk(self.chunk, shapes)

    def unchunked(self, shapes: AttentionShapes) -> AttentionMask:
        """The same mask with its chunks as segment ids (each segment's chunks an id of their
        own), the one form of a chunk every kernel reads; as is without a chunk."""
        if self.chunk is None:
            return self
        ids = chunk_segment_ids(self.segment_ids, self.chunk, shapes)
        return self.replace(segment_ids=ids, chunk=None)


jax.tree_util.register_dataclass(
    AttentionMask,
    data_fields=["segment_ids", "kv_lengths", "sinks"],
    meta_fields=["causal", "window", "chunk"],
)


def check_mask(mask: object) -> None:
    """Validate that ``mask`` is an `AttentionMask` (the one form a kernel takes its mask in)."""
    if not isinstance(mask, AttentionMask):
        raise ValueError(
            f"`mask` must be a tjx.kernels.AttentionMask (causal, segment_ids, kv_lengths, "
            f"window, chunk, sinks) or None; got {type(mask).__name__}"
        )
