"""tjx-optim reads tjx-nn's logical axes: the same weight decay and Muon matrices as the path rules.

tjx-optim may not import tjx-nn, so the names travel as data (``axes=``). For every model kind,
scanned and not, and the variants that add parameters (untied heads, T5 buckets, q/k/v biases,
MLA's latent, GQA, a classifier), the decisions made from the axes alone (the paths hidden
behind opaque keys) equal the path rules' leaf by leaf: runs train exactly as before.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from tjx import nn as tnn
from tjx.optim import decay_mask, muon_dimension_numbers

_DECODER_VARIANTS: list[dict[str, Any]] = [
    {},
    {"tie_embeddings": False},
    {"tie_embeddings": True},
    {"position": tnn.PositionConfig(kind="t5")},
    {"use_bias": True, "attention": tnn.AttentionConfig(qkv_bias=True)},
    {"attention": tnn.AttentionConfig(type="mla"), "mla": tnn.MLAConfig(kv_latent_dim=8)},
    {"num_kv_heads": 1},
    # MoE: routed experts after a dense layer, shared experts with a gate, a balancing bias.
    {
        "moe": tnn.MoEConfig(
            num_experts=4,
            first_dense=1,
            num_shared_experts=1,
            shared_expert_gate=True,
            router="sigmoid",
        )
    },
]
VARIANTS = {"gpt2": _DECODER_VARIANTS, "llama": _DECODER_VARIANTS, "bert": [{}, {"num_labels": 3}]}


def _configs() -> list[tuple[str, Any]]:
    out = []
    for kind in sorted(tnn.MODEL_KINDS):
        base = {"d_model": 16, "num_layers": 2, "num_heads": 2}
        if kind == "vit":
            base |= {"image_size": 8, "patch_size": 4}
        else:
            base |= {"vocab_size": 40, "max_seq_len": 8}
        for scan in (False, True):
            for extra in VARIANTS.get(kind, [{}]):
                config = tnn.MODEL_KINDS[kind](**base, **extra, scan_layers=scan)
                out.append((f"{kind}-scan={scan}-{extra}", config))
    return out


def _view(dims: Any, shape: tuple[int, ...]) -> Any:
    """What Muon orthogonalizes: (stack axes, rows, cols) sizes (equal views, equal updates)."""
    if dims is None:
        return None
    rows = math.prod(shape[a] for a in dims.reduction_axis)
    cols = math.prod(shape[a] for a in dims.output_axis)
    stack = [
        shape[a] for a in range(len(shape)) if a not in (*dims.reduction_axis, *dims.output_axis)
    ]
    return stack, rows, cols


def _stacks_unseen(path: Any, names: Any) -> bool:
    keys = [str(getattr(k, "key", k)) for k in path]
    return "experts" in names or "segments" in keys


def _is_dims(x: Any) -> bool:
    return x is None or hasattr(x, "reduction_axis")


@pytest.mark.parametrize(
    ("label", "config"), _configs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_the_axes_choose_what_the_paths_chose_for_every_model(label: str, config: Any) -> None:
    model = nnx.eval_shape(lambda: tnn.build_model(config, rngs=nnx.Rngs(0)))
    state = nnx.state(model, nnx.Param)
    params = nnx.to_pure_dict(state)
    specs = nnx.to_pure_dict(nnx.get_partition_spec(state))
    flat, _ = jax.tree_util.tree_flatten_with_path(params)
    names = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert len(names) == len(flat)
    # Keys that say nothing: only the axes can decide (a leaf with no names at all would fall
    # back to the path rule and, as "p7", decay whenever it has two axes).
    opaque = {f"p{i}": x for i, (_, x) in enumerate(flat)}
    opaque_axes = {f"p{i}": spec for i, spec in enumerate(names)}
    by_path = jax.tree.leaves(decay_mask(params))
    by_axes = [decay_mask(opaque, axes=opaque_axes)[f"p{i}"] for i in range(len(flat))]
    assert sum(by_path) > 0
    mismatch = [
        (p, n) for (p, _), n, a, b in zip(flat, names, by_path, by_axes, strict=False) if a != b
    ]
    assert not mismatch, (label, "decay", mismatch)
    dims_path = jax.tree.leaves(muon_dimension_numbers(params), is_leaf=_is_dims)
    dims_axes = muon_dimension_numbers(opaque, axes=opaque_axes)
    assert any(d is not None for d in dims_path)
    mismatch = [
        (p, n, a, dims_axes[f"p{i}"])
        for i, ((p, x), n, a) in enumerate(zip(flat, names, dims_path, strict=False))
        if _view(a, x.shape) != _view(dims_axes[f"p{i}"], x.shape) and not _stacks_unseen(p, n)
    ]
    assert not mismatch, (label, "muon", mismatch)
    # What the path rule cannot see (an expert stack; the layer axis of a mixed dense/MoE stack's
    # segments, "segments/<s>/blocks/<j>"): the axes make each slice one matrix, inputs as rows.
    for i, ((p, _), n) in enumerate(zip(flat, names, strict=False)):
        if _stacks_unseen(p, n) and dims_axes[f"p{i}"] is not None:
            stack = sum(1 for a in n[:2] if a in ("layers", "experts"))
            assert min(dims_axes[f"p{i}"].reduction_axis) == stack, (label, p, n)
    # The trainer passes the specs as they are: the params' own paths, the same answer.
    assert jax.tree.leaves(decay_mask(params, axes=specs)) == by_path
