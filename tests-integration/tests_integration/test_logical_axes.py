"""tjx-nn names the axes, tjx-parallel maps them: the logical axis names are one tuple.

The tuple is tjx-core's (`tjx.core.LOGICAL_AXES`), which both packages import; this test checks
that each package exports that one object, that every name a model of every kind puts on a
parameter is among them, and that every strategy's rules map each such parameter onto a mesh.
"""

from __future__ import annotations

import jax
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from tjx import core, parallel
from tjx import nn as tnn


def test_the_packages_export_the_one_tuple_of_tjx_core() -> None:
    assert tnn.LOGICAL_AXES is core.LOGICAL_AXES and parallel.LOGICAL_AXES is core.LOGICAL_AXES


@pytest.mark.parametrize("kind", [*sorted(tnn.MODEL_KINDS), "llama-moe"])
def test_every_parameter_of_every_kind_maps_under_every_strategy(kind: str) -> None:
    fields = {"d_model": 16, "num_layers": 2, "num_heads": 2}
    if kind == "llama-moe":  # routed experts (logical `experts`), shared experts, first dense
        kind = "llama"
        fields |= {"moe": tnn.MoEConfig(num_experts=4, num_shared_experts=1, first_dense=1)}
    if kind == "vit":
        fields |= {"image_size": 8, "patch_size": 4}
    else:
        fields |= {"vocab_size": 40, "max_seq_len": 8}
    config = tnn.MODEL_KINDS[kind](**fields)
    model = nnx.eval_shape(lambda: tnn.build_model(config, rngs=nnx.Rngs(0)))
    params = nnx.state(model, nnx.Param)
    named = [
        (leaf.get_value().shape, tuple(leaf.get_metadata()["out_sharding"]))
        for leaf in jax.tree.leaves(params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    ]
    assert named, kind
    used = {name for _, names in named for name in names if name is not None}
    assert used <= set(parallel.LOGICAL_AXES), used - set(parallel.LOGICAL_AXES)
    mesh = parallel.make_mesh(parallel.MeshConfig(data=2, fsdp=2, tensor=2))
    for strategy in parallel.STRATEGIES:
        table = parallel.rules(strategy)
        for shape, names in named:
            spec = table.to_mesh_spec(PartitionSpec(*names), mesh, shape)
            assert len(spec) <= len(shape), (strategy, names, spec)
