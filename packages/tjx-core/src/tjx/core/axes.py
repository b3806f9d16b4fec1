"""The logical axis names: what tjx-nn's models put on their parameters and activations, and what
tjx-parallel's rules map to mesh axes. One tuple, here, so the two packages cannot disagree (the
DAG keeps tjx-parallel from importing tjx-nn; both import this)."""

from __future__ import annotations

__all__ = ["LOGICAL_AXES"]

#: Every logical axis name a tjx model may use, in a fixed order (a rules table lists them so).
LOGICAL_AXES: tuple[str, ...] = (
    "batch",
    "length",
    "embed",
    "mlp",
    "heads",
    "kv_heads",
    "head_dim",
    "vocab",
    "layers",
    "norm",
    # A classifier's labels (ViT head, BERT classifier): named so that an optimizer reading
    # the axes tells a readout from a hidden matrix; every strategy replicates it.
    "classes",
    # An MoE layer's routed experts: the leading axis of the stacked expert weights (a stack of
    # matrices, like `layers`); tjx-parallel maps it to the `expert` mesh axis.
    "experts",
    # A LoRA adapter's rank (A is [in, lora_rank], B [lora_rank, out]): named so that B of an
    # output projection ([lora_rank, embed]) never reads as an embedding table; replicated.
    "lora_rank",
)
