"""What a parameter is, read from its logical axis names: a weight, a Muon matrix, a stack of them.

Models that name their parameters' axes (tjx-nn: ``embed``, ``mlp``, ``heads``, ``vocab``,
``layers``, ...) say what each parameter is, so the default weight-decay mask and Muon's
selection read the names instead of guessing from paths. tjx-optim may not import tjx-nn or
tjx-parallel (the package DAG), so the names arrive as data: a pytree like the params whose
leaves are tuples of names, or ``PartitionSpec``s as ``nnx.get_partition_spec`` gives them.
A leaf with no names (absent, or all ``None``) falls back to the path rules in ``masks.py``.
"""

from __future__ import annotations

from typing import Any

import jax
from jax.sharding import PartitionSpec

from tjx.optim.paths import path_to_str

__all__ = [
    "EXPERTS",
    "LAYERS",
    "LOOKUP_ROWS",
    "READOUTS",
    "input_axes",
    "is_muon_matrix",
    "is_stacked",
    "is_weight",
    "named_leaves",
    "names_by_path",
    "stack_axes",
]

Names = tuple[str | None, ...]

#: A leading axis of this name stacks one parameter per layer (scanned layers).
LAYERS = "layers"
#: A leading axis (after any ``layers``) of this name stacks one matrix per routed expert of an
#: MoE layer: ``[experts, in, out]`` is a stack of ``in × out`` matrices, like ``layers``.
EXPERTS = "experts"
#: Output axes of a readout (LM head, classifier): AdamW's, not Muon's.
READOUTS = frozenset({"vocab", "classes"})
#: Row axes of a lookup table: a token index, or an index the model leaves unnamed (positions,
#: token types, relative-position buckets, a patch's pixels).
LOOKUP_ROWS = frozenset({"vocab", None})
# The axes of a bias of an attention projection: one width, split into heads.
_HEAD_WIDTHS = frozenset({("heads", "head_dim"), ("kv_heads", "head_dim")})


def _is_names(x: Any) -> bool:
    return isinstance(x, PartitionSpec | tuple) and all(n is None or isinstance(n, str) for n in x)


def names_by_path(axes: Any) -> dict[str, Names]:
    """``{"stack/layers/0/mlp/fc_in/kernel": ("embed", "mlp"), ...}`` from a tree of names.

    Parameters
    ----------
    axes
        A pytree like the params (a dict, or an NNX ``State`` of specs) whose leaves are tuples of
        logical names or ``PartitionSpec``s. Paths are spelled as ``path_to_str`` spells them, so
        the params and their names meet whatever wrappers either tree has.

    Returns
    -------
    dict
        Only the annotated leaves: those with at least one name.
    """
    flat = jax.tree_util.tree_leaves_with_path(axes, is_leaf=_is_names)
    table = {path_to_str(p): tuple(n) for p, n in flat if _is_names(n)}
    return {path: names for path, names in table.items() if any(n is not None for n in names)}


def named_leaves(params: Any, axes: Any) -> dict[str, Names]:
    """`names_by_path` of ``axes`` ({} for None), once every leaf of ``params`` has an entry.

    An entry may say "no names" (all ``None``: that leaf takes the path rules), but a parameter
    with no entry at all means ``axes`` is not the params' tree (another model's, or a sub-tree):
    deciding it by path would be a silent fallback, so it is an error.

    Raises
    ------
    ValueError
        Names the first parameter paths missing from ``axes``.
    """
    if axes is None:
        return {}
    listed = {
        path_to_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(axes, is_leaf=_is_names)
    }
    missing = [
        name
        for name in (path_to_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(params))
        if name not in listed
    ]
    if missing:
        shown = ", ".join(missing[:3]) + (
            f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
        )
        raise ValueError(
            f"axes: no entry for parameter(s) {shown}; pass the logical axes of these very params "
            "(e.g. nnx.get_partition_spec of them), or axes=None for the path rules"
        )
    return names_by_path(axes)


def stack_axes(names: Names) -> int:
    """How many leading axes stack matrices: a ``layers`` axis, then an ``experts`` axis (each
    optional), when the parameter has axes beyond them."""
    n = 0
    for stack in (LAYERS, EXPERTS):
        if names[n : n + 1] == (stack,) and len(names) > n + 1:
            n += 1
    return n


def _body(names: Names) -> Names:
    # A stacked parameter is one layer's (one expert's) parameter with leading stack axes.
    return names[stack_axes(names) :]


def input_axes(names: Names) -> int:
    """How many axes of a weight's body (after its stack axes) are its inputs.

    tjx-nn's kernels are ``in_shape + out_shape``; the outputs are the last axis, or the last
    two when they are a head split (``heads|kv_heads × head_dim``: a query, key or value
    projection). So ``[embed, heads, head_dim]`` is ``embed × (heads·head_dim)``, ``[heads,
    head_dim, embed]`` is ``(heads·head_dim) × embed``, and MLA's ``[None, kv_heads, head_dim]``
    key is ``latent × (kv_heads·head_dim)``, whatever the sizes.
    """
    body = _body(names)
    outputs = 2 if len(body) > 2 and body[-2:] in _HEAD_WIDTHS else 1
    return max(len(body) - outputs, 1)


def is_weight(names: Names) -> bool:
    """Whether a parameter with these axes decays by default: a weight matrix.

    Not a weight: a vector (bias, norm scale; with one axis beyond ``layers``), an attention
    projection's bias (``heads|kv_heads × head_dim``), or an embedding table (``vocab|None ×
    embed``: tokens, positions, token types, the patch projection of raw pixels). Everything else
    with two or more axes decays, the output head (``embed × vocab``) included.
    """
    body = _body(names)
    if len(body) < 2 or body in _HEAD_WIDTHS:
        return False
    return not (len(body) == 2 and body[0] in LOOKUP_ROWS and body[1] == "embed")


def is_muon_matrix(names: Names) -> bool:
    """Whether Muon orthogonalizes a parameter with these axes (else AdamW takes it).

    A weight (``is_weight``) that is neither a readout (a ``vocab`` or ``classes`` axis: the
    LM head, a classifier) nor a two-axis lookup table (rows ``vocab`` or unnamed, such as T5's
    relative-position buckets × heads): the hidden matrices, modded-nanogpt's recipe.
    """
    body = _body(names)
    if not is_weight(names) or READOUTS.intersection(body):
        return False
    return not (len(body) == 2 and body[0] in LOOKUP_ROWS)


def is_stacked(names: Names) -> bool:
    """Whether the leading axis stacks layers (Muon orthogonalizes each slice on its own)."""
    return names[:1] == (LAYERS,)


def is_expert_stack(names: Names) -> bool:
    """Whether the parameter stacks one matrix per routed expert (an ``experts`` stack axis)."""
    return EXPERTS in names[: stack_axes(names)]
