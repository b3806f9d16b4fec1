"""What a checkpoint holds, what a target expects, and whether the two agree.

At save time every leaf becomes a *stored array* (a typed PRNG key is stored as its raw
``uint32`` key data) and a manifest entry ``{shape, dtype, kind, prng_impl, fingerprint}``.
At restore time the target is described the same way and compared entry by entry before any
array is read, so a mismatch is reported by path and the arrays are never touched.

The fingerprint (see :mod:`tjx.ckpt.fingerprint`) is a sharding-independent checksum of the
leaf's bits, taken at save time and compared after every restore, whatever the mesh.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from tjx.ckpt.errors import CheckpointMismatchError
from tjx.ckpt.treepaths import natural_key

_PYTHON_SCALARS = (bool, int, float)


def is_prng_key(x: Any) -> bool:
    """True for a new-style typed PRNG key array or its ``ShapeDtypeStruct``."""
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _prng_impl_name(x: Any) -> str:
    impl = getattr(x.dtype, "_impl", None)
    return str(getattr(impl, "name", None) or jax.random.key_impl(x))


@dataclasses.dataclass(frozen=True)
class LeafSpec:
    """How one leaf is stored (``shape``/``dtype`` of the stored array) and given back.

    ``kind`` is ``"jax"``, ``"numpy"`` or ``"python"`` (an int/float/bool scalar);
    ``prng_impl`` names the PRNG implementation when the leaf is a typed key; ``sharding``
    (targets only) is where a ``"jax"`` leaf is restored to.
    """

    shape: tuple[int, ...]
    dtype: str
    kind: str
    prng_impl: str | None = None
    sharding: Any = None

    def to_json(self, fingerprint: list[int] | None) -> dict[str, Any]:
        """The manifest entry of this leaf."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "kind": self.kind,
            "prng_impl": self.prng_impl,
            "fingerprint": fingerprint,
        }


def storable(path: str, leaf: Any) -> tuple[Any, LeafSpec]:
    """Returns the array to store for ``leaf`` and its spec.

    Typed PRNG keys become raw key data; numpy arrays are copied (an async save must not see
    later in-place edits); Python scalars become 0-d numpy arrays.

    Raises
    ------
    TypeError
        If the leaf is not a jax/numpy array or an int/float/bool.
    """
    if isinstance(leaf, jax.Array):
        if is_prng_key(leaf):
            data = jax.random.key_data(leaf)
            return data, _spec(data, "jax", _prng_impl_name(leaf))
        return leaf, _spec(leaf, "jax")
    if isinstance(leaf, np.ndarray | np.generic):
        arr = np.array(leaf, copy=True)
        return arr, _spec(arr, "numpy")
    if isinstance(leaf, _PYTHON_SCALARS):
        arr = np.asarray(leaf)
        return arr, _spec(arr, "python")
    raise TypeError(f"{path}: cannot checkpoint a leaf of type {type(leaf).__name__}")


def _spec(x: Any, kind: str, prng_impl: str | None = None, sharding: Any = None) -> LeafSpec:
    return LeafSpec(
        tuple(int(d) for d in x.shape), np.dtype(x.dtype).name, kind, prng_impl, sharding
    )


def target_spec(path: str, leaf: Any, default_sharding: Any) -> LeafSpec:
    """Describes what a target leaf expects (arrays, ShapeDtypeStructs, numpy, scalars)."""
    if isinstance(leaf, jax.Array | jax.ShapeDtypeStruct):
        sharding = getattr(leaf, "sharding", None) or default_sharding
        if is_prng_key(leaf):
            raw = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(leaf.shape, leaf.dtype))
            return _spec(raw, "jax", _prng_impl_name(leaf), sharding)
        return _spec(leaf, "jax", None, sharding)
    if isinstance(leaf, np.ndarray | np.generic):
        return _spec(leaf, "numpy")
    if isinstance(leaf, _PYTHON_SCALARS):
        return _spec(np.asarray(leaf), "python")
    raise TypeError(
        f"{path}: a target leaf must be an array, ShapeDtypeStruct or scalar, "
        f"not {type(leaf).__name__}"
    )


def adopt_host_kinds(saved: Mapping[str, Mapping[str, Any]], wanted: dict[str, LeafSpec]) -> None:
    """Lets a jax target leaf take back a leaf saved from numpy or a Python scalar, as saved.

    ``jax.eval_shape`` turns a numpy ``int64`` leaf into an ``int32`` ShapeDtypeStruct (with
    64-bit types off); when shapes agree and the target dtype is jax's canonical form of the
    saved dtype, the leaf is restored as the numpy array / Python scalar that was saved
    (bit-exact) rather than truncated. Modifies ``wanted`` in place.
    """
    for path, spec in wanted.items():
        entry = saved.get(path)
        if entry is None or spec.kind != "jax" or entry.get("kind") not in ("numpy", "python"):
            continue
        canonical = np.dtype(jax.dtypes.canonicalize_dtype(jnp.dtype(entry["dtype"]))).name
        if tuple(entry["shape"]) == spec.shape and spec.dtype == canonical:
            wanted[path] = LeafSpec(spec.shape, entry["dtype"], entry["kind"])


def _mismatch(path: str, saved: Mapping[str, Any], want: LeafSpec) -> str | None:
    shape = tuple(saved["shape"])
    if want.kind == "python":
        kinds = {"bool": "b", "int": "iu", "float": "f"}[_python_kind(want.dtype)]
        if shape != () or np.dtype(jnp.dtype(saved["dtype"])).kind not in kinds:
            return (
                f"{path}: {saved['dtype']}{list(shape)} in checkpoint, a Python "
                f"{_python_kind(want.dtype)} scalar expected"
            )
        return None
    if shape != want.shape:
        return f"{path}: shape {shape} in checkpoint, {want.shape} expected"
    if saved["dtype"] != want.dtype:
        return f"{path}: dtype {saved['dtype']} in checkpoint, {want.dtype} expected"
    saved_impl = saved.get("prng_impl")
    if want.prng_impl is not None and saved_impl not in (None, want.prng_impl):
        return f"{path}: PRNG impl {saved_impl} in checkpoint, {want.prng_impl} expected"
    return None


def _python_kind(dtype: str) -> str:
    kind = np.dtype(dtype).kind
    return "bool" if kind == "b" else "float" if kind == "f" else "int"


def check_against(
    saved: Mapping[str, Mapping[str, Any]],
    wanted: Mapping[str, LeafSpec],
    *,
    where: str,
    partial: bool = False,
) -> None:
    """Raises if the checkpoint's leaves do not fit the target's.

    Parameters
    ----------
    saved:
        Manifest entries by path (what the checkpoint holds).
    wanted:
        Target specs by path, in target tree order.
    where:
        Names the checkpoint in the message (e.g. the step directory).
    partial:
        If True, checkpoint paths absent from the target are fine (params-only restore).

    Raises
    ------
    CheckpointMismatchError
        Naming the first mismatching path (target order, then checkpoint-only paths), and how
        many more mismatches there are.
    """
    problems = []
    for path, spec in wanted.items():
        if path not in saved:
            problems.append(f"{path}: expected by the target but not in the checkpoint")
        elif (msg := _mismatch(path, saved[path], spec)) is not None:
            problems.append(msg)
    if not partial:
        extra = sorted((p for p in saved if p not in wanted), key=natural_key)
        problems += [f"{p}: in the checkpoint but not in the target" for p in extra]
    if problems:
        more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
        raise CheckpointMismatchError(
            f"checkpoint {where} does not match the target: {problems[0]}{more}. "
            "Is it a checkpoint of another model or config?"
        )
