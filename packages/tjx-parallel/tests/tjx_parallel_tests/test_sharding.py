"""logical_specs / logical_to_sharding / state_shardings / shard_init / batches."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax import P
from jax.sharding import NamedSharding

from tjx.parallel import (
    MeshConfig,
    batch_sharding,
    host_local_to_global,
    logical_specs,
    logical_to_sharding,
    make_mesh,
    place_batch,
    rules,
    shard_batch,
    shard_init,
    shard_opt_init,
    state_shardings,
    with_logical_constraint,
)


@pytest.fixture(scope="module")
def mesh():
    return make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))


class Mlp(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        init = nnx.initializers.normal(0.5)
        self.up = nnx.Linear(
            8, 6, kernel_init=nnx.with_partitioning(init, ("embed", "mlp")), rngs=rngs
        )
        self.head = nnx.Linear(
            6, 5, kernel_init=nnx.with_partitioning(init, ("mlp", "vocab")), rngs=rngs
        )


def _specs(tree):
    return jax.tree.map(lambda s: s.spec, tree, is_leaf=lambda x: isinstance(x, NamedSharding))


def test_logical_specs_of_variables_arrays_and_specs() -> None:
    with nnx.use_eager_sharding(False):
        state = nnx.state(Mlp(nnx.Rngs(0)))
    specs = logical_specs(state)
    assert specs["up"]["kernel"].get_value() == P("embed", "mlp")
    assert specs["up"]["bias"].get_value() == P()  # unannotated → replicated
    # what nnx.get_partition_spec returns is understood as is
    assert logical_specs(nnx.get_partition_spec(state))["head"]["kernel"].get_value() == P(
        "mlp", "vocab"
    )
    assert logical_specs({"a": np.ones(3), "b": P("embed")}) == {"a": P(), "b": P("embed")}


def test_logical_to_sharding_keeps_wrappers_and_checks_divisibility(mesh) -> None:
    with nnx.use_eager_sharding(False):
        state = nnx.state(Mlp(nnx.Rngs(0)))
    specs = nnx.get_partition_spec(state)
    r = rules("fsdp_tp")
    plain = logical_to_sharding(specs, mesh, r)
    assert plain["head"]["kernel"].get_value().spec == P("tensor")  # vocab dropped: tensor used
    assert plain["up"]["kernel"].get_value().spec == P("fsdp", "tensor")
    with pytest.warns(UserWarning, match="size 5 is not divisible"):
        checked = logical_to_sharding(specs, mesh, r.replace(vocab="data"), shapes=state)
    assert checked["head"]["kernel"].get_value().spec == P("tensor")  # 5 rows can't split over data


def test_state_shardings_plain_pytree_with_param_specs(mesh) -> None:
    r = rules("fsdp_tp")
    key = jax.random.key(0)
    params = {"w": jax.random.normal(key, (8, 6)), "b": jnp.ones(6), "s": jnp.ones(())}
    param_specs = {"w": P("embed", "mlp"), "b": P("mlp"), "s": P()}
    opt_state = optax.adamw(1e-3).init(params)
    state = {"params": params, "opt": opt_state, "step": jnp.zeros((), jnp.int32)}
    sh = state_shardings(state, mesh, r, param_specs=param_specs)
    want = {"w": P("fsdp", "tensor"), "b": P("tensor"), "s": P()}
    assert _specs(sh["params"]) == want
    assert _specs(sh["opt"][0].mu) == want and _specs(sh["opt"][0].nu) == want
    assert sh["opt"][0].count.spec == P() and sh["step"].spec == P()
    # without param_specs a plain tree has no names: everything replicated
    assert all(s.spec == P() for s in jax.tree.leaves(state_shardings(state, mesh, r)))
    placed = jax.device_put(state, sh)
    assert placed["opt"][0].mu["w"].sharding.spec == P("fsdp", "tensor")


def test_state_shardings_nnx_opt_state_inherits_metadata(mesh) -> None:
    with nnx.use_eager_sharding(False):
        params = nnx.state(Mlp(nnx.Rngs(0)), nnx.Param)
    opt_state = jax.eval_shape(optax.adam(1e-3).init, params)
    by_metadata = state_shardings(opt_state, mesh, rules("fsdp"))
    by_specs = state_shardings(
        opt_state, mesh, rules("fsdp"), param_specs=nnx.get_partition_spec(params)
    )
    for sh in (by_metadata, by_specs):
        assert sh[0].mu["up"]["kernel"].get_value().spec == P("fsdp")
        assert sh[0].nu["head"]["kernel"].get_value().spec == P()


def test_shard_init_plain_and_flax_eager_sharding(mesh) -> None:
    r = rules("fsdp_tp")

    def create():
        key = jax.random.key(3)
        return {"w": jax.random.normal(key, (8, 4)), "n": jnp.arange(4.0)}

    params = shard_init(create, mesh, r)  # plain tree: nothing named, all replicated
    np.testing.assert_array_equal(np.asarray(params["w"]), np.asarray(create()["w"]))
    assert params["w"].sharding.is_fully_replicated

    # flax's eager sharding (default on): it needs the rules as flax pairs (the mesh is set by
    # shard_init); flax applies them itself, without our reuse/divisibility handling, so the
    # head's (mlp, vocab) may not both map to tensor here
    r = r.replace(vocab=None)
    with nnx.logical_axis_rules(r.flax_rules()):
        model = shard_init(lambda: Mlp(nnx.Rngs(1)), mesh, r)
    kernel = model.up.kernel.get_value()
    assert kernel.sharding.spec == P("fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (4, 3)  # never whole on one device
    with nnx.use_eager_sharding(False):
        ref = Mlp(nnx.Rngs(1))
    np.testing.assert_allclose(np.asarray(kernel), np.asarray(ref.up.kernel.get_value()))


def _compiles(fn):
    """(fn(), the names of the XLA programs compiled while it ran)."""
    names: list[str] = []

    def listen(event: str, duration: float, **kwargs: object) -> None:
        if event == "/jax/core/compile/backend_compile_duration":
            names.append(str(kwargs.get("fun_name", "")))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        return fn(), names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def test_shard_init_on_one_device_is_one_program_of_the_eager_numbers() -> None:
    """One device: one compiled program (not one per initializer and shape), placed with the
    mesh's shardings, and the numbers the same calls draw eagerly, bit for bit (fresh seed).
    A scale after the draw's own is kept apart by a barrier (tjx.nn's initializers do so);
    without one XLA folds the two into one constant (the last check)."""
    axes = ("data", "fsdp", "tensor")
    one = jax.sharding.Mesh(np.array(jax.devices()[:1]).reshape(1, 1, 1), axes)
    seed = int(np.random.default_rng().integers(0, 2**30))

    def draws(barrier):
        def create():
            k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
            scale = jnp.array(0.3, jnp.float32)
            return {
                "normal": jax.random.normal(k1, (16, 8)),
                "scaled": barrier(jax.random.normal(k2, (32, 32))) * scale,
                "uniform": jax.random.uniform(k3, (4, 8), minval=-0.25, maxval=0.25),
                "zeros": jnp.zeros((3,)),
            }

        return create

    def apart(x):
        return jax.lax.optimization_barrier(x) if isinstance(x, jax.core.Tracer) else x

    create = draws(apart)
    placed, names = _compiles(lambda: shard_init(create, one, rules("fsdp_tp")))
    assert names == ["jit(create)"], names
    eager = create()
    for key, got in placed.items():
        assert isinstance(got.sharding, NamedSharding) and got.sharding.mesh == one
        want = np.asarray(eager[key])
        assert np.asarray(got).tobytes() == want.tobytes(), key
    folded = np.asarray(shard_init(draws(lambda x: x), one, rules("fsdp_tp"))["scaled"])
    assert folded.tobytes() != np.asarray(eager["scaled"]).tobytes()
    np.testing.assert_allclose(folded, np.asarray(eager["scaled"]), rtol=1e-6)


def test_shard_init_takes_arguments_and_the_params_specs(mesh) -> None:
    """A train state of plain dicts: its params are an argument (weights read elsewhere), its
    optimizer slots are sharded like them by ``param_specs``, and the values pass through."""
    r = rules("fsdp_tp")
    params = {"up": jnp.arange(48.0).reshape(8, 6), "bias": jnp.ones((6,))}
    specs = {"up": P("embed", "mlp"), "bias": P()}
    tx = optax.adam(1e-3)

    def create(p):
        return {"params": p, "opt_state": tx.init(p), "step": jnp.zeros((), jnp.int32)}

    state = shard_init(create, mesh, r, params, param_specs=specs)
    np.testing.assert_array_equal(np.asarray(state["params"]["up"]), np.asarray(params["up"]))
    assert state["params"]["up"].sharding.spec == P("fsdp", "tensor")
    assert state["opt_state"][0].mu["up"].sharding.spec == P("fsdp", "tensor")
    assert state["step"].sharding.is_fully_replicated
    # Donated: the weights' buffers are the program's to reuse for arrays of their shape (XLA
    # picks which), and one it cannot reuse (here: only concatenated) is freed without a warning.
    placed = jax.device_put(params, state_shardings(params, mesh, r, param_specs=specs))

    def joined(p):
        return {**create(p), "joined": jnp.concatenate([p["bias"], p["bias"]])}

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = shard_init(joined, mesh, r, placed, param_specs=specs, donate=True)
    assert placed["up"].is_deleted() and placed["bias"].is_deleted()
    np.testing.assert_array_equal(np.asarray(again["params"]["up"]), np.asarray(params["up"]))


def test_a_trace_in_init_scope_is_the_one_shard_init_uses(mesh) -> None:
    """A caller that traces the creator first (to read what it builds) in `init_scope` traces it
    only once: shard_init's eval_shape and jit reuse that trace."""
    from tjx.parallel import init_scope

    traced: list[int] = []

    def create(x):
        traced.append(1)
        return {"w": x * 2.0}

    x = jnp.arange(8.0)
    with init_scope(mesh):
        jax.eval_shape(create, x)
    out = shard_init(create, mesh, rules("fsdp_tp"), x)
    np.testing.assert_array_equal(np.asarray(out["w"]), np.arange(8.0) * 2.0)
    assert len(traced) == 1


class _Device:
    def __init__(self, platform: str) -> None:
        self.platform = platform


class _Mesh:
    def __init__(self, platform: str, count: int) -> None:
        self.devices = np.array([_Device(platform) for _ in range(count)])


def test_init_settings_by_platform() -> None:
    """A GPU compiles the init without multi-output fusion, and one GPU draws with JAX's
    Threefry kernel (several keep XLA's hash, which their partitioner splits); a CPU or TPU
    as XLA does by default. The kernel switch is JAX's, restored after the program."""
    from tjx.parallel.sharding import _threefry_kernel, init_settings

    gpu = {"xla_disable_hlo_passes": "multi_output_fusion"}
    assert init_settings(_Mesh("gpu", 1)) == (gpu, True)
    assert init_settings(_Mesh("cuda", 1)) == (gpu, True)  # an abstract (deviceless) H100
    assert init_settings(_Mesh("gpu", 8)) == (gpu, False)
    assert init_settings(_Mesh("cpu", 1)) == ({}, False)
    assert init_settings(_Mesh("tpu", 4)) == ({}, False)
    name = "jax_threefry_gpu_kernel_lowering"
    before = getattr(jax.config, name)
    with pytest.raises(RuntimeError), _threefry_kernel(not before):
        assert getattr(jax.config, name) is (not before)
        raise RuntimeError("the program failed")
    assert getattr(jax.config, name) is before


def test_a_jax_without_the_threefry_kernel_switch_draws_as_xla_does(monkeypatch) -> None:
    from tjx.parallel import sharding

    monkeypatch.setattr(sharding, "THREEFRY_KERNEL_SWITCH", "jax_no_such_switch")
    with sharding._threefry_kernel(True):  # nothing to set: no error
        pass


def test_shard_batch_and_host_local_to_global(mesh) -> None:
    rng = np.random.default_rng(0)
    batch = {"inputs": rng.integers(0, 9, (8, 3)).astype(np.int32), "scale": np.float32(2.0)}
    placed = shard_batch(batch, mesh)
    assert placed["inputs"].sharding.spec == P(("data", "fsdp", "expert"))
    assert placed["inputs"].addressable_shards[0].data.shape == (2, 3)
    assert placed["scale"].sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(placed["inputs"]), batch["inputs"])
    glob = host_local_to_global({"inputs": batch["inputs"]}, mesh)  # one process: local = global
    assert glob["inputs"].sharding == batch_sharding(mesh, 2)
    np.testing.assert_array_equal(np.asarray(glob["inputs"]), batch["inputs"])
    with pytest.raises(
        ValueError, match=r"\['inputs'\].*6 is not divisible by data×fsdp×expert = 4"
    ):
        shard_batch({"inputs": np.zeros((6, 2))}, mesh)
    with pytest.raises(ValueError, match="6 is not divisible"):
        host_local_to_global({"inputs": np.zeros((6, 2))}, mesh)
    with pytest.raises(ValueError, match="is a scalar"):
        host_local_to_global({"n": np.float32(1)}, mesh)


def test_with_logical_constraint_inside_jit(mesh) -> None:
    r = rules("fsdp_tp")
    x = jnp.asarray(np.random.default_rng(1).normal(size=(4, 3, 6)), jnp.float32)
    f = jax.jit(lambda a: with_logical_constraint(a * 2, P("batch", "length", "mlp"), mesh, r))
    y = f(x)
    assert y.sharding.spec == P(("data", "fsdp"), None, "tensor")
    np.testing.assert_allclose(np.asarray(y), 2 * np.asarray(x))


def test_place_batch_one_process_or_many(mesh, monkeypatch) -> None:
    import tjx.parallel.batches as batches

    rng = np.random.default_rng(5)
    batch = {"inputs": rng.integers(0, 99, (8, 5)).astype(np.int32), "scale": np.float32(0.5)}
    placed = place_batch(batch, mesh)  # one process: the global batch, scalars replicated
    assert placed["inputs"].sharding == batch_sharding(mesh, 2)
    assert placed["scale"].sharding.is_fully_replicated
    np.testing.assert_array_equal(np.asarray(placed["inputs"]), batch["inputs"])
    with pytest.raises(ValueError, match="6 is not divisible"):
        place_batch({"inputs": np.zeros((6, 2))}, mesh)
    calls = []
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(batches, "host_local_to_global", lambda b, m: calls.append((b, m)) or b)
    assert place_batch(batch, mesh) is batch and calls == [(batch, mesh)]


@pytest.mark.parametrize("strategy", ["fsdp", "fsdp_tp"])
def test_shard_opt_init_slots_are_sharded_like_their_params(mesh, strategy) -> None:
    r = rules(strategy)
    with nnx.use_eager_sharding(False):
        model = Mlp(nnx.Rngs(0))
    placed = shard_init(lambda: nnx.state(model, nnx.Param), mesh, r)
    params = nnx.to_pure_dict(placed)
    specs = nnx.to_pure_dict(nnx.get_partition_spec(placed))
    tx = optax.adamw(1e-3)
    opt_state = shard_opt_init(tx.init, params, mesh, r, param_specs=specs)
    param_shardings = jax.tree.map(lambda x: x.sharding, params)
    assert any(s.spec != P() for s in jax.tree.leaves(param_shardings))  # something is sharded
    for slot in (opt_state[0].mu, opt_state[0].nu):
        assert jax.tree.map(lambda x: x.sharding, slot) == param_shardings
    assert opt_state[0].count.sharding == NamedSharding(mesh, P())
    # the same values as an unsharded init
    reference = tx.init(jax.tree.map(np.asarray, params))
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, opt_state), reference)
