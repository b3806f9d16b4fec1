"""Weight histograms: a params pytree to host arrays, and the binned summary the JSONL log keeps.

:func:`weights_to_host` fetches every selected parameter in one ``jax.device_get`` and names it by
its path (``blocks/0/attn/q/kernel``); :func:`histogram_summary` bins one array with
``numpy.histogram`` on the host. Fetching a whole model is a full device→host copy of the
parameters, so log histograms every few hundred steps, not every step.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

__all__ = ["HISTOGRAM_BINS", "histogram_summary", "path_name", "weights_to_host"]

#: Bins of each histogram in the JSONL log (fixed, so records compare across steps and runs).
HISTOGRAM_BINS = 64


def path_name(path: Sequence[Any], sep: str = "/") -> str:
    """A readable name for a pytree key path: ``("blocks", 0, "attn")`` → ``blocks/0/attn``.

    Parameters
    ----------
    path
        A key path from ``jax.tree_util.tree_flatten_with_path`` (dict keys, attributes, indices).
    sep
        What joins the parts.

    Returns
    -------
    str
        The parts (dict key, attribute name or sequence index) joined by ``sep``.
    """
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
        else:
            parts.append(str(entry))
    return sep.join(parts)


def weights_to_host(
    tree: Any, patterns: Sequence[str] | str | None = None, *, sep: str = "/"
) -> dict[str, np.ndarray]:
    """Every array of a params pytree as a host numpy array, keyed by its path, for histograms.

    Parameters
    ----------
    tree
        A params pytree (a pure dict from ``nnx.to_pure_dict``, an ``nnx.State``, …). Leaves
        without a shape (strings, Python numbers) are left out.
    patterns
        Optional regexes; a leaf is kept when any of them matches (``re.search``) its path.
        ``None`` keeps every array.
    sep
        Joins the path parts: ``"/"`` gives ``blocks/0/attn/q/kernel``.

    Returns
    -------
    dict[str, numpy.ndarray]
        ``{path: array}`` in the pytree's flattening order, dtype and shape kept.

    Notes
    -----
    Arrays whose shards all live on this process come over in **one** ``jax.device_get``. An array
    spanning several processes (a multi-host run) cannot be read on one host: it is all-gathered,
    as ``tjx.ckpt.params_sha256`` does — a collective, so **every** process must call this
    with the same tree, even though only the primary logger writes.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> sorted(weights_to_host({"blocks": [{"kernel": jnp.ones(2)}], "name": "gpt"}))
    ['blocks/0/kernel']
    """
    if patterns is None:
        compiled = None
    else:
        compiled = [re.compile(p) for p in ([patterns] if isinstance(patterns, str) else patterns)]
    local: dict[str, Any] = {}
    spanning: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        name = path_name(path, sep)
        if not hasattr(leaf, "shape") or (
            compiled is not None and not any(p.search(name) for p in compiled)
        ):
            continue
        if name in local or name in spanning:
            raise ValueError(f"two leaves share the name {name!r}; pass another sep")
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            spanning[name] = leaf
        else:
            local[name] = leaf
    host = {k: np.asarray(v) for k, v in jax.device_get(local).items()}
    if spanning:
        from jax.experimental import multihost_utils

        # Same names in the same order on every process: the all-gathers pair up.
        for name, leaf in spanning.items():
            host[name] = np.asarray(multihost_utils.process_allgather(leaf, tiled=True))
    return {name: host[name] for name in [*local, *spanning]}


def histogram_summary(values: np.ndarray, bins: int = HISTOGRAM_BINS) -> dict[str, Any]:
    """Count, non-finite count, mean, std, min, max and a fixed-count histogram of ``values``.

    Parameters
    ----------
    values
        Any numeric array (flattened); NaN and ±inf are counted but not binned.
    bins
        Number of equal-width bins between the finite minimum and maximum (``numpy.histogram``).

    Returns
    -------
    dict
        JSON-ready: ``count``, ``nonfinite``, ``mean``, ``std``, ``min``, ``max`` (``None`` when
        nothing is finite), ``bin_edges`` (``bins + 1`` floats) and ``counts`` (``bins`` ints;
        both empty when nothing is finite).
    """
    if bins < 1:
        raise ValueError(f"bins must be >= 1; got {bins}")
    flat = np.asarray(values).reshape(-1)
    # float64 statistics: a float32 mean over millions of weights loses digits.
    good = flat[np.isfinite(flat)].astype(np.float64)
    if good.size:
        counts, edges = np.histogram(good, bins=bins)
    else:
        counts, edges = np.zeros(0, np.int64), np.zeros(0)
    return {
        "count": int(flat.size),
        "nonfinite": int(flat.size - good.size),
        "mean": float(good.mean()) if good.size else None,
        "std": float(good.std()) if good.size else None,
        "min": float(good.min()) if good.size else None,
        "max": float(good.max()) if good.size else None,
        "bin_edges": edges.tolist(),
        "counts": counts.tolist(),
    }
