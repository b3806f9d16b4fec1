"""The weight-decay mask: by each parameter's logical axes, else by its path and shape.

Default rule, leaf by leaf: a parameter whose axes are named (``axes=`` given, e.g. tjx-nn's
annotations) decays iff ``axes.is_weight`` says it is a weight matrix. A parameter with no names
(a plain pytree, or ``axes`` left out) falls back to the path rule: ``ndim >= 2`` and no path
component naming a bias, norm scale, embedding or position table (``DEFAULT_NO_DECAY_NAMES``).
For tjx-nn's models the two rules agree leaf by leaf (tests-integration checks every kind).
"""

from __future__ import annotations

import re
from typing import Any

import jax

from tjx.optim.axes import is_weight, named_leaves
from tjx.optim.paths import any_component, path_to_str

__all__ = ["DEFAULT_NO_DECAY_NAMES", "decay_mask"]

# A path component (whole name, case-insensitive) that marks a parameter as "no weight decay".
DEFAULT_NO_DECAY_NAMES = (
    r"bias|biases|b|scale|gamma|beta|g|embedding|embeddings"
    r"|.*norm.*|ln|ln_\d+|ln_f|layernorm.*|rmsnorm.*"
    r"|.*embed.*|wte|wpe|pos|pos_.*|.*position.*"
)


def _path_decays(path: str, ndim: int) -> bool:
    # Vectors and scalars (biases, norm scales, learned scalars) never decay; stacked layers
    # (scan) make biases 2-D, so the name rule below catches those.
    if ndim < 2:
        return False
    return not any_component(DEFAULT_NO_DECAY_NAMES, path)


def decay_mask(
    params: Any,
    *,
    axes: Any = None,
    decay_regex: str | None = None,
    no_decay_regex: str | None = None,
) -> Any:
    """A bool pytree like ``params``: True where weight decay applies.

    Parameters
    ----------
    params
        Any pytree of arrays (or ``ShapeDtypeStruct``; only paths and shapes are read).
    axes
        The params' logical axis names: a pytree like ``params`` whose leaves are name tuples or
        ``PartitionSpec``s (``nnx.get_partition_spec`` of the params). None: every leaf falls
        back to the path rule.
    decay_regex
        If given, replaces the default rule for every leaf, named or not: a leaf decays iff
        ``re.search(decay_regex, path)``.
    no_decay_regex
        If given, leaves whose path matches (``re.search``) never decay (applied last).

    Returns
    -------
    Any
        Same structure as ``params`` with Python bools as leaves.
    """
    decay_rx = re.compile(decay_regex) if decay_regex is not None else None
    no_rx = re.compile(no_decay_regex) if no_decay_regex is not None else None
    named = named_leaves(params, axes)

    def leaf(path: tuple[Any, ...], x: Any) -> bool:
        name = path_to_str(path)
        if decay_rx is not None:
            decays = decay_rx.search(name) is not None
        elif name in named:
            decays = is_weight(named[name])
        else:
            decays = _path_decays(name, len(getattr(x, "shape", ())))
        if no_rx is not None and no_rx.search(name):
            decays = False
        return decays

    return jax.tree_util.tree_map_with_path(leaf, params)
