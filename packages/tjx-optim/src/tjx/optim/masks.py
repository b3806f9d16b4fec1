"""Weight-decay and Muon masks decided from parameter paths and shapes.

Works on any pytree (dicts, lists, Flax NNX ``State``) through ``jax.tree_util.tree_map_with_path``:
each leaf's path becomes a string such as ``"blocks/0/attn/qkv/kernel"``; wrapper attributes that
Flax adds (``.value``) are dropped so the last component is the parameter's own name.
"""

from __future__ import annotations

import re
from typing import Any

import jax
from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

__all__ = [
    "DEFAULT_NO_DECAY_NAMES",
    "any_component",
    "decay_mask",
    "path_to_str",
]

# A path component (whole name, case-insensitive) that marks a parameter as "no weight decay".
DEFAULT_NO_DECAY_NAMES = (
    r"bias|biases|b|scale|gamma|beta|g|embedding|embeddings"
    r"|.*norm.*|ln|ln_\d+|ln_f|layernorm.*|rmsnorm.*"
    r"|.*embed.*|wte|wpe|pos|pos_.*|.*position.*"
)

_WRAPPER_NAMES = {"value", "raw_value"}


def _key_str(key: Any) -> str:
    if isinstance(key, DictKey):
        return str(key.key)
    if isinstance(key, SequenceKey):
        return str(key.idx)
    if isinstance(key, GetAttrKey):
        return key.name
    if isinstance(key, FlattenedIndexKey):
        return str(key.key)
    return str(key)


def path_to_str(path: tuple[Any, ...]) -> str:
    """``('blocks', 0, 'attn', 'qkv', 'kernel')`` key path → ``"blocks/0/attn/qkv/kernel"``.

    Trailing wrapper attributes (``value``, ``raw_value`` of Flax variables) are dropped.
    """
    parts = [_key_str(k) for k in path]
    while len(parts) > 1 and parts[-1] in _WRAPPER_NAMES:
        parts.pop()
    return "/".join(parts)


def any_component(pattern: str, path: str) -> bool:
    """Whether any ``/``-separated component of ``path`` fully matches ``pattern`` (no case)."""
    rx = re.compile(rf"(?:{pattern})", re.IGNORECASE)
    return any(rx.fullmatch(part) for part in path.split("/"))


def _default_decays(path: str, ndim: int) -> bool:
    # Vectors and scalars (biases, norm scales, learned scalars) never decay; stacked layers
    # (scan) make biases 2-D, so the name rule below catches those.
    if ndim < 2:
        return False
    return not any_component(DEFAULT_NO_DECAY_NAMES, path)


def decay_mask(
    params: Any, *, decay_regex: str | None = None, no_decay_regex: str | None = None
) -> Any:
    """A bool pytree like ``params``: True where weight decay applies.

    Parameters
    ----------
    params
        Any pytree of arrays (or ``ShapeDtypeStruct``; only paths and shapes are read).
    decay_regex
        If given, replaces the default rule: a leaf decays iff ``re.search(decay_regex, path)``.
    no_decay_regex
        If given, leaves whose path matches (``re.search``) never decay (applied last).

    Returns
    -------
    Any
        Same structure as ``params`` with Python bools as leaves.

    Notes
    -----
    Default: decay only leaves with ``ndim >= 2`` none of whose path components names a bias,
    norm scale, embedding or position table (``DEFAULT_NO_DECAY_NAMES``).
    """
    decay_rx = re.compile(decay_regex) if decay_regex is not None else None
    no_rx = re.compile(no_decay_regex) if no_decay_regex is not None else None

    def leaf(path: tuple[Any, ...], x: Any) -> bool:
        name = path_to_str(path)
        if decay_rx is not None:
            decays = decay_rx.search(name) is not None
        else:
            decays = _default_decays(name, len(getattr(x, "shape", ())))
        if no_rx is not None and no_rx.search(name):
            decays = False
        return decays

    return jax.tree_util.tree_map_with_path(leaf, params)
