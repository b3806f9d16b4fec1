"""Where each token of a sequence lives under context parallelism: two mirrored chunks per device.

With causal attention a token sees every token before it, so a plain split of the sequence over
``C`` devices gives the last device ``C`` times the work of the first. Cut instead into ``2C``
chunks and give device ``r`` chunks ``r`` and ``2C - 1 - r``: every device then holds one early
and one late chunk, the same work each (the zig-zag layout of ring-attention implementations and
of MaxText's / torchtitan's load-balanced context parallelism).

A batch is put in this order once, on the host, when it is placed on the mesh
(:func:`tjx.parallel.place_batch`): its sequence dimension is then split over the ``context`` axis
as a plain block split, so device ``r``'s block is exactly its two chunks. The model never sees
the difference (a loss is a sum over tokens, positions travel with their tokens) except where the
order matters: causal masks (:mod:`tjx.parallel.context`, which knows the layout) and anything read
back per position (:func:`restore`).
"""

from __future__ import annotations

from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from tjx.parallel.mesh import CONTEXT_AXIS

__all__ = [
    "balance",
    "balanced_order",
    "check_context_split",
    "context_ways",
    "restore",
]

T = TypeVar("T")


def context_ways(mesh: Mesh) -> int:
    """The size of ``mesh``'s ``context`` axis (1 when it has none)."""
    return int(dict(mesh.shape).get(CONTEXT_AXIS, 1))


def check_context_split(seq_len: int, ways: int, name: str = "sequence length") -> None:
    """Raise ``ValueError`` unless ``seq_len`` splits into ``2 × ways`` equal chunks.

    Parameters
    ----------
    seq_len : int
        Tokens per sequence.
    ways : int
        The context axis' size (1: nothing to check).
    name : str
        What the caller calls the length (a config key), for the message.
    """
    if ways > 1 and seq_len % (2 * ways):
        raise ValueError(
            f"{name}: {seq_len} must be divisible by 2 × context = {2 * ways} (context "
            f"parallelism gives each of the {ways} devices two mirrored chunks of the sequence)"
        )


def balanced_order(seq_len: int, ways: int) -> np.ndarray:
    """The token (index in the original sequence) at each place of the balanced layout.

    Parameters
    ----------
    seq_len : int
        Divisible by ``2 * ways``.
    ways : int
        Context-parallel size ``C``.

    Returns
    -------
    numpy.ndarray
        int32 ``[seq_len]``: places ``[r·2c, (r+1)·2c)`` hold chunk ``r`` then chunk
        ``2C - 1 - r`` (chunks of ``c = seq_len / 2C`` tokens); the identity when ``ways == 1``.
    """
    if ways == 1:
        return np.arange(seq_len, dtype=np.int32)
    check_context_split(seq_len, ways)
    chunks = np.arange(seq_len, dtype=np.int32).reshape(2 * ways, -1)
    pairs = [np.concatenate([chunks[r], chunks[2 * ways - 1 - r]]) for r in range(ways)]
    return np.concatenate(pairs)


def _along(x: Any, order: np.ndarray, axis: int) -> Any:
    """``x`` with ``order`` taken along ``axis`` (numpy stays numpy, jax stays jax)."""
    if isinstance(x, jax.Array):
        return jnp.take(x, jnp.asarray(order), axis=axis)
    return np.take(np.asarray(x), order, axis=axis)


def balance(x: T, ways: int, *, axis: int = 1) -> T:
    """``x`` with its sequence ``axis`` in the balanced layout (see :func:`balanced_order`)."""
    if ways == 1:
        return x
    order = balanced_order(x.shape[axis], ways)  # type: ignore[attr-defined]
    return _along(x, order, axis)  # type: ignore[no-any-return]


def restore(x: T, ways: int, *, axis: int = 1) -> T:
    """The inverse of :func:`balance`: ``x``'s sequence ``axis`` back in the original order."""
    if ways == 1:
        return x
    order = balanced_order(x.shape[axis], ways)  # type: ignore[attr-defined]
    inverse = np.argsort(order).astype(np.int32)
    return _along(x, inverse, axis)  # type: ignore[no-any-return]
