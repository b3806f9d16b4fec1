"""Per-leaf fingerprints: sharding-independent checksums that launch no collective.

The fingerprint of an array is a pair of wrapping ``uint32`` sums over its bit pattern,
``[Σ w_i, Σ w_i·(2i+1)]``, where ``w`` are the element bits widened to 32-bit words (an
8-byte element gives two words, low word first) and ``i`` is the word's flat C-order index in
the *global* array. Wrapping addition is associative, so the value does not depend on how the
array is split: a fingerprint taken on one mesh is compared after a restore onto another. It
detects corruption, not tampering (it is not a cryptographic hash).

How it is computed (and why). A fully addressable ``jax.Array`` (every single-process run) is
fingerprinted on the host, shard by shard: each distinct shard (``replica_id == 0``) is copied
to host memory and its partial sums are taken with the shard's global offset, then the partial
sums are added. No XLA computation is launched at all. An earlier version ran one small jitted
reduction per leaf on device; over an FSDP-sharded state that is one independent all-reduce
per leaf, and XLA:CPU deadlocks when dozens of independent collective computations are in
flight at once ("Expected 8 threads to join the rendezvous, but only 7 of them arrived").

The partial sums need one pass per axis and no index array: for a block ``B`` of the global
word array starting at ``s`` (global word strides ``g``),
``Σ_{i∈B} w_i·i = Σ_axis g_a · (s_a · Σ w + Σ_k k · (w summed over the other axes)[k])``.

Arrays that span several processes (multi-host) cannot be read whole on one host; they are
fingerprinted on device by *one* jitted computation over all of them, so only one collective
program is launched per call, in the calling thread, and waited for before returning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_MASK = 0xFFFFFFFF


def covered(dtype: Any) -> bool:
    """Whether arrays of ``dtype`` get a fingerprint (not complex, string or object dtypes)."""
    dt = np.dtype(dtype)
    return dt == np.bool_ or (dt.kind not in "OUSc" and dt.itemsize in (1, 2, 4, 8))


def _words(x: np.ndarray) -> np.ndarray:
    """The element bits as unsigned words: ``x.shape`` (``(1,)`` for 0-d) + ``(2,)`` if 8-byte.

    1- and 2-byte words are widened to 32 bits by the reductions (``dtype=np.uint32``), not
    here, so no widened copy of the block is made.
    """
    x = np.ascontiguousarray(x).reshape(x.shape or (1,))
    if x.dtype == np.bool_ or x.dtype.itemsize == 1:
        return x.view(np.uint8)
    if x.dtype.itemsize == 2:
        return x.view(np.uint16)
    if x.dtype.itemsize == 4:
        return x.view(np.uint32)
    if not np.little_endian:  # pragma: no cover - big-endian hosts only
        u64 = x.view(np.uint64)
        lo = (u64 & np.uint64(_MASK)).astype(np.uint32)
        return np.stack([lo, (u64 >> np.uint64(32)).astype(np.uint32)], axis=-1)
    return x.view(np.uint32).reshape(*x.shape, 2)  # low word first on little-endian hosts


def _word_strides(global_shape: Sequence[int], itemsize: int) -> list[int]:
    """C-order strides (in words) of the global word array."""
    shape = [*(global_shape or (1,)), *((2,) if itemsize == 8 else ())]
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= int(size)
    return strides[::-1]


def _block_sums(
    words: np.ndarray, starts: Sequence[int], strides: Sequence[int]
) -> tuple[int, int]:
    """``(Σ w, Σ w·i) mod 2**32`` over one block of the global word array."""
    if words.size == 0:
        return 0, 0
    total, weighted = 0, 0
    for axis in range(words.ndim):
        others = tuple(a for a in range(words.ndim) if a != axis)
        along = np.sum(words, axis=others, dtype=np.uint32)  # wraps mod 2**32
        if axis == 0:
            total = int(np.sum(along, dtype=np.uint32))
        ks = np.arange(along.size, dtype=np.uint32)
        k_sum = int(np.sum(ks * along, dtype=np.uint32))
        weighted += int(strides[axis]) * (int(starts[axis]) * total + k_sum)
    return total & _MASK, weighted & _MASK


def _finish(total: int, weighted: int) -> list[int]:
    return [total & _MASK, (2 * weighted + total) & _MASK]


def fingerprint_numpy(x: np.ndarray) -> list[int] | None:
    """The fingerprint of a host array, or None for dtypes it does not cover (complex, str)."""
    x = np.asarray(x)
    if not covered(x.dtype):
        return None
    words = _words(x)
    return _finish(*_block_sums(words, [0] * words.ndim, _word_strides(x.shape, x.dtype.itemsize)))


def _on_this_host(x: jax.Array) -> bool:
    """Whether every shard of ``x`` lives on this process (then it is read from the host)."""
    return bool(x.is_fully_addressable)


def _fingerprint_addressable(x: jax.Array) -> list[int]:
    """Fingerprint of a fully addressable jax array from host copies of its distinct shards."""
    shards = [s for s in x.addressable_shards if s.replica_id == 0]
    for shard in shards:
        shard.data.copy_to_host_async()  # start every transfer before waiting on the first
    strides = _word_strides(x.shape, np.dtype(x.dtype).itemsize)
    total, weighted = 0, 0
    for shard in shards:
        block = np.asarray(shard.data)
        words = _words(block)
        starts = [sl.start or 0 for sl in shard.index] or [0]
        starts += [0] * (words.ndim - len(starts))  # the low/high word axis of 8-byte types
        t, w = _block_sums(words, starts, strides)
        total, weighted = total + t, weighted + w
    return _finish(total, weighted)


def _device_words(x: jax.Array) -> jax.Array:
    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    if x.dtype.itemsize == 8:
        u64 = jax.lax.bitcast_convert_type(x, jnp.uint64)
        lo = (u64 & jnp.uint64(_MASK)).astype(jnp.uint32)
        return jnp.stack([lo, (u64 >> jnp.uint64(32)).astype(jnp.uint32)], axis=-1)
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[x.dtype.itemsize]
    return jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32)


@jax.jit
def global_fingerprints(xs: tuple[jax.Array, ...]) -> jax.Array:
    """``[len(xs), 2]`` fingerprints of global arrays in one computation (multi-host path)."""
    out = []
    for x in xs:
        words = _device_words(x)
        # The C-order flat index from iotas rather than a reshape: reshaping a sharded array
        # would move data between devices.
        index = jnp.zeros(words.shape, jnp.uint32)
        stride = 1
        for axis in reversed(range(words.ndim)):
            iota = jax.lax.broadcasted_iota(jnp.uint32, words.shape, axis)
            index = index + iota * jnp.uint32(stride & _MASK)
            stride *= words.shape[axis]
        odd = index * jnp.uint32(2) + jnp.uint32(1)
        out.append(
            jnp.stack([jnp.sum(words, dtype=jnp.uint32), jnp.sum(words * odd, dtype=jnp.uint32)])
        )
    return jnp.stack(out) if out else jnp.zeros((0, 2), jnp.uint32)


def fingerprints(flat: Mapping[str, Any]) -> dict[str, list[int] | None]:
    """Fingerprints of stored arrays by path, computed in the calling thread.

    Parameters
    ----------
    flat:
        Stored arrays (jax or numpy) by path; typed PRNG keys must already be raw key data.

    Returns
    -------
    dict[str, list[int] | None]
        ``[sum, weighted sum]`` per path; None where the dtype is not covered.
    """
    out: dict[str, list[int] | None] = {}
    spanning: dict[str, jax.Array] = {}
    for path, x in flat.items():
        if not covered(x.dtype):
            out[path] = None
        elif isinstance(x, jax.Array) and _on_this_host(x):
            out[path] = _fingerprint_addressable(x)
        elif isinstance(x, jax.Array):
            spanning[path] = x
        else:
            out[path] = fingerprint_numpy(x)
    if spanning:
        values = np.asarray(jax.device_get(global_fingerprints(tuple(spanning.values()))))
        for path, value in zip(spanning, values, strict=True):
            out[path] = [int(v) for v in value]
    return {path: out[path] for path in flat}
