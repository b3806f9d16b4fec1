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

Array = jax.Array

__all__ = ["SequenceSplit", "current_sequence_parallel", "sequence_parallel"]


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
