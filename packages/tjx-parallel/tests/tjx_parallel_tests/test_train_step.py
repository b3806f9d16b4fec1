"""One Adam step of a tiny GPT on DP=8, FSDP=8, TP=2×DP=4, FSDP=4×TP=2 equals one device."""

from __future__ import annotations

import functools
import math

import jax
import numpy as np
import pytest
from flax import nnx
from jax import P
from jax.sharding import NamedSharding

from tjx.parallel import (
    MeshConfig,
    batch_sharding,
    jit_train_step,
    make_mesh,
    rules,
    shard_batch,
    shard_init,
    state_shardings,
)
from tjx_parallel_tests._tiny_gpt import TX, make_batch, make_model, make_step

# Mesh, preset, and the mesh-axis specs the rules must give a few params.
CASES = {
    "dp8": (MeshConfig(data=8), "dp", {}),
    "fsdp8": (
        MeshConfig(data=1, fsdp=8),
        "fsdp",
        {
            "wte": P(None, "fsdp"),
            "wpe": P(None, "fsdp"),
            "wq": P("fsdp"),
            "wk": P("fsdp"),
            "wv": P("fsdp"),
            "wo": P(None, None, "fsdp"),
            "ln2": P("fsdp"),
            "w1": P("fsdp"),
            "w2": P(None, "fsdp"),
            "unembed": P("fsdp"),
        },
    ),
    "tp2_dp4": (
        MeshConfig(data=4, tensor=2),
        "dp_tp",
        {
            "wte": P("tensor"),
            "wq": P(None, "tensor"),
            "wk": P(None, "tensor"),
            "wv": P(None, "tensor"),
            "wo": P("tensor"),
            "w1": P(None, "tensor"),
            "b1": P("tensor"),
            "w2": P("tensor"),
            "unembed": P(None, "tensor"),
        },
    ),
    "fsdp4_tp2": (
        MeshConfig(data=1, fsdp=4, tensor=2),
        "fsdp_tp",
        {
            "wte": P("tensor", "fsdp"),
            "wpe": P(None, "fsdp"),
            "wq": P("fsdp", "tensor"),
            "wk": P("fsdp", "tensor"),
            "wv": P("fsdp", "tensor"),
            "wo": P("tensor", None, "fsdp"),
            "ln2": P("fsdp"),
            "w1": P("fsdp", "tensor"),
            "b1": P("tensor"),
            "w2": P("tensor", "fsdp"),
            "unembed": P("fsdp", "tensor"),
        },
    ),
}
# Every param not listed (ln1, lnf: logical "norm"; all of them under "dp") is replicated.
BATCH = 16
# f32, 2 layers: sums reordered across devices differ by a few ulps; Adam's first step is
# ~lr*sign(g), so params agree to rounding of lr-sized updates.
RTOL, ATOL = 1e-5, 1e-6


@functools.cache
def _reference():
    graphdef, params = nnx.split(jax.jit(make_model)())
    opt_state = TX.init(params)
    batch = make_batch(1, BATCH)
    out = jax.jit(make_step(graphdef))(params, opt_state, batch)
    # host copies: the sharded steps donate their inputs, which must never alias these
    return graphdef, jax.device_get(params), jax.device_get(batch), jax.device_get(out)


def _leaf_name(path) -> str:
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    return next(str(k) for k in reversed(keys) if k not in ("value", None))


@functools.cache
def _run(case: str):
    config, strategy, _ = CASES[case]
    mesh, axis_rules = make_mesh(config), rules(strategy)
    if case == "fsdp4_tp2":  # born sharded (one case: each init compile costs seconds on CPU)
        graphdef, params = nnx.split(shard_init(lambda: make_model(0), mesh, axis_rules))
    else:  # the reference's params, placed by the rules
        graphdef, params = _reference()[:2]
        params = jax.device_put(params, state_shardings(params, mesh, axis_rules))
    param_sh = state_shardings(params, mesh, axis_rules)
    opt_sh = state_shardings(jax.eval_shape(TX.init, params), mesh, axis_rules)
    opt_state = jax.jit(TX.init, out_shardings=opt_sh)(params)
    step = jit_train_step(
        make_step(graphdef),
        in_shardings=(param_sh, opt_sh, batch_sharding(mesh)),
        out_shardings=(param_sh, opt_sh, None),
        donate_argnums=(0, 1),
    )
    batch = shard_batch(_reference()[2], mesh)
    born = [
        (path, x.sharding, x.ndim)
        for path, x in jax.tree_util.tree_leaves_with_path((params, opt_state))
    ]
    init_values = jax.device_get(params)
    compiled = step.lower(params, opt_state, batch).compile()
    arg_bytes = compiled.memory_analysis().argument_size_in_bytes
    expected = sum(
        math.prod(x.sharding.shard_shape(x.shape)) * x.dtype.itemsize
        for x in jax.tree.leaves((params, opt_state, batch))
    )
    new_params, new_opt, loss = compiled(params, opt_state, batch)
    out_sh = [
        (p, x.sharding, x.ndim)
        for p, x in jax.tree_util.tree_leaves_with_path((new_params, new_opt))
    ]
    return {
        "mesh": mesh,
        "shardings": born + out_sh,
        "count_sharding": opt_state[0].count.sharding,
        "init": init_values,
        "out": jax.device_get((new_params, new_opt, loss)),
        "bytes": (arg_bytes, expected),
    }


def _assert_close(actual, expected, what: str) -> None:
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected), strict=False
    ):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=RTOL, atol=ATOL, err_msg=f"{what}{path}"
        )


@pytest.mark.parametrize("case", list(CASES))
def test_step_matches_single_device(case: str) -> None:
    _, ref_params, _, (ref_new, ref_opt, ref_loss) = _reference()
    run = _run(case)
    new_params, new_opt, loss = run["out"]
    _assert_close(run["init"], ref_params, "init ")  # shard_init creates the same numbers
    assert abs(float(loss) - float(ref_loss)) <= RTOL * abs(float(ref_loss))
    _assert_close(new_params, ref_new, "params ")
    _assert_close(new_opt, ref_opt, "opt_state ")
    # the step moved the params (the comparison is not vacuous)
    moved = [
        np.abs(a - b).max()
        for a, b in zip(jax.tree.leaves(ref_new), jax.tree.leaves(ref_params), strict=False)
    ]
    assert min(moved) > 1e-4


@pytest.mark.parametrize("case", list(CASES))
def test_param_and_opt_state_shardings_follow_rules(case: str) -> None:
    _, _, want = CASES[case]
    run = _run(case)
    seen = set()
    # params and Adam's mu/nu, as created and as returned by the step
    for path, sharding, ndim in run["shardings"]:
        name = _leaf_name(path)
        if name == "count":
            continue
        spec = want.get(name, P())
        assert sharding.is_equivalent_to(NamedSharding(run["mesh"], spec), ndim), (path, sharding)
        seen.add(name)
    assert set(want) <= seen
    assert run["count_sharding"].is_fully_replicated  # Adam's step count


def test_fsdp_memory_shrinks() -> None:
    dp_bytes, dp_expected = _run("dp8")["bytes"]
    fsdp_bytes, fsdp_expected = _run("fsdp8")["bytes"]
    tp_bytes, _ = _run("fsdp4_tp2")["bytes"]
    # the compiled per-device argument size is what the shardings say
    assert dp_bytes == pytest.approx(dp_expected, rel=0.05)
    assert fsdp_bytes == pytest.approx(fsdp_expected, rel=0.05)
    # params + Adam state are ~all split 8 ways under FSDP=8 (norm scales and the step count
    # stay replicated), so a device holds well under a quarter of the data-parallel amount
    assert fsdp_bytes < dp_bytes / 4
    assert tp_bytes < dp_bytes / 4


def test_jit_train_step_validates_argnums() -> None:
    with pytest.raises(ValueError, match="donate_argnums"):
        jit_train_step(lambda x: x, None, None, donate_argnums=(-1,))
    with pytest.raises(ValueError, match="both donated and static"):
        jit_train_step(lambda x, n: x, None, None, donate_argnums=0, static_argnums=0)
    f = jit_train_step(lambda x, n: x * n, None, None, static_argnums=1)
    assert float(f(np.float32(2.0), 3)) == 6.0
