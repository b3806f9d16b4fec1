"""Flat, canonically named views of a model's parameters, independent of ``scan_layers``.

Names are dotted paths of the unrolled model, e.g. ``stack.layers.3.attn.query.kernel``; a
scanned model's stacked parameters (leading ``layers`` axis) are split into per-layer entries on
the way out and stacked again on the way in. This converts between scanned and unrolled models
and underlies the Hugging Face conversion.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.params import is_stacked


def _layer_names(model: nnx.Module, path: tuple[Any, ...], n: int) -> list[str]:
    """The unrolled names of a stacked parameter's ``n`` slices.

    ``stack.layers.attn...`` (one kind of layer, scanned) → ``stack.layers.<i>.attn...``; a
    segment of a mixed stack, ``stack.segments.<s>.blocks.<j>.mlp...`` (its unit's block ``j``,
    stacked over the repeats), → ``stack.layers.<start + r·period + j>.mlp...``.
    """
    keys = [str(p) for p in path]
    if "segments" in keys and "layers" not in keys:
        k = keys.index("segments")
        owner: Any = model
        for key in keys[:k]:
            owner = getattr(owner, key)
        seg = owner.plan[int(keys[k + 1])]
        j, tail = int(keys[k + 3]), ".".join(keys[k + 4 :])
        head = ".".join([*keys[:k], "layers"])
        return [f"{head}.{seg.start + r * len(seg.unit) + j}.{tail}" for r in range(n)]
    i = keys.index("layers")
    prefix, rest = ".".join(keys[: i + 1]), ".".join(keys[i + 1 :])
    return [f"{prefix}.{r}.{rest}" for r in range(n)]


def get_flat_params(model: nnx.Module) -> dict[str, np.ndarray]:
    """All ``nnx.Param`` values as ``{dotted name: numpy array}`` in unrolled naming.

    Parameters
    ----------
    model : nnx.Module
        Scanned or unrolled model (scanned stacks are split per layer).

    Returns
    -------
    dict of str to numpy.ndarray
    """
    out: dict[str, np.ndarray] = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = np.asarray(var.get_value())
        if is_stacked(var):
            for i, name in enumerate(_layer_names(model, path, value.shape[0])):
                out[name] = value[i]
        else:
            out[".".join(str(p) for p in path)] = value
    return out


def set_flat_params(model: nnx.Module, flat: dict[str, Any], *, strict: bool = True) -> None:
    """Load ``{dotted name: array}`` (unrolled naming) into ``model`` in place.

    Values are cast to each parameter's dtype; shapes must match exactly.

    Parameters
    ----------
    model : nnx.Module
        Scanned or unrolled model (per-layer entries are stacked into scanned stacks).
    flat : dict of str to array-like
        Values by dotted name, as ``get_flat_params`` returns them.
    strict : bool
        Also raise on names the model does not have (missing names always raise).

    Raises
    ------
    ValueError
        On a missing name, an unused name (when ``strict``) or a shape mismatch.
    """
    state = nnx.state(model, nnx.Param)
    flat_state = nnx.to_flat_state(state)
    used: set[str] = set()
    for path, var in flat_state:
        current = var.get_value()
        if is_stacked(var):
            names = _layer_names(model, path, current.shape[0])
            missing = [n for n in names if n not in flat]
            if missing:
                raise ValueError(f"parameter {missing[0]!r} missing from the given weights")
            value = np.stack([np.asarray(flat[n]) for n in names])
        else:
            name = ".".join(str(p) for p in path)
            names = [name]
            if name not in flat:
                raise ValueError(f"parameter {name!r} missing from the given weights")
            value = np.asarray(flat[name])
        if value.shape != current.shape:
            raise ValueError(
                f"parameter {names[0]!r}: shape {value.shape[-current.ndim:]} does not match "
                f"the model's {current.shape}"
            )
        used.update(names)
        var.set_value(jnp.asarray(value, dtype=current.dtype))
    extra = sorted(set(flat) - used)
    if strict and extra:
        raise ValueError(f"unused weights: {extra[:5]}{' …' if len(extra) > 5 else ''}")
    nnx.update(model, nnx.from_flat_state(flat_state))


def fill_params(model: nnx.Module, produce: Callable[[str], Any]) -> None:
    """Set every ``nnx.Param`` of ``model`` to ``produce(name)`` (unrolled naming), in place.

    One tensor at a time: a model built with ``nnx.eval_shape`` (no parameter in memory) is
    filled without ever holding the source weights and the model's together. Values are cast to
    each parameter's dtype; a scanned stack is assembled layer by layer into one buffer.

    Raises
    ------
    ValueError
        A value whose shape is not the parameter's (naming it).
    """
    flat_state = nnx.to_flat_state(nnx.state(model, nnx.Param))
    for path, var in flat_state:
        current = var.get_value()
        shape, dtype = tuple(current.shape), np.dtype(current.dtype)
        if is_stacked(var):
            value = np.empty(shape, dtype)
            for i, name in enumerate(_layer_names(model, path, shape[0])):
                value[i] = _checked(name, produce, shape[1:])
        else:
            value = _checked(".".join(str(p) for p in path), produce, shape).astype(dtype)
        var.set_value(jnp.asarray(value))
        del value
    nnx.update(model, nnx.from_flat_state(flat_state))


def _checked(name: str, produce: Callable[[str], Any], shape: tuple[int, ...]) -> np.ndarray:
    value = np.asarray(produce(name))
    if value.shape != shape:
        raise ValueError(
            f"parameter {name!r}: shape {value.shape} does not match the model's {shape}"
        )
    return value


def param_readers(model: nnx.Module) -> dict[str, Callable[[], np.ndarray]]:
    """``{name: () -> numpy value}`` for every ``nnx.Param`` (unrolled naming), read on demand.

    Unlike ``get_flat_params`` nothing is copied until a reader is called, so an export holds
    one tensor of the model at a time beside it.
    """
    out: dict[str, Callable[[], np.ndarray]] = {}
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        value = var.get_value()
        if is_stacked(var):
            for i, name in enumerate(_layer_names(model, path, value.shape[0])):
                out[name] = _reader(value, i)
        else:
            out[".".join(str(p) for p in path)] = _reader(value, None)
    return out


def _reader(value: Any, layer: int | None) -> Callable[[], np.ndarray]:
    def read() -> np.ndarray:
        return np.asarray(value if layer is None else value[layer])

    return read
