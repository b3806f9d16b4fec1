"""tjx-nn's LoRA adapters meet tjx-optim's and tjx-parallel's rules by name.

tjx-optim may not import tjx-nn, so what an adapter is travels by name: ``adapter_mask`` of a
LoRA model's parameter dict marks exactly its ``nnx.LoRAParam`` leaves, the weight-decay
decisions read from the adapters' logical axes equal the path rules', Muon splits them at their
input axes, every strategy maps them onto a mesh, and ``only_trainable`` over the whole tree steps
the adapters as the optimizer alone steps the adapters' own tree (the trainer's two ways of
training only them agree).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from tjx import nn as tnn
from tjx import parallel
from tjx.optim import (
    OptimizerConfig,
    adapter_mask,
    build_optimizer,
    decay_mask,
    muon_dimension_numbers,
    only_trainable,
)
from tjx.optim.paths import path_to_str


def _model(scan: bool) -> tnn.Llama:
    config = tnn.LlamaConfig(vocab_size=40, max_seq_len=8, d_model=16, num_layers=2, num_heads=2,
                             mlp=tnn.MLPConfig(dim=24), scan_layers=scan)  # fmt: skip
    model = tnn.Llama(config, rngs=nnx.Rngs(0))
    tnn.add_lora(model, tnn.LoraConfig(rank=2, targets=tnn.LORA_ROLES), rngs=nnx.Rngs(1))
    return model


def _paths(tree: object) -> list[str]:
    return [path_to_str(p) for p, _ in jax.tree_util.tree_leaves_with_path(tree)]


def _dims(numbers: object) -> dict[str, object]:
    """Path → (reduction axes, output axes) of each Muon leaf (None: an AdamW leaf)."""
    leaves = jax.tree_util.tree_leaves_with_path(
        numbers, is_leaf=lambda x: x is None or hasattr(x, "reduction_axis")
    )
    return {
        path_to_str(p): None if d is None else (tuple(d.reduction_axis), tuple(d.output_axis))
        for p, d in leaves
    }


def _at(tree: object, path: str) -> object:
    """The leaf of ``tree`` at ``path`` (as `path_to_str` writes it)."""
    return dict(zip(_paths(tree), jax.tree.leaves(tree), strict=True))[path]


@pytest.mark.parametrize("scan", [False, True])
def test_the_adapter_mask_is_the_lora_params_and_muon_splits_them_at_their_inputs(scan: bool):
    model = _model(scan)
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    adapters = set(_paths(nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))))
    mask = adapter_mask(params)
    marked = {p for p, m in zip(_paths(mask), jax.tree.leaves(mask), strict=True) if m}
    assert marked == adapters and len(adapters) == 2 * 7 * (1 if scan else 2)
    axes = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(model, nnx.Param)))
    by_axes, by_path = decay_mask(params, axes=axes), decay_mask(params)
    assert jax.tree.leaves(by_axes) == jax.tree.leaves(by_path)
    assert all(d for d, m in zip(jax.tree.leaves(by_axes), jax.tree.leaves(mask), strict=True)
               if m)  # fmt: skip
    # Muon splits a named leaf at its input axes (#41): an adapter's A maps the kernel's inputs
    # to the rank, its B the rank to the kernel's outputs, whichever split is most nearly square
    # (the path rules' guess, which the other leaves of this model agree with).
    by_names = _dims(muon_dimension_numbers(params, axes=axes))
    by_paths = _dims(muon_dimension_numbers(params))
    lead = 1 if scan else 0
    for path, dims in by_names.items():
        ndim = len(np.shape(_at(params, path)))
        if path.endswith("lora_a"):
            assert dims == (tuple(range(lead, ndim - 1)), (ndim - 1,)), path
        elif path.endswith("lora_b"):
            assert dims == ((lead,), tuple(range(lead + 1, ndim))), path
        else:
            assert dims == by_paths[path], path
    mesh = parallel.make_mesh(parallel.MeshConfig(data=2, fsdp=2, tensor=2))
    for leaf in jax.tree.leaves(nnx.state(model, nnx.LoRAParam),
                                is_leaf=lambda x: isinstance(x, nnx.Variable)):  # fmt: skip
        names = tuple(leaf.get_metadata()["out_sharding"])
        for strategy in parallel.STRATEGIES:
            spec = parallel.rules(strategy).to_mesh_spec(PartitionSpec(*names), mesh,
                                                         leaf.get_value().shape)  # fmt: skip
            assert len(spec) <= leaf.get_value().ndim


def test_a_masked_step_over_all_params_equals_a_step_over_the_adapters_alone():
    model = _model(True)
    rng = np.random.default_rng()
    params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), x.dtype), params)
    config = OptimizerConfig(name="adamw", learning_rate=1e-3, clip_norm=0.1)
    tx = only_trainable(build_optimizer(config), adapter_mask)
    updates, _ = tx.update(grads, tx.init(params), params)
    adapters = nnx.to_pure_dict(nnx.state(model, nnx.LoRAParam))
    adapter_paths = set(_paths(adapters))

    def pick(tree: dict) -> dict:
        flat = jax.tree_util.tree_leaves_with_path(tree)
        return {path_to_str(p): x for p, x in flat if path_to_str(p) in adapter_paths}

    alone = build_optimizer(config)
    expected, _ = alone.update(pick(grads), alone.init(pick(params)), pick(params))
    got = pick(updates)
    for name in adapter_paths:
        np.testing.assert_allclose(np.asarray(got[name]), np.asarray(expected[name]), rtol=1e-5,
                                   atol=1e-8)  # fmt: skip
    frozen = [u for p, u in zip(_paths(updates), jax.tree.leaves(updates), strict=True)
              if p not in adapter_paths]  # fmt: skip
    assert all(float(jnp.abs(u).max()) == 0 for u in frozen)
