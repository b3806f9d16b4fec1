"""Attention-distance histograms: how far back each layer's heads look.

How it is computed (kept simple on purpose): the model runs one forward pass on a held-out batch
while ``tjx.kernels.attention`` is wrapped so that every call hands its ``q`` and ``k`` (after RoPE,
as the kernel sees them) to the host through ``jax.debug.callback`` — this works for scanned and
unrolled layers alike, calls arrive in layer order. On the host a float64 reference computes the
causal softmax ``p[i, j] = softmax_j(q_i·k_j / sqrt(d))`` (segment/padding masks ignored: packed
documents count as one stream) and, per head and query position ``i``, the mean distance attended
``sum_j p[i, j] · (i − j)``. One histogram per layer of those means (all heads and queries) is
drawn into one PNG.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np


def mean_distances(q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mean attended distance for every (batch, head, query): float64 causal reference.

    q [b, s, h, d], k [b, s, h_kv, d] (grouped heads share a key head) → [b, h, s].
    """
    q64, k64 = np.asarray(q, np.float64), np.asarray(k, np.float64)
    h, hk = q64.shape[2], k64.shape[2]
    k64 = np.repeat(k64, h // hk, axis=2)
    scores = np.einsum("bqhd,bkhd->bhqk", q64, k64) / math.sqrt(q64.shape[-1])
    s = scores.shape[-1]
    causal = np.tril(np.ones((s, s), bool))
    scores = np.where(causal, scores, -np.inf)
    scores -= scores.max(-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(-1, keepdims=True)
    dist = np.arange(s)[:, None] - np.arange(s)[None, :]
    return (p * np.where(causal, dist, 0)).sum(-1)


@contextlib.contextmanager
def capture_qk() -> Iterator[list[tuple[np.ndarray, np.ndarray]]]:
    """Within the block, every ``tjx.kernels.attention`` call records (q, k) on the host."""
    from tjx import kernels

    records: list[tuple[np.ndarray, np.ndarray]] = []
    original = kernels.attention

    def record(q: Any, k: Any) -> None:
        records.append((np.asarray(q), np.asarray(k)))

    def wrapped(q: Any, k: Any, v: Any, **kw: Any) -> Any:
        jax.debug.callback(record, q, k, ordered=True)
        return original(q, k, v, **kw)

    kernels.attention = wrapped
    try:
        yield records
    finally:
        kernels.attention = original


def layer_distances(model: Any, tokens: np.ndarray) -> list[np.ndarray]:
    """Per layer: the mean attended distance of every head and query, flattened."""
    from flax import nnx

    graphdef, state = nnx.split(model)

    def forward(st: Any, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, st)(x, deterministic=True)

    with capture_qk() as records:
        out = jax.jit(forward)(state, tokens)  # a fresh trace, so the wrapper is inside it
        jax.block_until_ready(out)
        jax.effects_barrier()
    return [mean_distances(q, k).reshape(-1) for q, k in records]


def plot(distances: list[np.ndarray], path: Path, title: str) -> Path:
    """One histogram per layer, in a grid, into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(distances)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    top = max(float(d.max()) for d in distances) if distances else 1.0
    bins = np.linspace(0.0, max(top, 1.0), 30)
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.hist(distances[i], bins=bins, color="tab:blue")
        ax.set_title(f"layer {i}: mean {distances[i].mean():.1f}", fontsize=9)
        ax.set_xlabel("mean distance attended (tokens)", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)  # its folder exists: the run dir, or checked by the command line
    plt.close(fig)
    return path
