"""Params ⇄ safetensors files with flat, readable, dotted names (``blocks.0.attn.qkv.kernel``).

safetensors is a JSON header plus raw little-endian bytes: loading one runs no code (no pickle).
bfloat16 and float8 tensors are read with ml_dtypes (which jax ships) because
``safetensors.numpy`` has no numpy type for them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import safetensors
import safetensors.numpy

from tjx.ckpt.errors import CheckpointNotFoundError
from tjx.ckpt.treepaths import path_parts
from tjx.ckpt.validate import LeafSpec, check_against, is_prng_key

_DTYPES: dict[str, Any] = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": jnp.bfloat16,
    "F8_E4M3": jnp.float8_e4m3fn,
    "F8_E5M2": jnp.float8_e5m2,
    "I64": np.int64,
    "U64": np.uint64,
    "I32": np.int32,
    "U32": np.uint32,
    "I16": np.int16,
    "U16": np.uint16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def _dotted(tree: Any) -> dict[str, Any]:
    """``{dotted name: leaf}``; raises if a name component contains a dot (ambiguous)."""
    flat: dict[str, Any] = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        parts = path_parts(key_path)
        for part in parts:
            if "." in part:
                raise ValueError(
                    f"name component {part!r} contains '.': dotted names would be ambiguous"
                )
        flat[".".join(parts)] = leaf
    return flat


def flat_names(params: Any) -> list[str]:
    """The dotted names :func:`export_safetensors` would write for ``params``, in tree order."""
    return list(_dotted(params))


def export_safetensors(
    params: Any, path: str | os.PathLike[str], *, metadata: Mapping[str, str] | None = None
) -> list[str]:
    """Writes a params tree to one safetensors file with dotted names.

    Parameters
    ----------
    params:
        A pytree of jax/numpy arrays (an nnx State, a pure dict, ...). Sharded arrays are
        gathered to host, so they must be fully addressable (single host).
    path:
        The file to write (parent directories are created; written to a temporary name and
        renamed, so a crash never leaves a half-written file under ``path``).
    metadata:
        String key/values stored in the safetensors header.

    Returns
    -------
    list[str]
        The tensor names written, in tree order.
    """
    flat = _dotted(params)
    arrays = {}
    for name, leaf in flat.items():
        if is_prng_key(leaf):
            raise TypeError(f"{name}: a PRNG key is not a parameter; leave it out of params")
        arrays[name] = np.ascontiguousarray(np.asarray(jax.device_get(leaf)))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    header = {"format": "tjx-ckpt", **{str(k): str(v) for k, v in (metadata or {}).items()}}
    safetensors.numpy.save_file(arrays, str(tmp), metadata=header)
    os.replace(tmp, out)
    return list(arrays)


def import_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Reads a safetensors file into ``{dotted name: numpy array}`` (file order).

    Raises
    ------
    CheckpointNotFoundError
        If the file does not exist.
    ValueError
        If the file is not valid safetensors or holds a dtype not supported here.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointNotFoundError(f"safetensors file {file} does not exist")
    try:
        tensors = safetensors.deserialize(file.read_bytes())
    except Exception as err:  # the rust binding raises its own error type
        raise ValueError(f"{file} is not a valid safetensors file: {err}") from err
    out = {}
    for name, view in tensors:
        if view["dtype"] not in _DTYPES:
            raise ValueError(f"{file}: tensor {name} has unsupported dtype {view['dtype']}")
        arr = np.frombuffer(view["data"], dtype=_DTYPES[view["dtype"]])
        out[name] = arr.reshape(view["shape"]).copy()
    return out


def unflatten_params(flat: Mapping[str, Any], target: Any, *, strict: bool = True) -> Any:
    """Puts dotted-name tensors back into a tree shaped like ``target``.

    Parameters
    ----------
    flat:
        ``{dotted name: array}``, e.g. from :func:`import_safetensors`.
    target:
        The params tree (arrays or ShapeDtypeStructs). A leaf with a sharding is placed on it
        (``jax.device_put``); a numpy leaf stays numpy.
    strict:
        Also fail on names in ``flat`` that the target lacks.

    Returns
    -------
    Any
        The tree, shaped like ``target``.

    Raises
    ------
    CheckpointMismatchError
        Naming the first name whose presence, shape or dtype differs.
    """
    is_leaf = lambda x: isinstance(x, jax.ShapeDtypeStruct)
    pairs, treedef = jax.tree_util.tree_flatten_with_path(target, is_leaf=is_leaf)
    leaves = {".".join(path_parts(kp)): leaf for kp, leaf in pairs}
    saved = {
        name: {"shape": list(np.shape(a)), "dtype": np.dtype(a.dtype).name}
        for name, a in flat.items()
    }
    wanted = {
        name: LeafSpec(tuple(leaf.shape), np.dtype(leaf.dtype).name, "jax")
        for name, leaf in leaves.items()
    }
    check_against(saved, wanted, where="safetensors", partial=not strict)
    placed = []
    for name, leaf in leaves.items():
        sharding = getattr(leaf, "sharding", None)
        value = flat[name]
        placed.append(
            jax.device_put(value, sharding) if sharding is not None else np.asarray(value)
        )
    return jax.tree_util.tree_unflatten(treedef, placed)
