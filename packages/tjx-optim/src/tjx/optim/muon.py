"""Which parameters Muon optimizes, and how each is seen as a matrix.

modded-nanogpt's recipe: Muon for the hidden weight matrices, AdamW for embeddings, the output
head and every vector/scalar. tjx-nn's ``Dense`` kernels are ``in_shape + out_shape`` (a query
kernel is ``[embed, heads, head_dim]``, an output projection ``[heads, head_dim, embed]``) and
scanned layers add a leading ``layers`` axis, so "2-D" is too narrow a rule. Each hidden kernel
is instead viewed as a matrix ``prod(leading axes) x prod(trailing axes)``, split where the
matrix is most nearly square, with a stacked-layers axis as a batch axis that optax's Muon
orthogonalizes slice by slice (``MuonDimensionNumbers``).

Which leaves are hidden matrices, and which carry a stacked-layers axis, is read from their
logical axes when given (``axes.is_muon_matrix``, a leading ``layers`` axis); a leaf with no
names falls back to path rules (``DEFAULT_NO_DECAY_NAMES``, ``HEAD_NAMES``, ``STACK_NAMES``).
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
from optax import contrib

from tjx.optim.axes import is_muon_matrix, is_stacked, named_leaves
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
    """Number of leading axes that form the matrix rows: the most nearly square split."""

    def skew(k: int) -> float:
        rows, cols = math.prod(shape[:k]), math.prod(shape[k:])
        return abs(math.log(max(rows, 1)) - math.log(max(cols, 1)))

    return min(range(1, len(shape)), key=skew)


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
        ``PartitionSpec``s). A named leaf goes to Muon iff ``is_muon_matrix``; its stacked axis
        is a leading ``layers``. None, or a leaf without names: the path rules.
    stacked
        Whether hidden weights carry a leading stacked-layers axis (``scan_layers``). None: decide
        per leaf from its axes (a leading ``layers``), else from the path (a
        ``layers``/``blocks`` component not followed by an index).
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
        if stacked is None:
            stacked_here = is_stacked(names) if names is not None else _stacked(name)
        else:
            stacked_here = stacked
        lead = 1 if stacked_here else 0
        matrix = shape[lead:]
        if len(matrix) < 2:
            return None
        k = _split(matrix)
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
