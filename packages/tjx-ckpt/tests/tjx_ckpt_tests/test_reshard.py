"""Saved FSDP-sharded over 8 devices, restored onto 1 device and onto a 4x2 mesh."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec, SingleDeviceSharding

from tjx.ckpt import CheckpointManager, restore_params
from tjx_ckpt_tests._states import assert_bit_exact, make_params, make_state


def _save_fsdp(directory: Path, mesh8) -> dict:
    fsdp = NamedSharding(mesh8, PartitionSpec("fsdp"))
    state = make_state(11, sharding=fsdp)
    assert len(state["params"]["embed"].sharding.device_set) == 8
    with CheckpointManager(directory, mesh=mesh8) as manager:
        manager.save(11, state=state, data_state={"pos": 11})
    return state


def _abstract(tree, sharding_for):
    return jax.tree.map(
        lambda x: (
            jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding_for(x))
            if isinstance(x, jax.Array)
            else x
        ),
        tree,
    )


def test_restore_onto_one_device(tmp_path: Path, mesh8) -> None:
    saved = _save_fsdp(tmp_path, mesh8)
    one = SingleDeviceSharding(jax.devices()[3])
    target = _abstract(make_state(0), lambda x: one)
    with CheckpointManager(tmp_path, read_only=True) as manager:
        restored = manager.restore(target=target)
    assert_bit_exact(restored.state, saved)
    for leaf in jax.tree.leaves(restored.state["params"]):
        assert leaf.sharding == one
    assert restored.metadata["mesh_shape"] == {"fsdp": 8}


def test_restore_onto_4x2_mesh(tmp_path: Path, mesh8, mesh4x2) -> None:
    saved = _save_fsdp(tmp_path, mesh8)

    def spec(x):
        names = ("data", "tensor") if x.ndim == 2 else ()
        return NamedSharding(mesh4x2, PartitionSpec(*names))

    target = _abstract(make_state(0), spec)
    with CheckpointManager(tmp_path, read_only=True) as manager:
        restored = manager.restore(target=target)
    assert_bit_exact(restored.state, saved)
    kernel = restored.state["params"]["blocks"][1]["attn"]["kernel"]
    assert kernel.sharding.spec == PartitionSpec("data", "tensor")
    assert {s.data.shape for s in kernel.addressable_shards} == {(16, 16)}


def test_a_sharding_that_does_not_fit_is_a_target_error(tmp_path: Path, mesh8, mesh4x2) -> None:
    _save_fsdp(tmp_path, mesh8)
    target = _abstract(
        make_state(0),
        lambda x: NamedSharding(mesh4x2, PartitionSpec("data") if x.ndim else PartitionSpec()),
    )
    manager = CheckpointManager(tmp_path, read_only=True)
    with (
        manager,
        pytest.raises(ValueError, match=r"legacy_rng: sharding .* does not fit shape \(2,\)"),
    ):
        manager.restore(target=target)


def test_params_only_restore(tmp_path: Path, mesh8, mesh4x2) -> None:
    saved = _save_fsdp(tmp_path, mesh8)
    replicated = NamedSharding(mesh4x2, PartitionSpec())
    target = _abstract(make_params(0), lambda x: replicated)
    params = restore_params(tmp_path, target=target)
    assert_bit_exact(params, saved["params"])
    assert params["embed"].sharding == replicated
    # A concrete target works as well (its arrays' shardings are used, values ignored).
    params = restore_params(tmp_path, target=make_params(0), step=11)
    np.testing.assert_array_equal(
        np.asarray(params["embed"], np.float32), np.asarray(saved["params"]["embed"], np.float32)
    )
    assert params["blocks"][0]["mlp"]["bias"].dtype == jnp.bfloat16
