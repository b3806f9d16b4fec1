"""``norm.impl`` and ``mlp.impl`` (#68): tjx's own layers or tokamax's norm and gated linear unit.

``auto`` (the default) builds tjx's layers on every device here; a named ``tokamax`` is refused in
one line where it cannot run. Where it can (an H100, pretended while the model is built), the
model runs tjx's wrappers, which the tests route to **tokamax's XLA implementation** (its kernels
cannot run on a CPU): the loss and every parameter's gradient then match tjx's own layers on fresh
random tokens (bfloat16 RMSNorm and SwiGLU: the rounding of a bfloat16 step, 2e-3 of the loss,
3e-2 of a gradient's largest entry), and a LayerNorm's output, fused residual norm and gradients
match tjx's (float32, 1e-5 of the largest entry).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.kernels import choice, layer_kernels, tokamax_ops

F32 = tnn.Precision(jnp.float32, jnp.float32)
BF16 = tnn.Precision(jnp.float32, jnp.bfloat16)
SIZES = dict(vocab_size=64, max_seq_len=16, d_model=64, num_layers=1, num_heads=2)


def _llama(**kw):
    return tnn.LlamaConfig(**SIZES, mlp=tnn.MLPConfig(dim=128), precision=BF16, **kw)


def test_auto_builds_tjxs_own_layers_and_tokamax_is_refused_in_one_line_on_a_cpu():
    model = tnn.Llama(_llama(), rngs=nnx.Rngs(0))
    block = model.stack.layers[0]
    assert block.mlp.impl == "xla" and block.attn_norm.impl == "xla"
    for key, wanted in (("norm.impl", "needs a CUDA GPU of sm80"), ("mlp.impl", "sm90 or sm100")):
        with pytest.raises(ValueError) as err:
            tnn.Llama(_llama().replace(**{key: "tokamax"}), rngs=nnx.Rngs(0))
        assert wanted in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"^MLPConfig\.impl must be one of"):
        tnn.MLPConfig(impl="triton")


def test_a_gpt2_mlp_is_refused_by_name_where_tokamax_has_no_unit(monkeypatch):
    monkeypatch.setattr(layer_kernels, "installed", lambda: True)
    cfg = tnn.GPT2Config(**SIZES, precision=BF16, mlp=tnn.MLPConfig(impl="tokamax"))
    with choice.target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)), pytest.raises(ValueError) as err:
        tnn.GPT2(cfg, rngs=nnx.Rngs(0))
    assert "serves mlp.activation swiglu and geglu only" in str(err.value)


def _through_tokamax_xla(monkeypatch):
    from tjx_tokamax_env import on_path

    on_path()
    tokamax_ops.load()
    calls = []
    for name in ("tokamax_norm", "tokamax_glu"):
        real = getattr(tokamax_ops, name)

        def xla(*args, _real=real, _name=name, **kw):
            calls.append(_name)
            return _real(*args, **kw, implementation="xla")

        monkeypatch.setattr(tokamax_ops, name, xla)
    monkeypatch.setattr(layer_kernels, "installed", lambda: True)
    # tokamax's XLA path needs none of Mosaic GPU: the jax here may lack what its kernel needs
    monkeypatch.setattr(layer_kernels, "jax_builds_tokamax_glu", lambda: True)
    return calls


def _loss_and_grads(model, tokens):
    batch = {"inputs": tokens, "targets": jnp.roll(tokens, -1, axis=1)}
    # The random batch an argument, not a constant: the same program every run, cached.
    value, grad = nnx.jit(nnx.value_and_grad(lambda m, b: tnn.objective_loss(m, b).loss))(
        model, batch
    )
    nnx.update(model, grad)
    return float(value), tnn.get_flat_params(model)


def test_tokamaxs_rmsnorm_and_swiglu_give_tjxs_loss_and_gradients(monkeypatch):
    calls = _through_tokamax_xla(monkeypatch)
    cfg = _llama()
    own = tnn.Llama(cfg, rngs=nnx.Rngs(0))
    with choice.target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        theirs = tnn.Llama(cfg.replace(**{"norm.impl": "tokamax", "mlp.impl": "tokamax"}),
                           rngs=nnx.Rngs(1))  # fmt: skip
    tnn.set_flat_params(theirs, tnn.get_flat_params(own))
    seed = int(np.random.default_rng().integers(1 << 30))
    tokens = jax.random.randint(jax.random.key(seed), (2, 16), 0, SIZES["vocab_size"])
    want, got = _loss_and_grads(own, tokens), _loss_and_grads(theirs, tokens)
    assert set(calls) == {"tokamax_norm", "tokamax_glu"}
    assert abs(got[0] - want[0]) <= 2e-3 * abs(want[0]), seed
    for name, w in want[1].items():
        err = float(np.max(np.abs(np.asarray(got[1][name], np.float64) - np.asarray(w))))
        assert err <= 3e-2 * float(np.max(np.abs(w))), (name, seed)


def test_tokamaxs_layernorm_gives_tjxs_norm_and_fused_residual_norm(monkeypatch):
    """A pre-LN GPT-2 layer's `LayerNorm.residual` (residual add, norm, carried biases) with
    tokamax's norm: tjx's fused one's outputs and gradients (float32, 1e-5)."""
    _through_tokamax_xla(monkeypatch)
    own = tnn.LayerNorm(48, rngs=nnx.Rngs(0), precision=F32)
    with choice.target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        theirs = tnn.LayerNorm(48, rngs=nnx.Rngs(0), precision=F32, impl="tokamax")
    rng = np.random.default_rng()
    x, h, dy, ds = (jnp.asarray(rng.normal(size=(2, 5, 48)), jnp.float32) for _ in range(4))
    h_bias, carried = (jnp.asarray(rng.normal(size=48), jnp.float32) for _ in range(2))
    own.scale[...] = jnp.asarray(1 + rng.normal(size=48) * 0.1, jnp.float32)
    own.bias[...] = jnp.asarray(rng.normal(size=48), jnp.float32)
    results = []
    for norm in (own, theirs):
        graph, state = nnx.split(norm)

        def f(x, h, h_bias, carried, state, graph=graph):
            m = nnx.merge(graph, state)
            s, y, (c,) = m.residual(x, h, h_bias, (carried,))
            return s, y + m(x), c

        out, vjp = jax.vjp(f, x, h, h_bias, carried, nnx.state(own))
        results.append(jax.tree.leaves((out, vjp((ds, dy, dy)))))
    assert len(results[0]) == 3 + 4 + 2  # s, y, carried; dx, dh, dh_bias, dcarried; dscale, dbias
    for i, (g, w) in enumerate(zip(*results, strict=True)):
        err = float(np.max(np.abs(np.asarray(g) - np.asarray(w))))
        assert err <= 1e-5 * float(np.max(np.abs(np.asarray(w)))), i
