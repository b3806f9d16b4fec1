"""Attention-distance histograms: how far back each layer's heads look.

How it is computed: the model runs one forward pass on a held-out batch (with the batch's segment
ids and positions) while ``tjx.kernels.attention`` is wrapped, so that every call also computes its
attention probabilities with ``tjx.kernels.attention_weights`` — the same q, k, scale, masks and
logit bias the call got, so ALiBi and T5 biases and packed-document masks are in them — and hands
them to the host through ``jax.debug.callback`` (this works for scanned and unrolled layers alike;
calls arrive in layer order). On the host, per head and query position ``i``, the mean distance
attended is ``sum_j p[i, j] · (i − j)``; padding queries (rows that see no key) are left out. One
histogram per layer of those means (all heads and queries) is drawn into one PNG.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
from etils import epath
from flax import nnx

from tjx import kernels
from tjx.core.lazy import lazy_imports

# Only a PNG needs matplotlib, and its backend is chosen (`plot`) before pyplot loads.
with lazy_imports(globals()):
    import matplotlib
    import matplotlib.pyplot as plt

#: The keyword arguments of ``tjx.kernels.attention`` that shape its probabilities, besides
#: its ``mask``'s causal, segment and key-length parts (`MASK_PARTS`).
WEIGHT_ARGS = ("scale", "bias")
MASK_PARTS = ("causal", "segment_ids", "kv_lengths")


def mean_distances(weights: np.ndarray) -> np.ndarray:
    """Mean attended distance ``sum_j p[i, j] · (i − j)`` of every (batch, head, query) whose row
    of ``weights`` ``[b, h, s_q, s_k]`` sees some key, flattened (float64)."""
    p = np.asarray(weights, np.float64)
    s_q, s_k = p.shape[-2:]
    dist = np.arange(s_q)[:, None] - np.arange(s_k)[None, :]
    means = (p * dist).sum(-1)
    return means[p.sum(-1) > 0]


@contextlib.contextmanager
def capture_weights() -> Iterator[list[np.ndarray]]:
    """Within the block, every ``tjx.kernels.attention`` call records its probabilities."""
    records: list[np.ndarray] = []
    original = kernels.attention

    def record(p: Any) -> None:
        records.append(np.asarray(p))

    def wrapped(q: Any, k: Any, v: Any, mask: Any = None, **kw: Any) -> Any:
        shaping = {name: kw[name] for name in WEIGHT_ARGS if kw.get(name) is not None}
        if mask is not None:
            shaping["mask"] = kernels.AttentionMask(**{n: getattr(mask, n) for n in MASK_PARTS})
        jax.debug.callback(record, kernels.attention_weights(q, k, **shaping), ordered=True)
        return original(q, k, v, mask=mask, **kw)

    kernels.attention = wrapped
    try:
        yield records
    finally:
        kernels.attention = original


def layer_distances(model: Any, batch: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Per layer: the mean attended distance of every head and real query, flattened."""
    graphdef, state = nnx.split(model)

    def forward(st: Any, x: jax.Array, seg: Any, pos: Any) -> jax.Array:
        return nnx.merge(graphdef, st)(x, positions=pos, segment_ids=seg, deterministic=True)

    seg, pos = batch.get("segment_ids"), batch.get("positions")
    with capture_weights() as records:
        # A fresh trace, so the wrapper is inside it.
        out = jax.jit(forward)(state, batch["inputs"], seg, pos)
        jax.block_until_ready(out)
        jax.effects_barrier()
    return [mean_distances(p) for p in records]


def plot(distances: list[np.ndarray], path: Path, title: str) -> Path:
    """One histogram per layer, in a grid, into ``path`` (PNG)."""
    matplotlib.use("Agg")
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
    if "://" in str(path):  # a run directory in object storage: the PNG is one object
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90)
        epath.Path(str(path)).write_bytes(buffer.getvalue())
    else:
        fig.savefig(path, dpi=90)  # its folder exists: the run dir, or checked by the CLI
    plt.close(fig)
    return path
