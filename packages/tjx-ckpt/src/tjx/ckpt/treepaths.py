"""Pytree ⇄ flat ``{path: leaf}`` mapping with readable, stable path names.

A checkpoint stores a train state as a flat mapping from slash-separated paths
(``params/blocks/0/attn/kernel``) to arrays. Paths come from ``jax.tree_util`` key paths:
dict keys and attribute names as they are, sequence indices as decimal numbers. A trailing
``value`` attribute (what a ``flax.nnx.Variable`` flattens to) is dropped, so an nnx ``State``
and its pure-dict form get the same names. ``None`` and empty containers hold no leaves and are
not stored; restoring into a target re-creates them from the target's tree structure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

SEP = "/"


def _entry_name(entry: Any) -> str:
    """Returns the name of one key-path entry (DictKey, SequenceKey, GetAttrKey, ...)."""
    for attr in ("key", "idx", "name"):
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def path_parts(key_path: tuple[Any, ...]) -> tuple[str, ...]:
    """Returns the name components of a ``jax.tree_util`` key path.

    Parameters
    ----------
    key_path:
        A key path as yielded by ``jax.tree_util.tree_flatten_with_path``.

    Returns
    -------
    tuple[str, ...]
        One string per level, without a trailing ``value`` attribute of a flax Variable.
    """
    parts = [_entry_name(e) for e in key_path]
    if key_path and isinstance(key_path[-1], jax.tree_util.GetAttrKey) and parts[-1] == "value":
        parts.pop()
    return tuple(parts)


def flatten(tree: Any, *, is_leaf: Callable[[Any], bool] | None = None) -> dict[str, Any]:
    """Flattens a pytree into an ordered ``{path: leaf}`` dict (tree order).

    Parameters
    ----------
    tree:
        Any pytree (dicts, lists, tuples, NamedTuples, dataclass/flax nodes ...).
    is_leaf:
        Optional predicate passed to ``jax.tree_util``.

    Returns
    -------
    dict[str, Any]
        Paths joined with ``/`` mapped to leaves, in the order ``jax.tree_util`` flattens.

    Raises
    ------
    ValueError
        If a name contains ``/``, two leaves get the same path, or the tree is a bare leaf.
    """
    pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    flat: dict[str, Any] = {}
    for key_path, leaf in pairs:
        parts = path_parts(key_path)
        if not parts:
            raise ValueError("the tree is a bare leaf; wrap it in a dict, e.g. {'params': x}")
        for part in parts:
            if SEP in part or part == "":
                raise ValueError(f"tree key {part!r} is empty or contains {SEP!r}: not storable")
        path = SEP.join(parts)
        if path in flat:
            raise ValueError(f"two leaves of the tree map to the same path {path!r}")
        flat[path] = leaf
    return flat


def unflatten_like(target: Any, flat: Mapping[str, Any], *, is_leaf: Any = None) -> Any:
    """Builds a tree with ``target``'s structure whose leaves are ``flat[path]``.

    Parameters
    ----------
    target:
        The tree whose structure (including None / empty nodes and custom node types) is used.
    flat:
        Leaves by path, as returned by :func:`flatten` (extra paths are ignored).
    is_leaf:
        Optional predicate passed to ``jax.tree_util``.

    Returns
    -------
    Any
        ``target``'s structure filled with the values of ``flat``.
    """
    pairs, treedef = jax.tree_util.tree_flatten_with_path(target, is_leaf=is_leaf)
    leaves = [flat[SEP.join(path_parts(kp))] for kp, _ in pairs]
    return jax.tree_util.tree_unflatten(treedef, leaves)


def nest(flat: Mapping[str, Any], sep: str = SEP) -> dict[str, Any]:
    """Turns ``{"a/b": x, "a/c": y}`` into ``{"a": {"b": x, "c": y}}`` (plain dicts only).

    Parameters
    ----------
    flat:
        Leaves by path.
    sep:
        The separator between path components.

    Returns
    -------
    dict[str, Any]
        Nested dicts with string keys.

    Raises
    ------
    ValueError
        If one path is a prefix of another (a leaf where a subtree is needed).
    """
    root: dict[str, Any] = {}
    for path, leaf in flat.items():
        node = root
        parts = path.split(sep)
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ValueError(f"path {path!r} runs through a leaf")
            node = child
        if parts[-1] in node:
            raise ValueError(f"path {path!r} is both a leaf and a subtree")
        node[parts[-1]] = leaf
    return root


def natural_key(path: str) -> tuple[tuple[int, int | str], ...]:
    """A sort key that orders ``blocks/2`` before ``blocks/10``."""
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in path.split(SEP))
