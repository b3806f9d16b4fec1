"""GPT-2 / LLaMA decoder behaviour: masking, padding, grads, scan/remat equivalence, limits."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec

from tjx import nn as tnn
from tjx_nn_tests._helpers import build, gpt2_tiny, llama_tiny, param_grads

RS = np.random.RandomState(0)


@pytest.fixture(scope="module")
def gpt2():
    return build(gpt2_tiny())


@pytest.fixture(scope="module")
def llama():
    return build(llama_tiny(tie_embeddings=True))


def _toks(b=2, s=8, seed=0):
    return jnp.asarray(np.random.RandomState(seed).randint(0, 64, (b, s)), jnp.int32)


def test_forward_shapes_hidden_and_unembedding(gpt2, llama):
    toks = _toks()
    for model in (gpt2, llama):
        logits = model(toks)
        hidden = model(toks, return_hidden=True)
        assert logits.shape == (2, 8, 64) and logits.dtype == jnp.float32
        assert hidden.shape == (2, 8, 32)
        np.testing.assert_allclose(logits, hidden @ model.unembedding(), rtol=1e-4, atol=1e-5)
        assert model.unembedding().shape == (32, 64)
    untied = build(llama_tiny())
    assert untied.head is not None and untied.unembedding().shape == (32, 64)
    np.testing.assert_allclose(
        untied(toks),
        untied(toks, return_hidden=True) @ untied.unembedding(),
        rtol=1e-4,
        atol=1e-5,
    )


def test_every_param_has_logical_axis_names(gpt2):
    specs = nnx.get_partition_spec(nnx.state(gpt2, nnx.Param))
    allowed = set(tnn.LOGICAL_AXES) | {None}
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert leaves and all(isinstance(p, PartitionSpec) and len(p) > 0 for p in leaves)
    assert all(set(p) <= allowed for p in leaves)
    flat = {".".join(map(str, k)): v for k, v in nnx.to_flat_state(nnx.state(gpt2, nnx.Param))}
    assert flat["embed.embedding"].get_metadata()["out_sharding"] == ("vocab", "embed")
    assert flat["stack.layers.0.mlp.fc_in.kernel"].get_metadata()["out_sharding"] == (
        "embed",
        "mlp",
    )


def test_causal_masking_future_tokens_do_not_change_past(gpt2, llama):
    toks = _toks(1, 10)
    changed = toks.at[0, 6].set((toks[0, 6] + 1) % 64)
    for model in (gpt2, llama):
        a, b = model(toks), model(changed)
        np.testing.assert_allclose(a[:, :6], b[:, :6], rtol=1e-5, atol=1e-6)
        assert not np.allclose(a[:, 6:], b[:, 6:])


def test_packed_segments_equal_separate_runs_and_padding(llama):
    a, b = _toks(1, 5, 1), _toks(1, 3, 2)
    packed = jnp.concatenate([a, b], axis=1)
    seg = jnp.asarray([[1] * 5 + [2] * 3], jnp.int32)
    pos = jnp.asarray([list(range(5)) + list(range(3))], jnp.int32)
    out = llama(packed, segment_ids=seg, positions=pos)
    np.testing.assert_allclose(out[:, :5], llama(a), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[:, 5:], llama(b), rtol=1e-4, atol=1e-5)
    # Right padding (segment id 0) leaves real positions unchanged and stays finite.
    padded = jnp.concatenate([a, jnp.zeros((1, 3), jnp.int32)], axis=1)
    seg = jnp.asarray([[1] * 5 + [0] * 3], jnp.int32)
    out = llama(padded, segment_ids=seg)
    assert bool(jnp.all(jnp.isfinite(out)))
    np.testing.assert_allclose(out[:, :5], llama(a), rtol=1e-4, atol=1e-5)


def test_grads_finite_and_reach_every_param(gpt2):
    toks = _toks()
    grads = param_grads(gpt2, lambda m: jnp.mean(m(toks) ** 2))
    assert len(grads) == len(tnn.get_flat_params(gpt2))
    for name, g in grads.items():
        assert np.all(np.isfinite(g)), name
        assert np.any(g != 0), f"no gradient reaches {name}"


def test_determinism_and_seed_dependence():
    cfg = gpt2_tiny(num_layers=1)
    a, b, c = build(cfg, 3), build(cfg, 3), build(cfg, 4)
    fa, fb, fc = tnn.get_flat_params(a), tnn.get_flat_params(b), tnn.get_flat_params(c)
    assert all(np.array_equal(fa[k], fb[k]) for k in fa)
    assert not np.array_equal(fa["embed.embedding"], fc["embed.embedding"])


def test_dropout_uses_explicit_rngs():
    model = build(gpt2_tiny(num_layers=1, dropout=0.3, attention=tnn.AttentionConfig(dropout=0.1)))
    toks = _toks()
    det = model(toks)
    np.testing.assert_allclose(det, model(toks))  # deterministic by default
    x1 = model(toks, deterministic=False, rngs=nnx.Rngs(dropout=7))
    x2 = model(toks, deterministic=False, rngs=nnx.Rngs(dropout=7))
    x3 = model(toks, deterministic=False)  # the model's own dropout stream
    np.testing.assert_allclose(x1, x2)
    assert not np.allclose(x1, det) and not np.allclose(x3, det)
    # The whole state (dropout RNG included) still yields partition specs for tjx-parallel.
    specs = jax.tree.leaves(
        nnx.get_partition_spec(nnx.state(model)), is_leaf=lambda x: isinstance(x, PartitionSpec)
    )
    assert PartitionSpec() in specs and PartitionSpec("vocab", "embed") in specs


def test_batch_one_length_one_and_too_long(gpt2):
    assert gpt2(jnp.asarray([[5]], jnp.int32)).shape == (1, 1, 64)
    with pytest.raises(ValueError, match="max_seq_len=16"):
        gpt2(jnp.zeros((1, 17), jnp.int32))


def _loss_and_grads(model, toks):
    def loss(m):
        return jnp.mean(jax.nn.log_softmax(m(toks))[..., 0])

    return nnx.jit(nnx.value_and_grad(loss))(model)


def test_scanned_and_rematted_match_unrolled():
    toks = _toks()
    ref_model = build(llama_tiny())
    ref_loss, ref_grads = _loss_and_grads(ref_model, toks)
    ref_flat = tnn.get_flat_params(ref_model)
    ref_g = {
        ".".join(map(str, k)): np.asarray(v.get_value()) for k, v in nnx.to_flat_state(ref_grads)
    }
    for kw in (
        dict(scan_layers=True),
        dict(remat="full"),
        dict(scan_layers=True, remat="save_dots"),
        dict(remat="save_attention_output"),
    ):
        model = build(llama_tiny(**kw), seed=9)
        tnn.set_flat_params(model, ref_flat)  # same weights, stacked when scanned
        loss, grads = _loss_and_grads(model, toks)
        np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
        model_g = nnx.State(grads)
        tmp = build(llama_tiny(**kw), seed=9)
        nnx.update(tmp, model_g)
        flat_g = tnn.get_flat_params(tmp)
        assert set(flat_g) == set(ref_g)
        for name in ref_g:
            np.testing.assert_allclose(
                flat_g[name], ref_g[name], rtol=1e-4, atol=1e-6, err_msg=f"{kw} {name}"
            )


def test_scanned_params_carry_layers_axis():
    model = build(gpt2_tiny(scan_layers=True))
    specs = nnx.get_partition_spec(nnx.state(model.stack, nnx.Param))
    leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, PartitionSpec))
    assert all(p[0] == "layers" for p in leaves)
    assert model.stack.layers.attn.query.kernel.get_value().shape == (2, 32, 4, 8)
    with pytest.raises(ValueError, match="remat"):
        tnn.remat_policy("bogus")


def test_deep_pre_ln_grad_norm_bounded_at_init():
    cfg = gpt2_tiny(d_model=16, num_heads=2, num_layers=48, scan_layers=True)
    model = build(cfg)
    toks = _toks()

    def loss(m):
        logits = m(toks)
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), toks[..., None], -1))

    value, grads = nnx.jit(nnx.value_and_grad(loss))(model)
    norm = float(jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads))))
    assert np.isfinite(float(value)) and abs(float(value) - np.log(64)) < 0.5
    assert 0 < norm < 10.0


def test_gpt2_scaled_residual_init():
    cfg = gpt2_tiny(num_layers=8, init=tnn.InitConfig(std=0.02))
    assert tnn.residual_std(cfg, 8) == pytest.approx(0.02 / 4)
    assert tnn.residual_std(llama_tiny(), 8) == pytest.approx(0.02)
    model = build(gpt2_tiny(d_model=64, mlp=tnn.MLPConfig(dim=512), num_layers=8, num_heads=4))
    std = float(np.std(np.asarray(model.stack.layers[0].mlp.fc_out.kernel.get_value())))
    assert std == pytest.approx(0.005, rel=0.1)


def test_finite_differences_float64():
    jax.config.update("jax_enable_x64", True)
    try:
        cfg = llama_tiny(
            d_model=8,
            num_heads=2,
            num_kv_heads=1,
            num_layers=1,
            mlp=tnn.MLPConfig(dim=8),
            vocab_size=11,
            precision=tnn.Precision(jnp.float64, jnp.float64),
        )
        model = build(cfg)
        toks = jnp.asarray([[1, 4, 2, 9]], jnp.int32)
        graphdef, params = nnx.split(model, nnx.Param)

        def loss(p):
            m = nnx.merge(graphdef, p)
            return jnp.sum(jnp.sin(m(toks).astype(jnp.float64)))

        grads = jax.jit(jax.grad(loss))(params)  # one compile (eagerly: every op on its own)
        loss = jax.jit(loss)
        leaves, treedef = jax.tree.flatten(params)
        g_leaves = jax.tree.leaves(grads)
        rng = np.random.RandomState(0)
        for i in range(len(leaves)):
            arr = np.asarray(leaves[i], np.float64)
            assert arr.dtype == np.float64
            idx = tuple(rng.randint(0, n) for n in arr.shape)
            eps = 1e-6
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += eps
            minus[idx] -= eps
            lp = loss(
                jax.tree.unflatten(treedef, [*leaves[:i], jnp.asarray(plus), *leaves[i + 1 :]])
            )
            lm = loss(
                jax.tree.unflatten(treedef, [*leaves[:i], jnp.asarray(minus), *leaves[i + 1 :]])
            )
            fd = (float(lp) - float(lm)) / (2 * eps)
            assert np.asarray(g_leaves[i])[idx] == pytest.approx(fd, rel=1e-5, abs=1e-8)
    finally:
        jax.config.update("jax_enable_x64", False)


def test_bf16_compute_keeps_f32_params_and_logits():
    model = build(gpt2_tiny(num_layers=1, precision="bf16"))
    assert model.embed.embedding.get_value().dtype == jnp.float32
    out = model(_toks())
    assert out.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(out)))
    assert model(_toks(), return_hidden=True).dtype == jnp.bfloat16


@pytest.mark.parametrize("position", ["sinusoidal", "alibi", "none"])
def test_other_positions_run_and_stay_causal(position):
    model = build(gpt2_tiny(num_layers=1, position=tnn.PositionConfig(kind=position)))
    toks = _toks(1, 6)
    a = model(toks)
    b = model(toks.at[0, 4].set((toks[0, 4] + 1) % 64))
    np.testing.assert_allclose(a[:, :4], b[:, :4], rtol=1e-5, atol=1e-6)


def test_pallas_attention_impl_matches_xla():
    """The kernel is a config switch: Pallas flash (interpreted on CPU) gives the XLA result."""
    toks = _toks(1, 8)
    seg = jnp.asarray([[1] * 5 + [2] * 3], jnp.int32)
    ref = build(llama_tiny(num_layers=1, attention_impl="xla"), seed=5)
    fast = build(llama_tiny(num_layers=1, attention_impl="pallas"), seed=5)
    ref_loss, ref_grads = _loss_and_grads(ref, toks)
    loss, grads = _loss_and_grads(fast, toks)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        fast(toks, segment_ids=seg), ref(toks, segment_ids=seg), rtol=1e-4, atol=1e-5
    )
