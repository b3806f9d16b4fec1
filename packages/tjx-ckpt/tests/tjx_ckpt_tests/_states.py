"""Deterministic train states for the tests (shared with the kill -9 child process)."""

from __future__ import annotations

import collections
import hashlib
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

AdamState = collections.namedtuple("AdamState", "count mu nu")
EmptyState = collections.namedtuple("EmptyState", "")


def make_params(step: int, *, d: int = 32, layers: int = 2, sharding: Any = None) -> dict:
    """Params of a tiny 'model' whose values depend on ``step`` (fresh random, never zeros)."""
    return _to_device(_host_params(step, d, layers), sharding)


def _host_params(step: int, d: int, layers: int) -> dict:
    rng = np.random.default_rng(1000 + step)
    blocks = [
        {
            "attn": {"kernel": rng.normal(size=(2 * d, d)).astype(np.float32)},
            "mlp": {
                "kernel": rng.normal(size=(2 * d, d)).astype(jnp.bfloat16),
                "bias": rng.normal(size=(d,)).astype(jnp.bfloat16),
            },
        }
        for _ in range(layers)
    ]
    return {"embed": rng.normal(size=(8 * layers, d)).astype(np.float32), "blocks": blocks}


def _to_device(tree: Any, sharding: Any) -> Any:
    # Built with numpy and transferred: no jax op to compile, so a fresh process is fast.
    def put(x: np.ndarray) -> jax.Array:
        if sharding is not None and x.ndim == 2:
            return jax.device_put(x, sharding)
        return jnp.asarray(x)

    return jax.tree.map(put, tree)


def make_state(step: int, *, sharding: Any = None, layers: int = 2) -> dict:
    """A full train state: params (f32 + bf16), optimizer-like state with ints, step, PRNG keys."""
    host = _host_params(step, 32, layers)
    params = _to_device(host, sharding)
    mu = _to_device(jax.tree.map(lambda p: (p * 0.5).astype(p.dtype), host), sharding)
    nu = _to_device(jax.tree.map(lambda p: (p.astype(np.float32) ** 2), host), sharding)
    opt = (
        AdamState(count=jnp.asarray(step, jnp.int32), mu=mu, nu=nu),
        EmptyState(),
        {"skipped": np.asarray([step % 3, 7], np.int64), "scale": None},
    )
    key_data = np.asarray([42, 1 + step], np.uint32)
    return {
        "params": params,
        "opt_state": opt,
        "step": jnp.asarray(step, jnp.int32),
        "rng": jax.random.wrap_key_data(jnp.asarray(key_data), impl="threefry2x32"),
        "legacy_rng": jnp.asarray(key_data[::-1]),
        "tokens_seen": step * 4096,
    }


def as_numpy(tree: Any) -> dict:
    """Leaves as numpy (typed keys as key data) by keystr path, for exact comparison."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            out[jax.tree_util.keystr(path)] = (
                "key",
                str(jax.random.key_impl(leaf)),
                np.asarray(jax.random.key_data(leaf)),
            )
        else:
            out[jax.tree_util.keystr(path)] = (type(leaf).__name__, None, np.asarray(leaf))
    return out


def assert_bit_exact(got: Any, want: Any) -> None:
    """Same tree structure, same leaf kinds, dtypes, shapes and bits."""
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    g, w = as_numpy(got), as_numpy(want)
    assert list(g) == list(w)
    for path in w:
        (gk, gi, ga), (wk, wi, wa) = g[path], w[path]
        assert (gi, ga.dtype, ga.shape) == (wi, wa.dtype, wa.shape), path
        if wk in ("int", "float", "bool"):
            assert gk == wk, path
        assert ga.tobytes() == wa.tobytes(), path


def tree_digest(directory: Path) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative path -> digest)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
