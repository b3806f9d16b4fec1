"""reseed / concrete_state on a real model's non-parameter state and on plain trees, against
jax.random.fold_in / jax.random.key computed directly."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import nn
from tjx.nn import concrete_state, is_key, reseed


def _tiny_config() -> nn.GPT2Config:
    return nn.GPT2Config(vocab_size=32, max_seq_len=8, d_model=16, num_heads=2, num_layers=1,
                         dropout=0.1)  # fmt: skip


def test_reseed_folds_the_step_into_every_key_only():
    rng = np.random.default_rng(0)
    seeds = [int(s) for s in rng.integers(0, 2**31, 2)]
    count = rng.integers(0, 100, (3,)).astype(np.uint32)
    rest = {"a": jax.random.key(seeds[0]), "b": [jax.random.key(seeds[1]), jnp.asarray(count)]}
    step = int(rng.integers(0, 10_000))
    got = reseed(rest, jnp.asarray(step, jnp.int32))
    for key, seed in ((got["a"], seeds[0]), (got["b"][0], seeds[1])):
        want = jax.random.fold_in(jax.random.key(seed), step)
        np.testing.assert_array_equal(jax.random.key_data(key), jax.random.key_data(want))
    np.testing.assert_array_equal(np.asarray(got["b"][1]), count)  # counters untouched
    other = reseed(rest, step + 1)  # a plain int works too; another step, another key
    assert not np.array_equal(jax.random.key_data(other["a"]), jax.random.key_data(got["a"]))
    # Traceable: the same keys inside jit.
    jitted = jax.jit(reseed)(rest, jnp.asarray(step, jnp.int32))
    np.testing.assert_array_equal(jax.random.key_data(jitted["a"]), jax.random.key_data(got["a"]))


def test_is_key_tells_typed_keys_from_raw_ones():
    assert is_key(jax.random.key(1))
    assert not is_key(jax.random.PRNGKey(1))  # raw uint32 data: not reseeded
    assert not is_key(jnp.zeros(2)) and not is_key(None)


def test_concrete_state_of_an_abstract_model_merges_and_runs():
    config = _tiny_config()
    abstract = nnx.eval_shape(lambda: nn.build_model(config, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    leaves = jax.tree.leaves(rest)
    assert leaves and all(isinstance(x, jax.ShapeDtypeStruct) for x in leaves)
    concrete = concrete_state(rest, seed=4)
    for before, after in zip(leaves, jax.tree.leaves(concrete), strict=True):
        assert after.shape == before.shape and after.dtype == before.dtype
        if is_key(after):
            want = jax.random.key_data(jax.random.key(4))
            np.testing.assert_array_equal(jax.random.key_data(after), want)
        else:
            np.testing.assert_array_equal(np.asarray(after), 0)
    real = nn.build_model(config, rngs=nnx.Rngs(1))
    model = nnx.merge(graphdef, nnx.state(real, nnx.Param), concrete)
    model.eval()
    real.eval()
    tokens = jnp.asarray(np.random.default_rng(2).integers(0, 32, (2, 8)), jnp.int32)
    np.testing.assert_allclose(np.asarray(model(tokens)), np.asarray(real(tokens)), rtol=1e-6)


def test_concrete_state_keeps_concrete_leaves():
    tree = {"k": jax.random.key(9), "n": jnp.arange(3), "s": jax.ShapeDtypeStruct((2,), jnp.int32)}
    out = concrete_state(tree)
    assert out["k"] is tree["k"] and out["n"] is tree["n"]
    np.testing.assert_array_equal(np.asarray(out["s"]), np.zeros(2, np.int32))


def _bits(tree) -> list[bytes]:
    def raw(x):
        return jax.random.key_data(x) if is_key(x) else x

    return [np.asarray(raw(x)).tobytes() for x in jax.tree.leaves(tree)]


def test_a_model_built_in_one_jitted_program_is_the_eager_one_bit_for_bit():
    """Every parameter (GPT-2's normal(0.02) and scaled residual outputs; a scanned LLaMA's
    stacked layers, MoE experts and router; LoRA's uniform adapters) and the RNG streams are
    the same bits made eagerly, one program per initializer, or inside one jitted program (a
    trainer's start): XLA may not fold a draw's scale into its own (fresh seed)."""
    seed = int(np.random.default_rng().integers(0, 2**30))
    llama = nn.LlamaConfig(vocab_size=40, max_seq_len=8, d_model=16, num_layers=2, num_heads=4,
                           num_kv_heads=2, mlp=nn.MLPConfig(dim=32), scan_layers=True,
                           moe=nn.MoEConfig(num_experts=4))  # fmt: skip
    for config in (_tiny_config(), llama):

        def make(config=config):
            model = nn.build_model(config, rngs=nnx.Rngs(seed))
            nn.add_lora(model, nn.LoraConfig(rank=2, alpha=4.0), rngs=nnx.Rngs(seed + 1))
            return nnx.state(model)

        eager, jitted = make(), jax.jit(make)()
        assert jax.tree.structure(eager) == jax.tree.structure(jitted)
        assert _bits(eager) == _bits(jitted), type(config).__name__
