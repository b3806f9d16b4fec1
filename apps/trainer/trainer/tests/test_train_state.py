"""The train state is one typed pytree whose checkpoint form is the dict every release saved."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx import kernels
from tjx.optim import FlatParams, OptimizerConfig, flat_layout
from trainer.config.typed import read_config, resolve, step_config
from trainer.step.state import abstract_state
from trainer.step.train_state import TrainState


def _state(rng: np.random.Generator, *, reference: bool, fp8: bool = False) -> TrainState:
    params = {
        "w": rng.standard_normal((3, 4), np.float32),
        "b": {"bias": rng.standard_normal(4, np.float32)},
    }
    opt_state = ({"mu": rng.standard_normal(12, np.float32)}, jnp.asarray(rng.integers(9)))
    ref = jax.tree.map(lambda x: x + 1.0, params) if reference else None
    meta = {"b": {"fp8_meta": rng.standard_normal((3, 3), np.float32)}} if fp8 else None
    return TrainState(
        opt_state=opt_state, params=params, reference=ref, step=jnp.int32(5), fp8=meta
    )


@pytest.mark.parametrize(("reference", "fp8"), [(False, False), (True, False), (True, True)])
def test_the_state_s_leaves_are_in_its_checkpoint_tree_s_order(reference, fp8):
    """The jitted step's arguments, donations and shardings follow the flattened leaves: the
    dataclass keeps the order the state had as a dict (so the compiled program is the same)."""
    state = _state(np.random.default_rng(), reference=reference, fp8=fp8)
    mine, theirs = jax.tree.leaves(state), jax.tree.leaves(state.tree())
    assert len(mine) == len(theirs) == (7 if reference else 5) + fp8
    assert all(a is b for a, b in zip(mine, theirs, strict=True))


def test_delayed_float8_state_is_checkpointed_and_merged_beside_the_params():
    state = _state(np.random.default_rng(), reference=False, fp8=True)
    tree = state.tree()
    assert set(tree) == {"fp8", "opt_state", "params", "step"}
    again = TrainState.from_tree(tree)
    assert again.fp8 is state.fp8
    joined = state.model_tree()  # the float8 meta beside its module's params, none dropped
    assert joined["b"] == {
        "bias": state.params["b"]["bias"],
        "fp8_meta": state.fp8["b"]["fp8_meta"],
    }
    assert joined["w"] is state.params["w"]


@pytest.mark.parametrize("reference", [False, True])
def test_a_checkpoint_tree_gives_back_the_same_state(reference):
    state = _state(np.random.default_rng(), reference=reference)
    tree = state.tree()
    assert set(tree) == {"opt_state", "params", "step"} | ({"reference"} if reference else set())
    again = TrainState.from_tree(tree)
    assert jax.tree.structure(again) == jax.tree.structure(state)
    assert all(a is b for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(state), strict=True))


def test_a_jitted_function_takes_and_returns_the_state():
    state = _state(np.random.default_rng(), reference=True)

    @jax.jit
    def step(s: TrainState) -> TrainState:
        params = jax.tree.map(lambda p: p * 2.0, s.params)
        return dataclasses.replace(s, params=params, step=s.step + 1)

    new = step(state)
    assert isinstance(new, TrainState) and int(new.step) == 6
    np.testing.assert_allclose(new.params["w"], 2.0 * state.params["w"], rtol=1e-6)
    np.testing.assert_array_equal(new.reference["w"], state.reference["w"])


def test_flat_params_are_checkpointed_per_leaf_and_restored_flat():
    """A state holding the flat optimizer's buffers (tjx.optim's FlatParams) saves the same
    per-leaf dict every checkpoint has, and a restore onto it is flat again, equal leaf by leaf."""
    state = _state(np.random.default_rng(), reference=False)
    cfg = OptimizerConfig(name="adamw", flat_update="on")
    flat = dataclasses.replace(
        state, params=FlatParams.of(state.params, flat_layout(cfg, state.params))
    )
    tree = flat.tree()
    assert jax.tree.structure(tree["params"]) == jax.tree.structure(state.params)
    for a, b in zip(jax.tree.leaves(tree["params"]), jax.tree.leaves(state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    again = TrainState.from_tree(jax.tree.map(np.asarray, tree), like=flat)
    assert jax.tree.structure(again) == jax.tree.structure(flat)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(flat), strict=True):
        np.testing.assert_array_equal(a, b)
    assert jax.tree.structure(TrainState.from_tree(tree)) == jax.tree.structure(state)


def test_a_state_built_for_a_tpu_holds_its_params_per_leaf_where_a_gpu_or_cpu_holds_them_flat():
    """Flat params save a GPU one launch a parameter; XLA's TPU compile of them needed more
    memory (llama_small on a v5e: +1.1 GiB), so the state follows the step's target."""
    small = {"model": {"d_model": 16, "num_layers": 2, "num_heads": 2, "mlp": {"dim": 32},
                       "max_seq_len": 16}, "data": {"seq_len": 8, "batch_size": 8}}  # fmt: skip
    run = step_config(resolve(read_config(small), 40))
    here = abstract_state(run).state  # this CPU
    with kernels.target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        gpu = abstract_state(run).state
    with kernels.target("tpu", "TPU v5 lite"):
        tpu = abstract_state(run).state
    assert isinstance(here.params, FlatParams) and isinstance(gpu.params, FlatParams)
    assert not isinstance(tpu.params, FlatParams)
    shapes = [(x.shape, x.dtype) for x in jax.tree.leaves(tpu.params)]
    assert shapes == [(x.shape, x.dtype) for x in jax.tree.leaves(gpu.param_tree())]
