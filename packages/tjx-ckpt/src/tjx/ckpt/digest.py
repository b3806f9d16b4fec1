"""One sha256 over a parameter tree: bit-exactness checks between runs (a resume against an
uninterrupted run, two hosts, two machines).

Unlike the per-leaf fingerprints stored with each step (``tjx/ckpt/fingerprint.py``: cheap sums
that detect corruption), this is a cryptographic hash of every parameter's bytes and path, in a
fixed order, so equal digests mean equal parameters bit for bit.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

__all__ = ["params_sha256"]


def _host_value(leaf: Any) -> np.ndarray:
    if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:  # pragma: no cover
        # Spans several processes (multi-host only): no host holds it whole, so it is gathered.
        return np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return np.asarray(jax.device_get(leaf))


def params_sha256(params: Any) -> str:
    """sha256 (hex) over every leaf's path and bytes, leaves ordered by their path.

    Parameters
    ----------
    params : pytree
        Arrays (jax or numpy, any sharding) and scalars.

    Returns
    -------
    str
        64 hex digits; the same for the same values under any sharding or container order.

    Notes
    -----
    In a multi-host run a leaf sharded over several processes is all-gathered, a collective:
    every process must call this (in the same order), and all get the same digest.
    """
    digest = hashlib.sha256()
    leaves = jax.tree_util.tree_leaves_with_path(params)
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(_host_value(leaf)).tobytes())
    return digest.hexdigest()
