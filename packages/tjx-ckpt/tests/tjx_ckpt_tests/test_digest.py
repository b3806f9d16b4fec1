"""params_sha256: every bit and every path counts; sharding and container order do not."""

from __future__ import annotations

import hashlib

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.ckpt import params_sha256


def _params(seed: int) -> dict[str, object]:
    rng = np.random.default_rng(seed)
    return {
        "w": rng.standard_normal((8, 4)).astype(np.float32),
        "b": rng.standard_normal(3).astype(np.float32),
        "blocks": [{"scale": rng.standard_normal(5).astype(np.float32)}],
    }


def _reference(params: dict[str, object]) -> str:
    """sha256 of (keystr path, C-order bytes) pairs in path order, with numpy alone."""
    leaves = jax.tree_util.tree_leaves_with_path(params)
    digest = hashlib.sha256()
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        digest.update(jax.tree_util.keystr(path).encode())
        digest.update(np.ascontiguousarray(leaf).tobytes())
    return digest.hexdigest()


def test_digest_matches_the_numpy_reference_and_sees_every_bit():
    params = _params(0)
    got = params_sha256(params)
    assert got == _reference(params) and len(got) == 64
    assert params_sha256(jax.tree.map(jax.numpy.asarray, params)) == got  # on device
    assert params_sha256(dict(reversed(list(params.items())))) == got  # container order
    flipped = _params(0)
    bits = flipped["b"].view(np.uint32)  # type: ignore[attr-defined]
    bits[1] ^= 1  # the lowest mantissa bit of one value
    assert params_sha256(flipped) != got
    renamed = {**_params(0), "b2": _params(0)["b"]}
    del renamed["b"]
    assert params_sha256(renamed) != got  # the path is hashed too


def test_digest_is_the_same_under_any_sharding(mesh8: Mesh):
    params = _params(1)
    sharded = jax.device_put(params["w"], NamedSharding(mesh8, PartitionSpec("fsdp", None)))
    assert len(sharded.sharding.device_set) == 8
    assert params_sha256({**params, "w": sharded}) == params_sha256(params)
