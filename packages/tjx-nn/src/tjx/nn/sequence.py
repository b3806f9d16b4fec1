"""Sequence parallelism: how a model runs when each sequence is split across devices.

tjx-nn does not know meshes (tjx-parallel does, and tjx-nn may not import it). A run that splits
its sequences (context parallelism: ``tjx.parallel.ContextParallel``) hands the model an object
with this module's `SequenceSplit` protocol, for the duration of its step::

    with tjx.nn.sequence_parallel(cp):
        loss = objective_loss(model, batch)

Under it, and only while tracing code inside the block:

* self-attention (not decoding, not cross-attention) calls ``split.attention`` with the halves of
  its kernel (``tjx.kernels.attention_forward`` / ``attention_backward``), which runs ring or
  all-gather attention across the devices;
* a decoder without ``positions`` takes ``split.positions`` (a split batch's tokens are in the
  split's own order, so ``0..s-1`` would be wrong);
* the LM head's loss keeps each device's share of the sequence as rows of its own (the chunked
  cross-entropy walks the sequence, which would otherwise gather it).

Everything else (embeddings, norms, MLPs) is per token and runs as it is.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any, Protocol

import jax

from tjx import kernels

Array = jax.Array

__all__ = [
    "SequenceSplit",
    "current_sequence_parallel",
    "sequence_parallel",
    "split_self_attention",
]


class SequenceSplit(Protocol):
    """What a model needs of a sequence split (``tjx.parallel.ContextParallel`` has it)."""

    @property
    def shards(self) -> int:
        """Into how many parts each sequence is split."""
        ...

    def check(self, seq_len: int, name: str = ...) -> None:
        """``ValueError`` naming ``name`` unless ``seq_len`` can be split."""
        ...

    def positions(self, batch: int, seq_len: int) -> Array:
        """int32 ``[batch, seq_len]``: each place's position in the split's token order."""
        ...

    def attention(
        self,
        q: Array,
        k: Array,
        v: Array,
        *,
        forward: Any,
        backward: Any,
        causal: bool = ...,
        segment_ids: Array | None = ...,
        scale: float | None = ...,
        window: int | None = ...,
    ) -> Array:
        """Self-attention across the split (see ``tjx.parallel.ContextParallel.attention``)."""
        ...


_CURRENT: contextvars.ContextVar[SequenceSplit | None] = contextvars.ContextVar(
    "tjx_sequence_parallel", default=None
)


@contextlib.contextmanager
def sequence_parallel(split: SequenceSplit | None) -> Iterator[SequenceSplit | None]:
    """Run the models traced inside the block with their sequences split by ``split`` (None:
    not split, a no-op, so a step can pass its run's split whether or not it has one)."""
    token = _CURRENT.set(split)
    try:
        yield split
    finally:
        _CURRENT.reset(token)


def current_sequence_parallel() -> SequenceSplit | None:
    """The split set by the innermost :func:`sequence_parallel` block (None outside any)."""
    return _CURRENT.get()


def split_self_attention(
    split: SequenceSplit,
    q: Array,
    k: Array,
    v: Array,
    mask: kernels.AttentionMask,
    *,
    impl: str,
    scale: float,
    softcap: float | None,
    drop: float,
    bias: Array | None,
) -> Array:
    """A layer's self-attention across ``split`` (context parallelism): its blocks are the
    forward/backward halves of the layer's kernel ``impl`` (cuDNN has none: tjx.kernels.blocks),
    masked by ``mask``'s causal flag, segment ids and window.

    Raises
    ------
    ValueError
        What a split cannot serve (an additive bias, attention dropout, cuDNN, a Pallas window),
        named with the setting to change.
    """
    window = mask.window
    ids: Any = mask.segment_ids  # one [b, s] array: the split refuses a pair in one line
    if bias is not None or drop > 0.0:
        raise ValueError(
            "a split sequence (context parallelism) takes no additive attention bias "
            "(position 'alibi' or 't5') and no attention_dropout; set position to 'rope' "
            "and attention_dropout to 0"
        )
    if impl in ("cudnn", "tokamax"):
        why = "jax's cuDNN call" if impl == "cudnn" else "tjx's tokamax kernel"
        raise ValueError(
            f"attention_impl {impl!r} cannot run context-parallel attention ({why} "
            "has no separate forward and backward); use 'auto', 'pallas' or 'xla'"
        )
    if impl == "pallas" and window is not None:
        raise ValueError(
            "attention_impl 'pallas' cannot apply sliding_window across a split sequence "
            "(its masks use the tile's own positions); use 'auto' or 'xla'"
        )
    # The soft cap rides in the halves (the split merges their log-sum-exps as they are).
    forward, backward = kernels.block_halves(impl, softcap=softcap)
    return split.attention(
        q,
        k,
        v,
        forward=forward,
        backward=backward,
        causal=mask.causal,
        segment_ids=ids,
        scale=scale,
        window=window,
    )
