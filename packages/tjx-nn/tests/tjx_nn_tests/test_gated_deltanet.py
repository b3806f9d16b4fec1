"""The Gated DeltaNet mixer (Qwen3-Next, Qwen3.5; issue #56) against a float64 NumPy reference
written from transformers' Qwen3_5GatedDeltaNet (its convolution, gates, token-by-token rule and
gated norm), and its generation state: a prompt's state then one token at a time is the whole
sequence at once."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx.nn import DeltaState, GatedDeltaNet, Precision

F64 = Precision(param_dtype=jnp.float64, compute_dtype=jnp.float64, logits_dtype=jnp.float64)
# The layer runs jitted, one program per shape, with the layer (random weights) and the inputs
# as arguments: eagerly, each of the chunked rule's hundreds of small ops was compiled on its own;
# as constants, the random weights would make a new program on every run, which no compilation
# cache serves.
_forward = nnx.jit(lambda m, x: m(x))
_prefix = nnx.jit(lambda m, x: m(x, return_state=True))
_step = nnx.jit(lambda m, x, state: m.step(x, state))


def _layer(seed: int, *, hk: int = 2, hv: int = 4, dk: int = 8, dv: int = 6, kernel: int = 4,
           chunk: int = 4, precision: Precision = F64) -> GatedDeltaNet:  # fmt: skip
    layer = GatedDeltaNet(16, num_k_heads=hk, num_v_heads=hv, head_k_dim=dk, head_v_dim=dv,
                          conv_kernel=kernel, chunk_size=chunk, init_std=0.3,
                          rngs=nnx.Rngs(seed), precision=precision)  # fmt: skip
    rng = np.random.default_rng(seed)  # gates and norms away from their initial values
    for name in ("dt_bias", "a_log", "norm_scale"):
        p = getattr(layer, name)
        p.set_value(jnp.asarray(rng.uniform(-0.5, 1.0, p[...].shape), p[...].dtype))
    return layer


def _np(p) -> np.ndarray:
    return np.asarray(p[...], np.float64)


def _reference(layer: GatedDeltaNet, x: np.ndarray) -> np.ndarray:
    """transformers' computation, plainly: conv1d with K-1 zeros before, SiLU, split, L2 norm,
    repeat_interleave, the recurrence token by token, RMSNormGated, out_proj."""
    b, s, _ = x.shape
    silu = lambda t: t / (1 + np.exp(-t))
    mixed = x @ _np(layer.in_proj_qkv.kernel)
    w = _np(layer.conv_weight)  # [C, K]
    kk = layer.conv_kernel
    padded = np.concatenate([np.zeros((b, kk - 1, mixed.shape[-1])), mixed], axis=1)
    conv = silu(sum(padded[:, j : j + s] * w[:, j] for j in range(kk)))
    kd, vd = layer.key_dim, layer.value_dim
    q = conv[..., :kd].reshape(b, s, layer.num_k_heads, -1)
    k = conv[..., kd : 2 * kd].reshape(b, s, layer.num_k_heads, -1)
    v = conv[..., 2 * kd :].reshape(b, s, layer.num_v_heads, -1)
    l2 = lambda t: t / np.sqrt((t * t).sum(-1, keepdims=True) + 1e-6)
    reps = layer.num_v_heads // layer.num_k_heads
    q, k = np.repeat(l2(q), reps, axis=2), np.repeat(l2(k), reps, axis=2)
    q = q * layer.head_k_dim**-0.5
    beta = 1 / (1 + np.exp(-(x @ _np(layer.in_proj_b.kernel))))
    a = x @ _np(layer.in_proj_a.kernel) + _np(layer.dt_bias)
    g = -np.exp(_np(layer.a_log)) * np.log1p(np.exp(a))
    state = np.zeros((b, layer.num_v_heads, layer.head_k_dim, layer.head_v_dim))
    out = np.zeros((b, s, layer.num_v_heads, layer.head_v_dim))
    for t in range(s):  # transformers' torch_recurrent_gated_delta_rule
        state = state * np.exp(g[:, t])[..., None, None]
        kv_mem = (state * k[:, t][..., None]).sum(-2)
        delta = (v[:, t] - kv_mem) * beta[:, t][..., None]
        state = state + k[:, t][..., None] * delta[..., None, :]
        out[:, t] = (state * q[:, t][..., None]).sum(-2)
    normed = out / np.sqrt((out * out).mean(-1, keepdims=True) + layer.eps)
    z = (x @ _np(layer.in_proj_z.kernel)).reshape(out.shape)
    gated = _np(layer.norm_scale) * normed * silu(z)
    return gated.reshape(b, s, vd) @ _np(layer.out_proj.kernel)


@pytest.mark.parametrize(("hk", "hv", "kernel", "s"), [(2, 4, 4, 11), (3, 3, 2, 8), (1, 2, 1, 5)])
def test_the_mixer_is_transformers_computation_in_float64(hk, hv, kernel, s):
    seed = int(np.random.default_rng().integers(1 << 20))
    with jax.enable_x64(True):
        layer = _layer(seed, hk=hk, hv=hv, kernel=kernel)
        x = np.random.default_rng(seed + 1).standard_normal((2, s, 16))
        got = np.asarray(_forward(layer, jnp.asarray(x)))
        np.testing.assert_allclose(got, _reference(layer, x), rtol=1e-10, atol=1e-12)


def test_a_prompts_state_then_one_token_at_a_time_is_the_whole_sequence():
    seed = int(np.random.default_rng().integers(1 << 20))
    with jax.enable_x64(True):
        layer = _layer(seed)
        x = jnp.asarray(np.random.default_rng(seed).standard_normal((2, 9, 16)))
        whole = np.asarray(_forward(layer, x))
        head, state = _prefix(layer, x[:, :5])
        assert isinstance(state, DeltaState) and state.conv.shape == (2, 3, layer.conv_dim)
        outs = [np.asarray(head)]
        for t in range(5, 9):
            y, state = _step(layer, x[:, t : t + 1], state)
            outs.append(np.asarray(y))
        np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, rtol=1e-10, atol=1e-12)
        # From nothing: the zero state's steps are the sequence too.
        state, outs = layer.init_state(2), []
        for t in range(9):
            y, state = _step(layer, x[:, t : t + 1], state)
            outs.append(np.asarray(y))
        np.testing.assert_allclose(np.concatenate(outs, axis=1), whole, rtol=1e-10, atol=1e-12)


def test_float32_gradients_match_float64_and_reach_every_parameter():
    seed = int(np.random.default_rng().integers(1 << 20))
    x = np.random.default_rng(seed).standard_normal((2, 10, 16))
    with jax.enable_x64(True):
        weights = jax.tree.map(np.asarray, nnx.to_pure_dict(nnx.state(_layer(seed), nnx.Param)))
    grads = {}
    for name, prec in (("f32", Precision()), ("f64", F64)):
        with jax.enable_x64(name == "f64"):
            layer = _layer(seed, precision=prec)  # then given the float64 layer's weights
            graphdef, params = nnx.split(layer, nnx.Param)
            dtype = jnp.float64 if name == "f64" else jnp.float32
            cast = jax.tree.map(lambda w, dtype=dtype: jnp.asarray(w, dtype), weights)
            nnx.replace_by_pure_dict(params, cast)

            def loss(p, x, graphdef=graphdef):
                return jnp.sum(nnx.merge(graphdef, p)(x) ** 2)

            # Jitted: one compile per precision (called eagerly, each of the chunked rule's
            # hundreds of small ops was compiled on its own, in each precision). The random
            # input is an argument, not a constant: the same program on every run, which the
            # persistent compilation cache then serves.
            grad = jax.jit(jax.grad(loss))(params, jnp.asarray(x, dtype))
            grads[name] = jax.tree.map(np.asarray, nnx.to_pure_dict(grad))
    for a, b in zip(jax.tree.leaves(grads["f32"]), jax.tree.leaves(grads["f64"]), strict=True):
        assert np.abs(b).max() > 0  # every parameter is used
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-4 * np.abs(b).max())


def test_bad_shapes_are_refused_by_name():
    with pytest.raises(ValueError, match="num_v_heads .3. must be a multiple of num_k_heads .2."):
        GatedDeltaNet(16, num_k_heads=2, num_v_heads=3, head_k_dim=4, head_v_dim=4,
                      rngs=nnx.Rngs(0))  # fmt: skip


@pytest.mark.parametrize("chunk", [4, 64])  # documents across chunk edges, and within one chunk
def test_a_packed_row_mixes_each_document_as_if_alone(chunk):
    """Documents of 5, 1, 7 and 3 tokens, then 2 of padding (segment 0), in one row: each
    document's outputs are those of the document run alone (float64; the reset leaves ~1e-13 of
    the state before a document)."""
    seed = int(np.random.default_rng().integers(1 << 20))
    lengths = [5, 1, 7, 3, 2]
    ids = np.concatenate([np.full(n, i + 1) for i, n in enumerate(lengths[:-1])] + [np.zeros(2)])
    with jax.enable_x64(True):
        layer = _layer(seed, chunk=chunk)
        x = jnp.asarray(np.random.default_rng(seed).standard_normal((1, sum(lengths), 16)))
        # Jitted: one compile per length (eagerly, each of the chunked rule's ops compiled on its
        # own for each of the five lengths). The layer is an argument: its random weights as
        # constants would make a new program on every run, which no compilation cache serves.
        packed = np.asarray(
            nnx.jit(lambda m, x, ids: m(x, segment_ids=ids))(
                layer, x, jnp.asarray(ids[None], jnp.int32)
            )
        )
        start = 0
        for n in lengths:
            alone = np.asarray(_forward(layer, x[:, start : start + n]))
            np.testing.assert_allclose(packed[:, start : start + n], alone, rtol=1e-9, atol=1e-10)
            start += n


def test_a_right_padded_prompts_state_is_each_rows_state_after_its_own_tokens():
    """``lengths``: the padding neither decays nor writes the state, and the convolution keeps
    each row's last real inputs, so the state equals that of the row's real tokens alone."""
    seed = int(np.random.default_rng().integers(1 << 20))
    with jax.enable_x64(True):
        layer = _layer(seed)
        x = jnp.asarray(np.random.default_rng(seed).standard_normal((3, 9, 16)))
        lengths = jnp.asarray([9, 5, 2])
        # The layer (random weights) as an argument, not constants: a program the cache serves.
        _, padded = nnx.jit(lambda m, x, n: m(x, return_state=True, lengths=n))(layer, x, lengths)
        state_of = nnx.jit(lambda m, x: m(x, return_state=True)[1])  # one compile per length
        for r, n in enumerate([9, 5, 2]):
            alone = state_of(layer, x[r : r + 1, :n])
            np.testing.assert_allclose(padded.conv[r], alone.conv[0], rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(
                padded.recurrent[r], alone.recurrent[0], rtol=1e-10, atol=1e-12
            )
