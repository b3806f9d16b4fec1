"""Run metadata stored with each checkpoint, and JSON conversion of configs.

``collect_metadata`` records what is needed to know where a checkpoint came from: the installed
tjx package versions (``importlib.metadata``; a package run from a source tree without being
installed is simply absent), jax/orbax versions, the git commit of the working directory when
``git`` knows one, the mesh shape, process count and the wall-clock time.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import importlib.metadata
import os
import pathlib
import subprocess
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np

from tjx.ckpt.version import __version__

TJX_DISTRIBUTIONS = (
    "tjx-kernels",
    "tjx-nn",
    "tjx-optim",
    "tjx-parallel",
    "tjx-data",
    "tjx-ckpt",
    "tjx-metrics",
)
_OTHER_DISTRIBUTIONS = ("jax", "jaxlib", "orbax-checkpoint", "flax", "optax")


def package_versions(
    names: tuple[str, ...] = TJX_DISTRIBUTIONS + _OTHER_DISTRIBUTIONS,
) -> dict[str, str]:
    """Versions of the installed distributions among ``names`` (missing ones are left out)."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The ``HEAD`` commit of the git checkout containing ``cwd``, or None when unknown.

    ``$TJX_GIT_COMMIT`` wins when set (for runs from an exported tree or a container).
    """
    if commit := os.environ.get("TJX_GIT_COMMIT"):
        return commit
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = result.stdout.strip()
    return commit if result.returncode == 0 and commit else None


def mesh_shape(mesh: Any) -> dict[str, int] | None:
    """``{axis name: size}`` of a ``jax.sharding.Mesh`` (None for None)."""
    if mesh is None:
        return None
    return {str(name): int(size) for name, size in mesh.shape.items()}


def collect_metadata(*, mesh: Any = None, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Metadata describing the current run, JSON-serialisable.

    Parameters
    ----------
    mesh:
        The ``jax.sharding.Mesh`` training runs on, if any (its axis sizes are recorded).
    extra:
        More JSON-able entries, merged last.

    Returns
    -------
    dict[str, Any]
        ``versions``, ``git_commit``, ``mesh_shape``, ``device_count``, ``process_count``,
        ``platform``, ``device_kind`` (the first device's), ``time`` (ISO 8601, UTC) and
        ``extra``'s keys.
    """
    versions = package_versions()
    versions.setdefault("tjx-ckpt", __version__)  # known even when run from a source tree
    meta: dict[str, Any] = {
        "versions": versions,
        "git_commit": git_commit(),
        "mesh_shape": mesh_shape(mesh),
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "platform": jax.default_backend(),
        # what a replay compares: another kind of device may compute a step otherwise
        "device_kind": jax.devices()[0].device_kind,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    meta.update(to_json(dict(extra or {}), "metadata"))
    return meta


def to_json(obj: Any, path: str = "config") -> Any:
    """Converts a config-like object into plain JSON values (a fresh copy).

    Dataclasses become dicts, tuples and sets lists, enums their value, numpy/jax scalars
    Python numbers, dtypes and types their name, paths strings.

    Raises
    ------
    TypeError
        Naming the path of the first value that has no JSON form.
    """
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        obj = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            if not isinstance(key, str | int):
                raise TypeError(f"{path}: key {key!r} is not a string")
            out[str(key)] = to_json(value, f"{path}.{key}")
        return out
    if isinstance(obj, list | tuple | set | frozenset):
        items = sorted(obj, key=repr) if isinstance(obj, set | frozenset) else obj
        return [to_json(v, f"{path}[{i}]") for i, v in enumerate(items)]
    if isinstance(obj, enum.Enum):
        return to_json(obj.value, path)
    if isinstance(obj, np.generic) or (isinstance(obj, np.ndarray) and obj.ndim == 0):
        return obj.item()
    if isinstance(obj, pathlib.PurePath):
        return str(obj)
    if isinstance(obj, type | np.dtype):
        try:
            return np.dtype(obj).name
        except TypeError:
            return obj.__name__ if isinstance(obj, type) else str(obj)
    raise TypeError(f"{path}: a {type(obj).__name__} has no JSON form; convert it first")
