"""Parameter paths as strings, for the rules that match names (regex overrides, fallbacks).

Works on any pytree (dicts, lists, Flax NNX ``State``) through ``jax.tree_util``'s key paths:
each leaf's path becomes a string such as ``"blocks/0/attn/qkv/kernel"``; wrapper attributes that
Flax adds (``.value``) are dropped so the last component is the parameter's own name.
"""

from __future__ import annotations

import re
from typing import Any

from jax.tree_util import DictKey, FlattenedIndexKey, GetAttrKey, SequenceKey

__all__ = ["any_component", "path_to_str"]

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
