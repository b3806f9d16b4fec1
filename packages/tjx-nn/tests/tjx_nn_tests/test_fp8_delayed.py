"""Delayed float8 scaling (#54): the meta's step against a NumPy reference, the product with stored
scales and the amaxes its cotangent carries, a tiny Llama's gradients, the state kept out of the
params, and an HF export with no float8 meta."""

import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import optax
import pytest
from flax import nnx
from flax.linen import fp8_ops
from safetensors.numpy import load_file

from tjx import nn as tnn
from tjx.nn import fp8

from ._helpers import build, llama_tiny
from .test_fp8 import E4M3_MAX, E5M2_MAX, _operands

MAXES = np.array([E4M3_MAX, E4M3_MAX, E5M2_MAX])


def _np_advance(meta, amaxes):
    """The reference step: roll each history (newest at 0, oldest at 1 dropped), rescale from its
    maximum, keep the old scale where that maximum is 0 or not finite."""
    meta = np.asarray(meta, np.float64)
    hist = np.roll(meta[..., 1:], -1, axis=-1)
    hist[..., 0] = amaxes
    top = hist.max(axis=-1)
    ok = (top > 0) & np.isfinite(top)
    scale = np.where(ok, top / np.where(ok, MAXES, 1.0), meta[..., 0])
    return np.concatenate([scale[..., None], hist], axis=-1)


def test_the_meta_step_rolls_each_history_and_rescales_like_numpy_with_layer_axes():
    rng = np.random.default_rng()
    meta = np.abs(rng.standard_normal((2, 3, 1 + 4))).astype(np.float32)  # [layers, 3, 1 + 4]
    amaxes = np.abs(rng.standard_normal((2, 3))).astype(np.float32)
    meta[1, 2, 1:] = 0.0  # a history of zeros and a zero amax: the scale stays
    amaxes[1, 2] = 0.0
    amaxes[0, 1] = np.inf  # a non-finite amax: the scale stays, the history records it
    got = np.asarray(fp8.advance_meta(jnp.asarray(meta), jnp.asarray(amaxes)))
    want = _np_advance(meta, amaxes)
    np.testing.assert_allclose(got, want, rtol=1e-6)
    # Kept, up to flax's reciprocal round trip (compute_scale works on 1 / scale): one ulp at most.
    for kept in ((1, 2, 0), (0, 1, 0)):
        np.testing.assert_array_max_ulp(got[kept], meta[kept], maxulp=1)
    # One layer's one row, as flax's own helpers compute it.
    hist = fp8_ops.compute_amax_history(jnp.asarray(amaxes[0, 0]), jnp.asarray(meta[0, 0, 1:]))
    np.testing.assert_array_equal(got[0, 0, 1:], hist)
    scale = fp8_ops.compute_scale(jnp.max(hist), jnp.asarray(meta[0, 0, 0]), E4M3_MAX)
    np.testing.assert_array_equal(got[0, 0, 0], scale)
    # The meta's cotangent (amaxes in column 0) is read as the amaxes themselves.
    cot = np.zeros_like(meta)
    cot[..., 0] = amaxes
    np.testing.assert_array_equal(fp8.advance_meta(jnp.asarray(meta), jnp.asarray(cot)), got)


def _np_cast32(x, dtype, scale):
    """The stored-scale cast as the product computes it: float32 ``x`` divided by the float32
    scale (one float32 rounding), clipped, rounded to float8 (ml_dtypes), back to float64.

    A float64 division would round twice differently: on fresh random operands about one seed in
    ten puts a quotient within a float32 ulp of a float8 tie, and the two casts then differ by a
    whole float8 step (CI 2026-11-27).
    """
    top = E4M3_MAX if dtype == fp8.E4M3 else E5M2_MAX
    q = np.clip(np.asarray(x, np.float32) / np.float32(scale), -top, top)
    npdt = ml_dtypes.float8_e4m3fn if dtype == fp8.E4M3 else ml_dtypes.float8_e5m2
    return q.astype(npdt).astype(np.float64)


def test_a_new_meta_casts_with_scale_one_and_an_empty_history():
    m = np.asarray(fp8.init_meta(3))
    np.testing.assert_array_equal(m, [[1, 0, 0, 0]] * 3)
    with pytest.raises(ValueError, match="history must be >= 1"):
        fp8.init_meta(0)


def test_the_delayed_product_casts_with_the_stored_scales_and_its_cotangent_is_the_amaxes():
    x, w, g = _operands(np.random.default_rng().integers(1 << 30))
    # Stale scales: x's too small (its largest values saturate at ±448·s), w's and g's roomy.
    sx, sw, sg = np.max(np.abs(x)) / E4M3_MAX / 2, np.max(np.abs(w)) / 100, np.max(np.abs(g)) / 1e3
    meta = np.zeros((3, 3), np.float32)
    meta[:, 0] = [sx, sw, sg]
    meta[:, 1:] = 5.0  # the history is not read by the product
    xj, wj, gj, mj = (jnp.asarray(a, jnp.float32) for a in (x, w, g, meta))
    y, vjp = jax.vjp(lambda a, b, m: fp8.delayed_dot(a, b, m, 1), xj, wj, mj)
    sx, sw, sg = (float(np.float32(s)) for s in (sx, sw, sg))
    xq, wq = _np_cast32(x, fp8.E4M3, sx) * sx, _np_cast32(w, fp8.E4M3, sw) * sw
    assert np.max(np.abs(xq)) == pytest.approx(E4M3_MAX * sx)  # saturated, not NaN
    ref_y = np.tensordot(xq, wq, 1)
    tol = lambda r: {"rtol": 1e-5, "atol": 1e-5 * np.max(np.abs(r))}
    np.testing.assert_allclose(np.asarray(y, np.float64), ref_y, **tol(ref_y))
    dx, dw, dmeta = (np.asarray(t, np.float64) for t in vjp(gj))
    gq = _np_cast32(g, fp8.E5M2, sg) * sg
    lead = (0, 1)
    ref_dx, ref_dw = np.tensordot(gq, wq, ((2, 3), (1, 2))), np.tensordot(xq, gq, (lead, lead))
    np.testing.assert_allclose(dx, ref_dx, **tol(ref_dx))
    np.testing.assert_allclose(dw, ref_dw, **tol(ref_dw))
    amaxes = [np.max(np.abs(a.astype(np.float32))) for a in (x, w, g)]
    np.testing.assert_allclose(dmeta[:, 0], amaxes, rtol=1e-7)
    assert not dmeta[:, 1:].any()


def _grads(precision, tokens, warmup=0):
    """All parameter gradients of a 1-layer tiny Llama's next-token loss (float64 vector), after
    ``warmup`` meta steps on the same batch (delayed scaling: the scales then come from it)."""
    model = build(llama_tiny(precision=precision, num_layers=1))
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    rest, meta = tnn.split_fp8_meta(rest)
    params = nnx.to_pure_dict(params)

    @jax.jit
    def grad(tree, tokens):  # the random tokens an argument: the same program every run, cached
        def loss(tree):
            logits = nnx.merge(graphdef, tree, rest)(tokens[:, :-1]).astype(jnp.float32)
            return optax.softmax_cross_entropy_with_integer_labels(logits, tokens[:, 1:]).mean()

        return jax.grad(loss)(tree)

    for _ in range(warmup):
        _, amaxes = tnn.part_fp8_meta(grad(tnn.join_fp8_meta(params, meta), tokens))
        meta = jax.tree.map(tnn.advance_meta, meta, amaxes)
    g, _ = tnn.part_fp8_meta(grad(tnn.join_fp8_meta(params, meta), tokens))
    return np.concatenate([np.asarray(v, np.float64).ravel() for v in jax.tree.leaves(g)])


def test_delayed_fp8_gradients_stay_near_float32_once_the_history_holds_the_batch():
    tokens = jnp.asarray(np.random.default_rng().integers(0, 64, (4, 16)))
    exact = _grads(tnn.Precision("float32", "float32"), tokens)
    bf16 = _grads(tnn.Precision("float32", "bfloat16"), tokens)
    delayed = tnn.Precision(
        "float32", "bfloat16", matmul="fp8", fp8_recipe="delayed", fp8_amax_history=2
    )
    rel = lambda g: np.linalg.norm(g - exact) / np.linalg.norm(exact)
    # After two steps on this batch the history holds its amaxes (to float8 rounding of the
    # first step's activations): the scales are current scaling's, and so is the error bound
    # of test_fp8_model (0.1; float8's 2⁻⁴ / 2⁻³ roundoff averaged down by the sums), with
    # bf16 well inside it so that the float8 path is the one measured.
    got = _grads(delayed, tokens, warmup=2)
    assert rel(got) < 0.1
    assert rel(bf16) < rel(got) / 3


def test_the_float8_state_is_no_parameter_and_only_the_linear_products_hold_it():
    delayed = tnn.Precision("float32", "bfloat16", matmul="fp8", fp8_recipe="delayed")
    cfg = llama_tiny(precision=delayed, tie_embeddings=False, scan_layers=True)
    model = build(cfg)
    meta = nnx.to_flat_state(nnx.state(model, tnn.Fp8Meta))
    # q, k, v, out, gate, up, down of each of the 2 scanned layers; not the (untied) LM head,
    # whose product is the chunked loss's (it stays in the compute dtype).
    assert len(meta) == 7 and not any("head" in map(str, p) for p, _ in meta)
    assert all(v.get_value().shape == (2, 3, 1 + 16) for _, v in meta)
    plain = build(llama_tiny(precision=tnn.Precision("float32", "bfloat16"), scan_layers=True))
    params = lambda m: nnx.to_pure_dict(nnx.state(m, nnx.Param))
    # The params (what an optimizer, weight decay and a parameter count see) are the bf16
    # model's, leaf for leaf; the meta is in no Param filter, LoRA's included.
    jax.tree.map(np.testing.assert_array_equal, params(model), params(plain))
    tnn.add_lora(model, tnn.LoraConfig(rank=2), rngs=nnx.Rngs(1))
    lora = nnx.to_flat_state(nnx.state(model, nnx.LoRAParam))
    assert lora and not any("fp8_meta" in map(str, p) for p, _ in lora)
    # split/join/part: the meta beside the params and apart again, the same leaves.
    _, p, rest = nnx.split(model, nnx.Param, ...)
    others, m = tnn.split_fp8_meta(rest)
    assert not jax.tree.leaves(nnx.state(nnx.merge(*nnx.split(others)), tnn.Fp8Meta))
    back_p, back_m = tnn.part_fp8_meta(tnn.join_fp8_meta(nnx.to_pure_dict(p), m))
    assert jax.tree.structure(back_p) == jax.tree.structure(nnx.to_pure_dict(p))
    assert jax.tree.structure(back_m) == jax.tree.structure(m)
    assert tnn.split_fp8_meta(nnx.split(plain, nnx.Param, ...)[2])[1] is None


def test_an_hf_export_of_a_delayed_fp8_model_is_the_bf16_models(tmp_path):
    def export(precision, name):
        cfg = llama_tiny(precision=precision, num_layers=1, tie_embeddings=False)
        tnn.save_hf(build(cfg), tmp_path / name, dtype="float32")
        return tmp_path / name

    a = export(tnn.Precision("float32", "bfloat16"), "bf16")
    b = export(tnn.Precision("float32", "bfloat16", matmul="fp8", fp8_recipe="delayed"), "delayed")
    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert ta.keys() == tb.keys() and not any("fp8" in k for k in tb)
    for k, v in ta.items():
        assert tb[k].dtype == v.dtype and np.array_equal(tb[k], v), k
    config = json.loads((b / "config.json").read_text())
    assert "fp8" not in json.dumps(config)  # no float8 setting or meta in the HF config
