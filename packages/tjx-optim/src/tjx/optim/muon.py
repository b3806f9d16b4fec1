"""Which parameters Muon optimizes, and how each is seen as a matrix.

modded-nanogpt's recipe: Muon for the hidden weight matrices, AdamW for embeddings, the output
head and every vector/scalar. tjx-nn's ``Dense`` kernels are ``in_shape + out_shape`` (a query
kernel is ``[embed, heads, head_dim]``, an output projection ``[heads, head_dim, embed]``),
scanned layers add a leading ``layers`` axis and an MoE layer's experts a leading ``experts``
axis, so "2-D" is too narrow a rule. Each hidden kernel is instead viewed as the linear map it
is, ``prod(input axes) x prod(output axes)``, with the stack axes (``layers``, ``experts``) as
batch axes that optax's Muon orthogonalizes slice by slice (``MuonDimensionNumbers``).

Which leaves are hidden matrices, which axes stack them and which are inputs is read from their
logical axes when given (``axes.is_muon_matrix``, ``axes.stack_axes``, ``axes.input_axes``: MLA's
``[latent, kv_heads, head_dim]`` key is ``latent x (kv_heads·head_dim)``, whatever the sizes). A
leaf with no names falls back to path rules (``DEFAULT_NO_DECAY_NAMES``, ``HEAD_NAMES``,
``STACK_NAMES``) and to the split where the matrix is most nearly square.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
from optax import contrib

from tjx.optim.axes import LAYERS, is_muon_matrix, named_leaves, stack_axes
from tjx.optim.masks import DEFAULT_NO_DECAY_NAMES
from tjx.optim.paths import any_component, path_to_str

__all__ = ["HEAD_NAMES", "STACK_NAMES", "muon_dimension_numbers", "muon_mask"]

# The fallback for leaves without axis names. Output-head components: AdamW, like the
# embeddings (modded-nanogpt).
HEAD_NAMES = r"lm_head|head|unembed|unembedding|classifier"
# A component named like this with no integer index anywhere after it holds stacked layers.
STACK_NAMES = {"layers", "blocks", "h", "stack"}


def _stacked(path: str) -> bool:
    # tjx-nn names unscanned layers "stack/layers/0/..." and scanned ones "stack/layers/...":
    # an index *anywhere* below the container (not only right after it) means one layer per leaf,
    # else "stack" followed by "layers" would take a [embed, heads, head_dim] kernel's embed axis
    # for a layers axis.
    parts = path.split("/")
    for i, part in enumerate(parts[:-1]):
        if part.lower() in STACK_NAMES and not any(p.isdigit() for p in parts[i + 1 :]):
            return True
    return False


def _split(shape: tuple[int, ...]) -> int:
    """Number of leading axes that form the matrix rows, for a leaf without axis names: the most
    nearly square split (a named leaf splits at its input axes instead: ``_inputs``)."""

    def skew(k: int) -> float:
        rows, cols = math.prod(shape[:k]), math.prod(shape[k:])
        return abs(math.log(max(rows, 1)) - math.log(max(cols, 1)))

    return min(range(1, len(shape)), key=skew)


def _inputs(names: tuple[str | None, ...]) -> int:
    """Input axes of a matrix with these axis names (see ``axes.input_axes``; stack axes
    already removed): all but the last, or all but a trailing ``heads|kv_heads × head_dim``."""
    heads = {("heads", "head_dim"), ("kv_heads", "head_dim")}
    outputs = 2 if len(names) > 2 and names[-2:] in heads else 1
    return max(len(names) - outputs, 1)


def _lead(names: tuple[str | None, ...], stacked: bool | None) -> int:
    """Leading stack axes of a named leaf; ``stacked`` (when set) decides the ``layers`` one."""
    lead = stack_axes(names)
    if stacked is not None:
        lead += int(stacked) - int(names[:1] == (LAYERS,) and lead > 0)
    return lead


def _path_matrix(path: str) -> bool:
    return not (any_component(DEFAULT_NO_DECAY_NAMES, path) or any_component(HEAD_NAMES, path))


def muon_dimension_numbers(
    params: Any,
    *,
    axes: Any = None,
    stacked: bool | None = None,
    exclude_regex: str | None = None,
) -> Any:
    """A pytree like ``params``: ``MuonDimensionNumbers`` for Muon leaves, None for AdamW ones.

    Parameters
    ----------
    params
        Any pytree of arrays or ``ShapeDtypeStruct`` (only paths and shapes are read).
    axes
        The params' logical axis names (a pytree like ``params`` of name tuples or
        ``PartitionSpec``s). A named leaf goes to Muon iff ``is_muon_matrix``; its stack axes
        are a leading ``layers`` and/or ``experts``, its rows its input axes
        (``axes.input_axes``). None, or a leaf without names: the path rules.
    stacked
        Whether hidden weights carry a leading stacked-layers axis (``scan_layers``). None: decide
        per leaf from its axes (a leading ``layers``), else from the path (a
        ``layers``/``blocks`` component not followed by an index). An ``experts`` stack axis
        is read from the axes either way.
    exclude_regex
        Leaves whose path matches (``re.search``) go to AdamW, named or not.

    Returns
    -------
    Any
        The tree optax's ``contrib.muon(muon_weight_dimension_numbers=...)`` takes.
    """
    no_rx = re.compile(exclude_regex) if exclude_regex is not None else None
    named = named_leaves(params, axes)

    def leaf(path: tuple[Any, ...], x: Any) -> contrib.MuonDimensionNumbers | None:
        name = path_to_str(path)
        shape = tuple(getattr(x, "shape", ()))
        names = named.get(name)
        if not (is_muon_matrix(names) if names is not None else _path_matrix(name)):
            return None
        if no_rx is not None and no_rx.search(name):
            return None
        if names is not None:
            lead = _lead(names, stacked)
        else:
            lead = int(_stacked(name) if stacked is None else stacked)
        matrix = shape[lead:]
        if len(matrix) < 2:
            return None
        # A named leaf is split at its input axes; an unnamed one where it is most nearly square.
        by_names = names is not None and len(names) == len(shape)
        k = _inputs(names[lead:]) if by_names else _split(matrix)  # type: ignore[index]
        rows = tuple(range(lead, lead + k))
        cols = tuple(range(lead + k, len(shape)))
        return contrib.MuonDimensionNumbers(reduction_axis=rows, output_axis=cols)

    return jax.tree_util.tree_map_with_path(leaf, params)


def muon_mask(
    params: Any,
    *,
    axes: Any = None,
    stacked: bool | None = None,
    exclude_regex: str | None = None,
) -> Any:
    """A bool pytree like ``params``: True for the hidden matrices Muon optimizes.

    Takes ``muon_dimension_numbers``' arguments.
    """
    dims = muon_dimension_numbers(params, axes=axes, stacked=stacked, exclude_regex=exclude_regex)
    return jax.tree.map(
        lambda d: d is not None,
        dims,
        is_leaf=lambda d: d is None or isinstance(d, contrib.MuonDimensionNumbers),
    )
