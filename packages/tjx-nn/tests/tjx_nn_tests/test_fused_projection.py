"""Fewer GPU launches in the backward (#51): the query/key/value projection's stacked backward and
the variadic column sums, each against float64 autodiff of the plain form on fresh inputs; and
(#68) the projection's output as one tensor through the Pallas kernel, against the three-array
path."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx import kernels
from tjx import nn as tnn
from tjx.nn.linear import column_sums, joint_projection, stacked_projection
from tjx.nn.norms import layer_norm

from ._helpers import gpt2_tiny


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def _projection_inputs(seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, 5, 6))
    kernels = tuple(rng.standard_normal((6, 3, 4)) for _ in range(3))
    biases = tuple(rng.standard_normal((3, 4)) for _ in range(3))
    cotangents = tuple(rng.standard_normal((2, 5, 3, 4)) for _ in range(3))
    return x, kernels, biases, cotangents


def _plain_projection(x, kernels, biases):
    return tuple(jnp.tensordot(x, w, axes=1) + b for w, b in zip(kernels, biases, strict=True))


def test_stacked_projection_gradients_match_float64_autodiff_of_separate_projections():
    x, kernels, biases, cts = _projection_inputs(11)
    with jax.enable_x64(True):
        args = jax.tree.map(jnp.asarray, (x, kernels, biases))
        want_y, want_vjp = jax.vjp(_plain_projection, *args)
        want = want_vjp(jax.tree.map(jnp.asarray, cts))
        got_y, got_vjp = jax.vjp(stacked_projection, *args)
        got = got_vjp(jax.tree.map(jnp.asarray, cts))
        # the same sums in float64 (only their order differs): equal to rounding
        for a, b in zip(
            jax.tree.leaves((got_y, got)), jax.tree.leaves((want_y, want)), strict=True
        ):
            assert a.shape == b.shape and _rel(a, b) < 1e-12
    # in float32 each output and gradient is float64's to float32 rounding
    f32 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), (x, kernels, biases))
    y32, vjp32 = jax.vjp(stacked_projection, *f32)
    g32 = vjp32(jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), cts))
    for a, b in zip(jax.tree.leaves((y32, g32)), jax.tree.leaves((want_y, want)), strict=True):
        assert a.dtype == jnp.float32 and _rel(a, b) < 1e-5


def test_stacked_projection_forward_is_each_projection_bitwise_in_bfloat16():
    x, kernels, biases, _ = _projection_inputs(12)
    args = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), (x, kernels, biases))
    for got, want in zip(stacked_projection(*args), _plain_projection(*args), strict=True):
        assert got.dtype == jnp.bfloat16 and np.array_equal(np.asarray(got), np.asarray(want))


def test_column_sums_are_each_arrays_sum_in_one_reduce():
    rng = np.random.default_rng(13)
    arrays = tuple(jnp.asarray(rng.standard_normal((4, 6, 5))) for _ in range(3))
    with jax.enable_x64(True):
        arrays64 = tuple(jnp.asarray(np.asarray(a, np.float64)) for a in arrays)
        for got, a in zip(column_sums(arrays64, (0, 1)), arrays64, strict=True):
            assert _rel(got, jnp.sum(a, (0, 1))) < 1e-12
    jaxpr = jax.make_jaxpr(lambda *a: column_sums(a, (0, 1)))(*arrays).jaxpr
    assert [e.primitive.name for e in jaxpr.eqns].count("reduce") == 1
    assert len(jaxpr.eqns[-1].outvars) == 3


def test_layer_norm_backward_sums_scale_and_bias_in_one_reduction():
    """The parameters' gradients of a norm with a bias come from one variadic reduce (XLA's GPU
    compiler: two kernels, against four for two sums)."""
    x = jnp.ones((2, 8, 16), jnp.float32)
    s = jnp.ones((16,), jnp.float32)
    bwd = jax.make_jaxpr(
        lambda x, s, b: jax.vjp(lambda *a: layer_norm(*a, 1e-5, jnp.float32), x, s, b)[1](x)
    )(x, s, s).jaxpr

    def row_sums(jaxpr):
        found = []
        for e in jaxpr.eqns:
            found += (
                [e]
                if e.primitive.name in ("reduce", "reduce_sum")
                and 0 in e.params.get("axes", e.params.get("dimensions", ()))
                else []
            )
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                found += row_sums(sub)
        return found

    sums = row_sums(bwd)
    assert len(sums) == 1 and len(sums[0].outvars) == 2


def _gpt2_attention():
    cfg = tnn.GPT2Config(vocab_size=8, max_seq_len=8, d_model=16, num_layers=1, num_heads=4)
    return tnn.Attention(cfg, rngs=nnx.Rngs(0), causal=True), cfg


def test_gpt2_attention_takes_the_stacked_projection_and_matches_separate_dense_calls(
    monkeypatch,
):
    attn, _ = _gpt2_attention()
    rng = np.random.default_rng(14)
    for p in (attn.query, attn.key, attn.value):  # non-zero biases: their gradients matter
        p.bias.set_value(jnp.asarray(rng.standard_normal(p.bias.shape), jnp.float32))
    x = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    ct = jnp.asarray(rng.standard_normal((2, 5, 16)), jnp.float32)
    graph, state = nnx.split(attn)

    def run(x, state):
        return nnx.merge(graph, state)(x)[0]

    assert attn._fused_qkv(x) is not None  # GPT-2's projections are alike: the stacked path
    y, vjp = jax.vjp(run, x, state)
    got = vjp(ct)
    monkeypatch.setattr(tnn.Attention, "_fused_qkv", lambda self, x: None)
    y_ref, vjp_ref = jax.vjp(run, x, state)
    want = vjp_ref(ct)
    assert np.array_equal(np.asarray(y), np.asarray(y_ref))  # the forward is the same arithmetic
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        assert _rel(a, b) < 1e-5  # float32 products summed in another order


def test_projections_that_differ_take_their_own_dense_calls():
    llama = tnn.LlamaConfig(vocab_size=8, max_seq_len=8, d_model=16, num_layers=1, num_heads=4,
                            num_kv_heads=2)  # fmt: skip
    gqa = tnn.Attention(llama, rngs=nnx.Rngs(0), causal=True)
    x = jnp.ones((1, 3, 16), jnp.float32)
    assert gqa._fused_qkv(x) is None  # grouped keys/values, no biases
    attn, _ = _gpt2_attention()
    tnn.add_lora(attn, tnn.LoraConfig(rank=2, targets=("q",)), rngs=nnx.Rngs(1))
    assert attn._fused_qkv(x) is None  # an adapter on the query only


# -- q/k/v as one tensor through the attention kernel (#68) ------------------------------------


def test_joint_projection_is_the_stacked_projection_as_one_array():
    """Its forward is `stacked_projection`'s outputs stacked (bitwise, bfloat16); its gradients,
    taken from the stacked cotangent as it is, equal float64 autodiff of the separate
    projections to rounding."""
    x, kernels, biases, cts = _projection_inputs(15)
    bf16 = jax.tree.map(lambda a: jnp.asarray(a, jnp.bfloat16), (x, kernels, biases))
    want = jnp.stack(stacked_projection(*bf16), axis=2)
    assert np.array_equal(np.asarray(joint_projection(*bf16)), np.asarray(want))
    with jax.enable_x64(True):
        args = jax.tree.map(jnp.asarray, (x, kernels, biases))
        want_y, want_vjp = jax.vjp(_plain_projection, *args)
        want_g = want_vjp(jax.tree.map(jnp.asarray, cts))
        got_y, got_vjp = jax.vjp(joint_projection, *args)
        assert got_y.shape == (2, 5, 3, 3, 4)
        got_g = got_vjp(jnp.stack([jnp.asarray(c) for c in cts], axis=2))
        assert _rel(got_y, jnp.stack(want_y, axis=2)) < 1e-12
        for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g), strict=True):
            assert a.shape == b.shape and _rel(a, b) < 1e-12
        # Without biases (its consumer adds them): one product with the kernels side by side.
        unbiased = [y - b for y, b in zip(want_y, args[2], strict=True)]
        got_y, got_vjp = jax.vjp(lambda x, k: joint_projection(x, k, ()), *args[:2])
        assert _rel(got_y, jnp.stack(unbiased, axis=2)) < 1e-12
        got_g = got_vjp(jnp.stack([jnp.asarray(c) for c in cts], axis=2))
        for a, b in zip(jax.tree.leaves(got_g), jax.tree.leaves(want_g[:2]), strict=True):
            assert a.shape == b.shape and _rel(a, b) < 1e-12


def _pallas_gpt2(**kw):
    cfg = tnn.make_config(
        tnn.GPT2Config,
        {
            "vocab_size": 8,
            "max_seq_len": 16,
            "d_model": 32,
            "num_layers": 1,
            "num_heads": 4,
            "attention_impl": "pallas",
            "precision": "bf16",
            **kw,
        },
    )
    attn = tnn.Attention(cfg, rngs=nnx.Rngs(0), causal=True)
    rng = np.random.default_rng(16)
    for p in (attn.query, attn.key, attn.value):  # non-zero biases: their gradients matter
        p.bias.set_value(jnp.asarray(rng.standard_normal(p.bias.shape), jnp.float32))
    return attn


def _shapes(jaxpr):
    for e in jaxpr.eqns:
        yield e
        for sub in jax.extend.core.jaxprs_in_params(e.params):
            yield from _shapes(sub)


def test_gpt2_attention_with_pallas_reads_qkv_as_one_tensor_and_matches_the_three_arrays():
    """GPT-2's block with the Pallas kernel (interpret mode, bfloat16 compute: the stacked
    path's tiles): the projection's output reaches the kernel whole (its biases added as the
    kernel reads it) and the backward writes no [b, s, 3, h, d] concatenation; its output, dx
    and the kernels' gradients are the three-array path's bitwise (the same kernels and
    products on the same values), the biases' to float32 rounding of their sums."""
    attn = _pallas_gpt2()
    assert attn.stacked_qkv and attn.kernel == kernels.AttentionKernel.PALLAS
    rng = np.random.default_rng(17)
    x = jnp.asarray(rng.standard_normal((2, 12, 32)), jnp.bfloat16)
    ct = jnp.asarray(rng.standard_normal((2, 12, 32)), jnp.bfloat16)
    ids = jnp.asarray([[1] * 8 + [2] * 4, [1] * 10 + [0] * 2], jnp.int32)
    graph, state = nnx.split(attn)

    def grads(graph):
        def run(x, state):
            return nnx.merge(graph, state)(x, mask=kernels.AttentionMask(segment_ids=ids))[0]

        y, vjp = jax.vjp(run, x, state)
        return y, vjp(ct), jax.make_jaxpr(lambda x, s: jax.vjp(run, x, s)[1](ct))(x, state).jaxpr

    y, got, jaxpr = grads(graph)
    names = {e.params.get("name") for e in _shapes(jaxpr) if e.primitive.name == "pallas_call"}
    assert names == {"tjx_flash_qkv_fwd", "tjx_flash_qkv_bwd_dkdv", "tjx_flash_qkv_bwd_dq"}
    stacked = (2, 12, 3, 4, 8)
    joins = [
        e for e in _shapes(jaxpr)
        if e.primitive.name == "concatenate" and e.outvars[0].aval.shape == stacked
    ]  # fmt: skip
    assert not joins
    attn.stacked_qkv = False  # the three-array path, on the same parameters
    y_ref, want, jaxpr_ref = grads(nnx.split(attn)[0])
    names = {e.params.get("name") for e in _shapes(jaxpr_ref) if e.primitive.name == "pallas_call"}
    assert "tjx_flash_fwd" in names  # control: it ran the separate-array kernels
    assert np.array_equal(np.asarray(y), np.asarray(y_ref))
    got_x, got_p = got
    want_x, want_p = want
    assert np.array_equal(np.asarray(got_x), np.asarray(want_x))
    # The biases' gradients: the same row sums taken in another fusion (the kernel's VJP sums
    # d_qkv, the projection summed its stack), float32 rounding apart; the key bias's is 0 in
    # exact arithmetic (softmax ignores a shift of every logit), so all three are compared on
    # the scale of the largest.
    scale = max(float(np.max(np.abs(want_p[n]["bias"][...]))) for n in ("query", "key", "value"))
    for name in ("query", "key", "value", "out"):
        for leaf in ("kernel", "bias"):
            a, b = (np.asarray(g[name][leaf][...]) for g in (got_p, want_p))
            if leaf == "bias" and name != "out":
                assert np.max(np.abs(a - b)) <= 1e-6 * scale, name
            else:
                assert np.array_equal(a, b), (name, leaf)


def test_layers_with_something_per_head_between_projection_and_kernel_keep_three_arrays():
    """RoPE (Llama), ALiBi, q/k norms, GQA, another kernel: chosen when the layer is built."""
    assert not _pallas_gpt2(position=tnn.PositionConfig(kind="alibi")).stacked_qkv
    assert not _pallas_gpt2(attention=tnn.AttentionConfig(qk_norm=True)).stacked_qkv
    assert not _gpt2_attention()[0].stacked_qkv  # auto on CPU: XLA
    for kv_heads in (4, 2):  # RoPE; RoPE and grouped keys/values
        llama = tnn.LlamaConfig(
            vocab_size=8, max_seq_len=8, d_model=16, num_layers=1, num_heads=4,
            num_kv_heads=kv_heads, attention_impl="pallas",
        )  # fmt: skip
        assert not tnn.Attention(llama, rngs=nnx.Rngs(0), causal=True).stacked_qkv


def test_gpt2_model_with_the_stacked_kernel_trains_as_with_xla():
    """A whole GPT-2 (2 layers, bfloat16 compute) with ``attention_impl="pallas"`` runs the
    stacked kernels and gives XLA attention's loss and gradients, packed documents included,
    to bfloat16's tolerance (two attention algorithms rounding their 16-bit operands apart)."""
    toks = jnp.asarray(np.random.default_rng(18).integers(0, 64, (2, 12)), jnp.int32)
    ids = jnp.asarray([[1] * 7 + [2] * 5, [1] * 12], jnp.int32)

    def loss_and_grads(model):
        def loss(m):
            return jnp.mean(jax.nn.log_softmax(m(toks, segment_ids=ids))[..., 0])

        return nnx.value_and_grad(loss)(model)

    ref = tnn.build_model(gpt2_tiny(attention_impl="xla", precision="bf16"), rngs=nnx.Rngs(5))
    fast = tnn.build_model(gpt2_tiny(attention_impl="pallas", precision="bf16"), rngs=nnx.Rngs(5))
    graph, state = nnx.split(fast)
    jaxpr = jax.make_jaxpr(lambda s: loss_and_grads(nnx.merge(graph, s))[0])(state).jaxpr
    names = {e.params.get("name") for e in _shapes(jaxpr) if e.primitive.name == "pallas_call"}
    assert names == {"tjx_flash_qkv_fwd", "tjx_flash_qkv_bwd_dkdv", "tjx_flash_qkv_bwd_dq"}
    ref_loss, ref_grads = nnx.jit(loss_and_grads)(ref)
    loss, grads = nnx.jit(loss_and_grads)(fast)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-4)  # seen: 1.2e-5
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        # Each gradient to 2e-2 of its largest entry (bfloat16's 2^-7 = 7.8e-3: seen up to one
        # such step); the keys' biases, 0 in exact arithmetic (~1e-7 here), absolutely.
        assert np.max(np.abs(a - b)) <= 2e-2 * np.max(np.abs(b)) + 1e-5
