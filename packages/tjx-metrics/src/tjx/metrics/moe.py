"""Mixture-of-experts router metrics from the router's summed statistics.

A model with MoE layers returns, per step, one row per MoE layer of sums (tjx-nn's ``MoEStats``;
this package knows no model, so any mapping or NamedTuple with these fields will do):

=====================  ===========  =========================================================
field                  shape        what is summed
=====================  ===========  =========================================================
``expert_tokens``      ``[L, E]``   assignments (token, choice) each expert was chosen for
``dropped_tokens``     ``[L]``      assignments the capacity path dropped
``tokens``             ``[L]``      tokens routed
``balance_loss_sum``   ``[L]``      the load-balancing loss × the tokens it was measured on
``z_loss_sum``         ``[L]``      ``Σ_t logsumexp(router logits_t)²``
``index_loss_sum``     ``[L]``      optional: a sparse attention's indexer KL over its queries
``index_queries``      ``[L]``      optional: the queries ``index_loss_sum`` covers
=====================  ===========  =========================================================

Sums add up over micro-batches, steps and devices, so :func:`moe_metrics` of the sums of a
logging interval gives its exact token-weighted means:

- ``moe_balance_loss``, ``moe_z_loss``: the mean over MoE layers of each layer's token-weighted
  mean (the balance loss is 1 for a perfectly balanced router, ``E`` if every token picks the
  same ``k`` experts with probability 1);
- ``index_loss`` (with the optional fields): the mean over layers of each layer's mean
  indexer KL per query (DeepSeek Sparse Attention's ``mla.index_loss_weight``);
- ``moe_dropped_fraction``: dropped assignments over all assignments (0 when dropless);
- ``moe_load_max``, ``moe_load_min``: the largest and smallest expert load of any layer, as a
  multiple of the fair share ``1/E`` (1.0 both when balanced);
- with ``per_layer=True`` also ``moe_load_max/<layer>`` and every expert's load fraction
  ``moe_load/<layer>/<expert>`` (:func:`expert_load` gives the ``[L, E]`` array itself).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["MOE_FIELDS", "expert_load", "moe_metrics"]

#: The summed fields :func:`moe_metrics` reads.
MOE_FIELDS = ("expert_tokens", "dropped_tokens", "tokens", "balance_loss_sum", "z_loss_sum")
#: The optional summed fields (None or absent: not logged): a sparse attention's indexer loss.
INDEX_FIELDS = ("index_loss_sum", "index_queries")


def _fields(sums: Any) -> dict[str, np.ndarray]:
    """The fields as float64 host arrays (a NamedTuple's ``_asdict`` or a mapping)."""
    data = sums._asdict() if hasattr(sums, "_asdict") else sums
    if not isinstance(data, Mapping):
        raise ValueError(f"MoE sums must be a mapping or NamedTuple with {MOE_FIELDS}")
    missing = [f for f in MOE_FIELDS if f not in data]
    if missing:
        raise ValueError(f"MoE sums lack {', '.join(missing)} (need {', '.join(MOE_FIELDS)})")
    present = [f for f in INDEX_FIELDS if data.get(f) is not None]
    out = {f: np.asarray(data[f], np.float64) for f in (*MOE_FIELDS, *present)}
    if out["expert_tokens"].ndim == 1:  # one layer's row
        out = {f: v[None] for f, v in out.items()}
    return out


def expert_load(sums: Any) -> np.ndarray:
    """``[L, E]``: each MoE layer's share of its assignments per expert (rows sum to 1; a layer
    without assignments is all zeros)."""
    counts = _fields(sums)["expert_tokens"]
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts), where=total > 0)


def moe_metrics(
    sums: Any, *, per_layer: bool = False, layers: Sequence[int] | None = None
) -> dict[str, float]:
    """The logged router metrics of summed MoE statistics (see the module's table).

    Parameters
    ----------
    sums
        A mapping or NamedTuple with :data:`MOE_FIELDS`, rows = MoE layers.
    per_layer
        Also every layer's largest load and every expert's load fraction.
    layers
        The model layer index of each row (tjx-nn's ``moe_layers``), for the per-layer names;
        default ``0..L-1`` (the MoE layers counted alone).

    Returns
    -------
    dict of str to float
    """
    f = _fields(sums)
    tokens = np.maximum(f["tokens"], 1.0)
    load = expert_load(f)
    share = load * load.shape[-1]  # 1.0 = the fair share
    assignments = float(f["expert_tokens"].sum())
    out = {
        "moe_balance_loss": float(np.mean(f["balance_loss_sum"] / tokens)),
        "moe_z_loss": float(np.mean(f["z_loss_sum"] / tokens)),
        "moe_dropped_fraction": (
            float(f["dropped_tokens"].sum() / assignments) if assignments else 0.0
        ),
        "moe_load_max": float(share.max()),
        "moe_load_min": float(share.min()),
    }
    if all(name in f for name in INDEX_FIELDS):
        queries = np.maximum(f["index_queries"], 1.0)
        out["index_loss"] = float(np.mean(f["index_loss_sum"] / queries))
    if per_layer:
        names = list(range(load.shape[0])) if layers is None else list(layers)
        if len(names) != load.shape[0]:
            raise ValueError(f"layers names {len(names)} rows; the sums have {load.shape[0]}")
        for name, row, row_share in zip(names, load, share, strict=True):
            out[f"moe_load_max/{name}"] = float(row_share.max())
            for e, value in enumerate(row):
                out[f"moe_load/{name}/{e}"] = float(value)
    return out
