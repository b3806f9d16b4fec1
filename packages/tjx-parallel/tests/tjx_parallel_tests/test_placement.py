"""``on_mesh`` (a whole train state on the mesh's one device set) and the batch arithmetic of a
mesh (``batch_ways``, ``check_batch_split``)."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import P
from jax.sharding import NamedSharding

from tjx import parallel
from tjx.parallel import BATCH_AXES, MeshConfig, batch_ways, check_batch_split, make_mesh, on_mesh


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


def test_on_mesh_replicates_what_is_not_there_and_keeps_what_is(mesh):
    rng = np.random.default_rng(0)
    sharded = jax.device_put(np.ones((8, 4), np.float32), NamedSharding(mesh, P(("data", "fsdp"))))
    state = {
        "params": sharded,
        "step": jnp.asarray(3, jnp.int32),  # on one device
        "host": rng.normal(size=(3,)).astype(np.float32),  # numpy
        "scalar": 1.5,
    }
    placed = on_mesh(state, mesh)
    assert placed["params"] is sharded  # already on the mesh: not moved
    for key in ("step", "host", "scalar"):
        leaf = placed[key]
        assert leaf.sharding == NamedSharding(mesh, P()), key
        np.testing.assert_array_equal(np.asarray(leaf), np.asarray(state[key]))
    # The same array on another mesh (same devices, another shape) is placed on this one.
    other = make_mesh(MeshConfig(data=8))
    elsewhere = jax.device_put(np.ones((8,)), NamedSharding(other, P("data")))
    assert on_mesh(elsewhere, mesh).sharding == NamedSharding(mesh, P())


def test_batch_ways_is_the_product_of_the_batch_axes(mesh):
    assert BATCH_AXES == ("data", "fsdp", "expert")
    assert batch_ways(mesh) == math.prod(mesh.shape[a] for a in BATCH_AXES)
    assert batch_ways(make_mesh(MeshConfig(data=1, tensor=8))) == 1
    assert batch_ways(make_mesh(MeshConfig(data=2, expert=4))) == 8  # expert splits the batch
    # A mesh made elsewhere, without some batch axes, counts the ones it has.
    assert batch_ways(jax.make_mesh((4, 2), ("data", "tensor"))) == 4


def test_check_batch_split_names_the_first_size_that_does_not_split(mesh):
    ways = batch_ways(mesh)
    assert check_batch_split({"train": 3 * ways, "eval": ways}, mesh) == ways
    with pytest.raises(ValueError) as exc:
        check_batch_split({"train": 3 * ways, "eval": ways + 1, "other": 1}, mesh)
    assert str(exc.value) == (
        f"eval: {ways + 1} must be divisible by the data×fsdp×expert mesh size ({ways})"
    )


def test_the_public_names():
    assert parallel.on_mesh is on_mesh and parallel.check_batch_split is check_batch_split
