"""Params to safetensors with dotted names and back."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors
from jax.sharding import NamedSharding, PartitionSpec

from tjx.ckpt import (
    CheckpointMismatchError,
    CheckpointNotFoundError,
    export_safetensors,
    flat_names,
    import_safetensors,
    unflatten_params,
)
from tjx_ckpt_tests._states import assert_bit_exact, make_params


def test_round_trip_with_dotted_names(tmp_path: Path, mesh8) -> None:
    sharding = NamedSharding(mesh8, PartitionSpec("fsdp"))
    params = make_params(4, sharding=sharding)
    params["blocks"][0]["attn"]["qkv"] = {"kernel": jnp.arange(12, dtype=jnp.int8).reshape(3, 4)}
    path = tmp_path / "out" / "model.safetensors"
    names = export_safetensors(params, path, metadata={"step": 4})
    assert "blocks.0.attn.qkv.kernel" in names and "embed" in names
    assert names == flat_names(params)
    with safetensors.safe_open(str(path), "numpy") as f:
        assert f.metadata() == {"format": "tjx-ckpt", "step": "4"}
    flat = import_safetensors(path)
    assert set(flat) == set(names)
    assert flat["blocks.1.mlp.kernel"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(flat["blocks.0.attn.qkv.kernel"], np.arange(12).reshape(3, 4))
    # Back into the tree, onto the target's shardings.
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), params
    )
    back = unflatten_params(flat, target)
    assert_bit_exact(back, params)
    assert back["embed"].sharding == sharding
    # Numpy targets give numpy leaves.
    host = unflatten_params(flat, jax.tree.map(np.asarray, params))
    assert isinstance(host["embed"], np.ndarray)
    assert not (tmp_path / "out" / "model.safetensors.tmp").exists()


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Variable:
    """Flattens like a flax nnx Variable: one child under the attribute ``value``."""

    value: Any


def test_nnx_like_value_attributes_are_dropped_from_names(tmp_path: Path) -> None:
    tree = {"attn": {"kernel": Variable(jnp.ones((2, 3))), "bias": Variable(jnp.zeros((3,)) + 2)}}
    assert flat_names(tree) == ["attn.bias", "attn.kernel"]
    path = tmp_path / "x.safetensors"
    export_safetensors(tree, path)
    flat = import_safetensors(path)
    assert set(flat) == {"attn.bias", "attn.kernel"}
    back = unflatten_params(flat, tree)
    assert isinstance(back["attn"]["kernel"], Variable)
    np.testing.assert_array_equal(back["attn"]["bias"].value, np.full(3, 2.0))


def test_mismatch_and_bad_files(tmp_path: Path) -> None:
    params = make_params(1)
    path = tmp_path / "p.safetensors"
    export_safetensors(params, path)
    flat = import_safetensors(path)
    wrong = make_params(1, d=16)
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.0\.attn\.kernel: shape \(64, 32\)"):
        unflatten_params(flat, wrong)
    fewer = make_params(1)
    del fewer["embed"]
    with pytest.raises(CheckpointMismatchError, match="embed: in the checkpoint but not"):
        unflatten_params(flat, fewer)
    assert set(
        jax.tree.leaves(
            jax.tree.map(lambda x: x.shape, unflatten_params(flat, fewer, strict=False))
        )
    )
    with pytest.raises(CheckpointNotFoundError):
        import_safetensors(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 7)
    with pytest.raises(ValueError, match="not a valid safetensors"):
        import_safetensors(junk)
    with pytest.raises(ValueError, match="contains '.'"):
        export_safetensors({"a.b": jnp.ones(1)}, tmp_path / "bad.safetensors")
    with pytest.raises(TypeError, match="PRNG key"):
        export_safetensors({"k": jax.random.key(0)}, tmp_path / "bad.safetensors")
