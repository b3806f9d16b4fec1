"""#68: LayerNorm, the gated MLP unit and RoPE written so that XLA's GPU compiler emits fewer,
cheaper kernels, each checked on fresh random inputs against float64 and against the same op
computed as PyTorch's autocast computes it (bfloat16 in and out of every op, float32 math inside:
`_r` rounds at each op's boundary, outside any jit, so nothing elides it).

Errors are relative root-mean-square errors against float64 (`_err`); "no worse than the
reference" allows 2 % (a bfloat16 rounding of a different but equally exact float32 value lands
on the other neighbour about as often). The structural tests pin what the GPU program gains
(the deviceless H100 compile: BENCHMARKS.md, "deviceless H100 compile, estimate"): each fails on
the code before #68's change.
"""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tjx import nn as tnn
from tjx.nn.activations import with_derivative
from tjx.nn.block import Block
from tjx.nn.embeddings import Embed, take_rows
from tjx.nn.mlp import gated_projection
from tjx.nn.norms import layer_norm, residual_layer_norm
from tjx.nn.positions import apply_rope

BF16, F32 = jnp.bfloat16, jnp.float32
#: "No worse than the reference": its error times this (module doc).
SLACK = 1.02


def _err(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def _r(a):
    """Round to bfloat16 at an op's boundary (eager: a value in memory, as PyTorch keeps it)."""
    return jnp.asarray(a, F32).astype(BF16).astype(F32)


def _bf16_values(rng, shape, scale=1.0, shift=0.0):
    """float64 copies of bfloat16 numbers: every path starts from the same inputs."""
    x = rng.standard_normal(shape) * scale + shift
    return np.asarray(jnp.asarray(x, BF16).astype(F32), np.float64)


def _primitives(jaxpr):
    found = []
    for e in jaxpr.eqns:
        found.append(e)
        for sub in jax.extend.core.jaxprs_in_params(e.params):
            found += _primitives(sub)
    return found


# ---------------------------------------------------------------------------------- LayerNorm


def _layer_norm64(x, s, b):
    m = jnp.mean(x, -1, keepdims=True)
    c = x - m
    return c * jax.lax.rsqrt(jnp.mean(c * c, -1, keepdims=True) + 1e-5) * s + b


@pytest.mark.parametrize("shift", [0.0, 3.0])
def test_bf16_layer_norm_is_as_exact_as_autocast_float32_math(shift):
    """Output and input gradient no worse than float32 math rounded to bfloat16 once; the
    parameters' float32 gradients to float32 accumulation over the rows."""
    rng = np.random.default_rng(101 + int(shift))
    x, g = _bf16_values(rng, (512, 256), shift=shift), _bf16_values(rng, (512, 256))
    s, b = rng.standard_normal(256) * 0.2 + 1, rng.standard_normal(256) * 0.1
    with jax.enable_x64(True):
        want_y, vjp = jax.vjp(_layer_norm64, *(jnp.asarray(a) for a in (x, s, b)))
        want = (want_y, *vjp(jnp.asarray(g)))
    f32 = [jnp.asarray(a, F32) for a in (x, s, b)]
    ref_y, ref_vjp = jax.vjp(_layer_norm64, *f32)  # float32 math from the bf16 values
    ref = (_r(ref_y), _r(ref_vjp(jnp.asarray(g, F32))[0]))
    y, vjp = jax.vjp(
        lambda x, s, b: layer_norm(x, s, b, 1e-5, BF16), jnp.asarray(x, BF16), *f32[1:]
    )
    dx, ds, db = vjp(jnp.asarray(g, BF16))
    assert y.dtype == dx.dtype == BF16 and ds.dtype == db.dtype == F32
    for got, r, w in zip((y, dx), ref, want[:2], strict=True):
        assert _err(got, w) <= SLACK * _err(r, w)
    assert _err(ds, want[2]) < 2e-5 and _err(db, want[3]) < 2e-5


def test_bf16_layer_norm_statistics_are_one_welford_pass():
    """A 16-bit input's mean and variance come out of one variadic reduction over ``x`` (XLA's
    GPU compiler otherwise recomputes two-pass statistics in a normalization kernel of their own
    wherever they are used, and writes ``dy · x̂`` in float32 for the parameters' gradients).
    Constant rows (variance 0) normalise to the bias exactly, rows far from 0 stay exact."""
    rng = np.random.default_rng(102)
    x = _bf16_values(rng, (64, 384), scale=1.0, shift=40.0)
    x[:3] = [[5.0], [-0.25], [1024.0]]  # constant rows
    s, b = rng.standard_normal(384), rng.standard_normal(384)
    xb = jnp.asarray(x, BF16)

    def fwd(x):
        return layer_norm(x, jnp.asarray(s, F32), jnp.asarray(b, F32), 1e-5, F32)

    reduces = [
        e for e in _primitives(jax.make_jaxpr(fwd)(xb).jaxpr) if "reduce" in e.primitive.name
    ]
    assert len(reduces) == 1 and len(reduces[0].outvars) == 3  # (count, mean, M2)
    y = np.asarray(jax.jit(fwd)(xb), np.float64)
    with jax.enable_x64(True):
        want = np.asarray(_layer_norm64(jnp.asarray(x), jnp.asarray(s), jnp.asarray(b)))
    assert np.array_equal(y[:3], np.broadcast_to(np.asarray(b, np.float32), (3, 384)))
    # float32 output: the statistics' float32 exactness (a CPU sums each row in one sequential
    # lane: 1e-5 at a mean of 40; a GPU's tree of partial sums is closer; bf16 rounds at 4e-3)
    assert _err(y, want) < 5e-5


def test_layer_norm_reads_its_scale_and_bias_as_one_array():
    """The forward stacks scale and bias into one array behind a barrier: on a GPU one kernel
    slices both out of the flat parameter buffer, where each alone took a kernel of its own."""
    x = jnp.ones((2, 8, 16), BF16)
    s = jnp.ones((16,), F32)
    jaxpr = jax.make_jaxpr(
        lambda x, s, b: jax.vjp(lambda *a: layer_norm(*a, 1e-5, BF16), x, s, b)[1](x)
    )(x, s, s).jaxpr
    barriers = [e for e in _primitives(jaxpr) if e.primitive.name == "optimization_barrier"]
    assert any(v.aval.shape == (2, 16) for e in barriers for v in e.invars)


# ------------------------------------------------- the residual add and the norm after it


def _residual64(x, h, hb, s, b, nb):
    summed = x + (h + hb)
    return summed, _layer_norm64(summed, s, b), jnp.broadcast_to(nb, summed.shape)


def _residual_autodiff(x, h, hb, s, b, nb):
    """What a pre-LN layer computed before #68's fusion: `Dense`'s bias add and the residual add
    in the compute dtype, then `layer_norm` (its dx rounded, then added to the residual's
    gradient in bf16; each bias's gradient a bf16 column sum)."""
    summed = x + (h + hb.astype(h.dtype))
    y = layer_norm(summed, s, b, 1e-5, h.dtype)
    return summed, y, jnp.broadcast_to(nb.astype(h.dtype), summed.shape)


def test_bf16_residual_layer_norm_is_as_exact_as_autodiff_of_its_parts():
    """The fused op's forward is the unfused ops' bit for bit; its gradients are no further from
    float64 than autodiff's of the unfused ops (the residual's gradient rounds once, the two
    biases' sums are float32 sums; both sides normalise the sum as rounded to bf16)."""
    rng = np.random.default_rng(106)
    d = 256
    x, h = _bf16_values(rng, (8, 64, d), shift=1.0), _bf16_values(rng, (8, 64, d), scale=0.5)
    ds, dy, dc = (_bf16_values(rng, (8, 64, d)) for _ in range(3))
    hb, nb = rng.standard_normal(d) * 0.1, rng.standard_normal(d) * 0.1
    s, b = rng.standard_normal(d) * 0.2 + 1, rng.standard_normal(d) * 0.1
    with jax.enable_x64(True):
        out64, vjp64 = jax.vjp(_residual64, *(jnp.asarray(a) for a in (x, h, hb, s, b, nb)))
        want = vjp64(tuple(jnp.asarray(a) for a in (ds, dy, dc)))
    args = (jnp.asarray(x, BF16), jnp.asarray(h, BF16), *(jnp.asarray(a, F32) for a in (hb, s, b)))
    nb32 = jnp.asarray(nb, F32)
    cts = tuple(jnp.asarray(a, BF16) for a in (ds, dy, dc))
    ref_out, ref_vjp = jax.vjp(_residual_autodiff, *args, nb32)
    ref = ref_vjp(cts)

    def fused(x, h, hb, s, b, nb):
        summed, y, (carried,) = residual_layer_norm(x, h, hb, s, b, (nb,), 1e-5, BF16)
        return summed, y, carried

    out, vjp = jax.vjp(fused, *args, nb32)
    got = vjp(cts)
    for a, r in zip(out, ref_out, strict=True):
        assert a.dtype == BF16 and np.array_equal(np.asarray(a, F32), np.asarray(r, F32))
    names = ("dx", "dh", "dh_bias", "dscale", "dbias", "dnext_bias")
    for name, a, r, w in zip(names, got, ref, want, strict=True):
        assert a.dtype == r.dtype, name
        assert _err(a, w) <= SLACK * _err(r, w), name


@pytest.mark.parametrize("dtype", [F32, jnp.float16])
def test_residual_layer_norm_without_biases_is_the_separate_ops(dtype):
    """No bias on either side (none carried, a norm without bias): float32 is the separate ops'
    arithmetic bit for bit; float16 agrees with them to its rounding."""
    rng = np.random.default_rng(108)
    x, h, ds, dy = (jnp.asarray(rng.standard_normal((4, 8, 32)), dtype) for _ in range(4))
    scale = jnp.asarray(rng.standard_normal(32) * 0.2 + 1, F32)

    def separate(x, h, scale):
        summed = x + h
        return summed, layer_norm(summed, scale, None, 1e-5, dtype)

    def fused(x, h, scale):
        summed, y, carried = residual_layer_norm(x, h, None, scale, None, (), 1e-5, dtype)
        assert carried == ()
        return summed, y

    out, vjp = jax.vjp(fused, x, h, scale)
    ref_out, ref_vjp = jax.vjp(separate, x, h, scale)
    got, ref = vjp((ds, dy)), ref_vjp((ds, dy))
    for a, b in zip((*out, *got), (*ref_out, *ref), strict=True):
        assert a.dtype == b.dtype
        if dtype == F32:
            assert np.array_equal(np.asarray(a), np.asarray(b))
        else:
            assert _err(a, b) < 2e-3


def _row_sums_of_width(jaxpr, width):
    """The backward's column sums over the tokens whose result ends in ``width`` (a variadic
    reduce counts once)."""
    found = 0
    for e in _primitives(jaxpr):
        if e.primitive.name in ("reduce_sum", "reduce") and e.invars[0].aval.ndim >= 3:
            out = e.outvars[0].aval.shape
            found += bool(out) and out[-1] == width and len(out) <= 2
    return found


def test_a_gpt2_layer_sums_its_norm_and_bias_gradients_in_two_reductions():
    """A GPT-2 layer's backward: attention norm's dscale/dbias (one reduce), then the MLP norm's
    with both output projections' biases (one more). Before #68's fusion the output projection
    and ``fc_out`` biases were summed on their own (four reductions, eight GPU kernels)."""
    cfg = tnn.GPT2Config(
        vocab_size=64, max_seq_len=16, d_model=32, num_layers=1, num_heads=4,
        precision=tnn.Precision(compute_dtype=BF16),
    )  # fmt: skip
    block = Block(cfg, rngs=nnx.Rngs(0), num_layers=1, causal=True)
    graph, state = nnx.split(block)
    x = jnp.ones((2, 8, 32), BF16)

    def loss(state, x):
        y, _, _ = nnx.merge(graph, state)(x)
        return jnp.sum(y.astype(F32))

    jaxpr = jax.make_jaxpr(jax.grad(loss))(state, x).jaxpr
    assert _row_sums_of_width(jaxpr, 32) == 2


def test_a_float32_layer_computes_what_the_unfused_layer_computes(monkeypatch):
    """float32: the fused path's output and every gradient are the unfused ops' bit for bit."""
    cfg = tnn.GPT2Config(vocab_size=64, max_seq_len=16, d_model=32, num_layers=1, num_heads=4)
    block = Block(cfg, rngs=nnx.Rngs(0), num_layers=1, causal=True)
    rng = np.random.default_rng(107)
    for _, var in nnx.to_flat_state(nnx.state(block, nnx.Param)):
        var.set_value(jnp.asarray(rng.standard_normal(var.get_value().shape) * 0.1, F32))
    graph, state = nnx.split(block)
    x = jnp.asarray(rng.standard_normal((2, 8, 32)), F32)
    ct = jnp.asarray(rng.standard_normal((2, 8, 32)), F32)

    def run(state, x):
        return nnx.merge(graph, state)(x)[0]

    assert block._fuses_residual_norm(True)
    y, vjp = jax.vjp(run, state, x)
    got = vjp(ct)
    monkeypatch.setattr(Block, "_fuses_residual_norm", lambda self, deterministic: False)
    y_ref, vjp_ref = jax.vjp(run, state, x)
    assert np.array_equal(np.asarray(y), np.asarray(y_ref))
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(vjp_ref(ct)), strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_layers_whose_bias_is_not_added_last_take_the_unfused_path():
    """Residual dropout scales the bias with the output; an adapter adds after the bias: the
    fused op (which adds the bias itself) is not taken there, nor for RMSNorm or post-LN."""
    small = dict(vocab_size=64, max_seq_len=16, d_model=32, num_layers=1, num_heads=4)

    def block(cfg):
        return Block(cfg, rngs=nnx.Rngs(0), num_layers=1, causal=True)

    dropped = block(tnn.GPT2Config(**small, dropout=0.1))
    assert dropped._fuses_residual_norm(True) and not dropped._fuses_residual_norm(False)
    adapted = block(tnn.GPT2Config(**small))
    tnn.add_lora(adapted, tnn.LoraConfig(rank=2, targets=("o",)), rngs=nnx.Rngs(1))
    assert not adapted._fuses_residual_norm(True)
    with pytest.raises(ValueError, match="add_bias=True"):
        assert adapted.attn is not None
        adapted.attn.out(jnp.ones((1, 2, 4, 8), F32), add_bias=False)
    assert not block(tnn.LlamaConfig(**small))._fuses_residual_norm(True)


# ------------------------------------------------------------------------------- gated units


def _gated64(name, x, wg, wu, bg, bu):
    act = {"silu": jax.nn.silu, "gelu": lambda v: jax.nn.gelu(v, approximate=True)}[name]
    return act(x @ wg + bg) * (x @ wu + bu)


def _autocast_gated(name, x, wg, wu, bg, bu, dh):
    """PyTorch autocast's gated MLP unit, op by op: the products and the bias adds round to
    bf16, then ``act(gate)`` and ``act · up`` each round; the backward's products and each
    elementwise gradient round, and the input's two gradient products are added in bf16."""
    act, derivative = with_derivative(name)

    def mm(a, b):
        return _r(jnp.dot(_r(a), _r(b), preferred_element_type=F32))

    gate, up = _r(mm(x, wg) + bg), _r(mm(x, wu) + bu)
    a = _r(act(gate))
    h = _r(a * up)
    da, dup = _r(dh * up), _r(dh * a)
    dgate = _r(da * derivative(gate))
    dx = _r(mm(dgate, wg.T) + mm(dup, wu.T))
    return h, dx, mm(x.T, dgate), mm(x.T, dup), _r(jnp.sum(dgate, 0)), _r(jnp.sum(dup, 0))


@pytest.mark.parametrize("name", ["silu", "gelu"])
def test_gated_projection_is_as_exact_as_autocast(name):
    """Output and every gradient no worse than autocast's: the unit rounds once where autocast
    rounds ``act(gate)`` and then the product, the input's gradient is one float32-accumulated
    product over both halves where autocast adds two rounded ones in bfloat16."""
    rng = np.random.default_rng(103)
    x, dh = _bf16_values(rng, (512, 64)), _bf16_values(rng, (512, 128))
    wg, wu = (_bf16_values(rng, (64, 128), scale=0.125) for _ in range(2))
    bg, bu = (_bf16_values(rng, (128,), scale=0.1) for _ in range(2))
    with jax.enable_x64(True):
        args64 = [jnp.asarray(a) for a in (x, wg, wu, bg, bu)]
        y64, vjp64 = jax.vjp(lambda *a: _gated64(name, *a), *args64)
        want = (y64, *vjp64(jnp.asarray(dh)))
    ref = _autocast_gated(name, *(jnp.asarray(a, F32) for a in (x, wg, wu, bg, bu, dh)))
    xb, wgb, wub, bgb, bub, dhb = (jnp.asarray(a, BF16) for a in (x, wg, wu, bg, bu, dh))
    h, vjp = jax.vjp(lambda x, k, b: gated_projection(name, x, k, b), xb, (wgb, wub), (bgb, bub))
    dx, (dwg, dwu), (dbg, dbu) = vjp(dhb)
    got = (h, dx, dwg, dwu, dbg, dbu)
    assert all(a.dtype == BF16 for a in got)
    for a, r, w in zip(got, ref, want, strict=True):
        assert _err(a, w) <= SLACK * _err(r, w)


def test_gated_projection_float32_matches_float64_and_takes_one_input_product():
    rng = np.random.default_rng(104)
    x, dh = rng.standard_normal((6, 5, 16)), rng.standard_normal((6, 5, 24))
    wg, wu = rng.standard_normal((16, 24)), rng.standard_normal((16, 24))
    with jax.enable_x64(True):
        y64, vjp64 = jax.vjp(
            lambda x, wg, wu: _gated64("silu", x, wg, wu, 0.0, 0.0),
            *(jnp.asarray(a) for a in (x, wg, wu)),
        )
        want = (y64, *vjp64(jnp.asarray(dh)))
    args = (jnp.asarray(x, F32), (jnp.asarray(wg, F32), jnp.asarray(wu, F32)), ())
    y, vjp = jax.vjp(lambda x, k, b: gated_projection("silu", x, k, b), *args)
    dx, (dwg, dwu), _ = vjp(jnp.asarray(dh, F32))
    for a, w in zip((y, dx, dwg, dwu), want, strict=True):
        assert a.dtype == F32 and _err(a, w) < 1e-6
    bwd = jax.make_jaxpr(lambda *a: jax.vjp(lambda *b: gated_projection("silu", *b), *a)[1](
        jnp.asarray(dh, F32)))(*args).jaxpr  # fmt: skip
    products = [e for e in _primitives(bwd) if e.primitive.name == "dot_general"]
    assert len(products) == 2 + 2  # the forward's two; one for dx, one for both kernels


def _swiglu_mlp(**kw):
    return tnn.MLP(16, 24, rngs=nnx.Rngs(0), activation_name="swiglu", **kw)


def test_swiglu_mlp_takes_the_gated_projection_and_matches_its_dense_calls(monkeypatch):
    mlp = _swiglu_mlp(use_bias=True)
    rng = np.random.default_rng(105)
    for p in (mlp.fc_gate, mlp.fc_in):
        p.bias.set_value(jnp.asarray(rng.standard_normal(p.bias.shape), F32))
    x = jnp.asarray(rng.standard_normal((2, 5, 16)), F32)
    ct = jnp.asarray(rng.standard_normal((2, 5, 16)), F32)
    graph, state = nnx.split(mlp)

    def run(x, state):
        return nnx.merge(graph, state)(x)

    assert mlp._fused_gate(x) is not None
    y, vjp = jax.vjp(run, x, state)
    got = vjp(ct)
    monkeypatch.setattr(tnn.MLP, "_fused_gate", lambda self, x: None)
    y_ref, vjp_ref = jax.vjp(run, x, state)
    assert np.array_equal(np.asarray(y), np.asarray(y_ref))  # float32: the same arithmetic
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(vjp_ref(ct)), strict=True):
        assert _err(a, b) < 1e-6  # the input's gradient: one product over both halves


def test_gated_units_that_are_not_plain_take_their_own_dense_calls():
    x = jnp.ones((1, 3, 16), F32)
    assert tnn.MLP(16, 24, rngs=nnx.Rngs(0), activation_name="gelu")._fused_gate(x) is None
    clamped = tnn.MLP(16, 24, rngs=nnx.Rngs(0), activation_name="swiglu_clamped")
    assert clamped._fused_gate(x) is None  # gpt-oss's unit is not act(gate) · up
    fp8 = _swiglu_mlp(precision=tnn.Precision(F32, BF16, matmul="fp8"))
    assert fp8._fused_gate(x) is None
    adapted = _swiglu_mlp()
    tnn.add_lora(adapted, tnn.LoraConfig(rank=2, targets=("gate",)), rngs=nnx.Rngs(1))
    assert adapted._fused_gate(x) is None


# --------------------------------------------------------------------------------------- RoPE


def _rope_halves(x, positions):
    """RoPE as the halves' formula (tjx's before #68), in x's dtype with float32 math."""
    d = x.shape[-1]
    dt = jnp.promote_types(x.dtype, F32)
    inv = 1.0 / (10000.0 ** (jnp.arange(0, d, 2, dtype=dt) / d))
    angles = positions.astype(dt)[..., None] * inv
    c, s = jnp.cos(angles)[:, :, None], jnp.sin(angles)[:, :, None]
    x1, x2 = x.astype(dt)[..., : d // 2], x.astype(dt)[..., d // 2 :]
    return jnp.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], -1).astype(x.dtype)


def test_rope_turns_the_gradient_back_in_one_custom_pass():
    """The forward is the halves' formula exactly; the gradient is float64 autodiff's (float64)
    and as exact as autodiff's in bfloat16; it is a custom backward (a turn by the opposite
    angle reading the gradient in x's dtype), not autodiff's float32 halves."""
    rng = np.random.default_rng(106)
    x, g = _bf16_values(rng, (2, 40, 3, 16)), _bf16_values(rng, (2, 40, 3, 16))
    pos = jnp.asarray(np.tile(np.arange(40), (2, 1)))
    with jax.enable_x64(True):
        y64, vjp64 = jax.vjp(lambda x: _rope_halves(x, pos), jnp.asarray(x))
        want = (y64, vjp64(jnp.asarray(g))[0])
        got64 = jax.vjp(lambda x: apply_rope(x, pos), jnp.asarray(x))
        assert (
            _err(got64[0], want[0]) < 1e-15 and _err(got64[1](jnp.asarray(g))[0], want[1]) < 1e-15
        )
    xb, gb = jnp.asarray(x, BF16), jnp.asarray(g, BF16)
    y, vjp = jax.vjp(lambda x: apply_rope(x, pos), xb)
    y_ref, vjp_ref = jax.vjp(lambda x: _rope_halves(x, pos), xb)
    assert y.dtype == BF16 and np.array_equal(np.asarray(y, F32), np.asarray(y_ref, F32))
    dx, dx_ref = vjp(gb)[0], vjp_ref(gb)[0]
    assert dx.dtype == BF16 and _err(dx, want[1]) <= SLACK * _err(dx_ref, want[1])
    names = [
        e.primitive.name
        for e in _primitives(jax.make_jaxpr(lambda x: apply_rope(x, pos))(xb).jaxpr)
    ]
    assert "custom_vjp_call" in names or "custom_vjp_call_jaxpr" in names


# ------------------------------------------------------------------------ the tied table lookup


def test_the_lookup_gathers_from_the_cast_table_with_autodiffs_float32_gradient():
    """`take_rows` gathers the rows of the table cast to the compute dtype (so a tied head and
    the lookup share one cast and XLA writes no transposed float32 copy for the gather: fails
    before #68's change, which gathered float32 rows); the rows are the cast rows bit for bit and
    the table's gradient is autodiff's float32 scatter-add of the old lookup, bit for bit, within
    float32 rounding of float64 (repeated ids sum many rows)."""
    rng = np.random.default_rng(107)
    table = rng.standard_normal((50, 24)).astype(np.float32)
    ids = jnp.asarray(rng.integers(0, 50, (4, 33)).astype(np.int32))
    ids = ids.at[0, :9].set(7)  # one row looked up many times: its gradient sums them
    g = _bf16_values(rng, (4, 33, 24))
    t = jnp.asarray(table)

    def old(t):
        return jnp.take(t, ids, axis=0).astype(BF16)

    def new(t):
        return take_rows(t, ids, BF16)

    y, vjp = jax.vjp(new, t)
    y_ref, vjp_ref = jax.vjp(old, t)
    assert y.dtype == BF16 and np.array_equal(np.asarray(y, F32), np.asarray(y_ref, F32))
    dt, dt_ref = vjp(jnp.asarray(g, BF16))[0], vjp_ref(jnp.asarray(g, BF16))[0]
    assert dt.dtype == F32 and np.array_equal(np.asarray(dt), np.asarray(dt_ref))
    with jax.enable_x64(True):
        want = np.zeros((50, 24))
        np.add.at(want, np.asarray(ids), g)
    assert _err(dt, want) < 1e-6
    embed = Embed(50, 24, rngs=nnx.Rngs(0), precision=tnn.Precision(compute_dtype=BF16))
    found = _primitives(jax.make_jaxpr(lambda i: embed(i))(ids).jaxpr)
    gathers = [e for e in found if e.primitive.name == "gather"]
    assert gathers and all(e.invars[0].aval.dtype == BF16 for e in gathers)
    # a float32 lookup is the plain gather (float32 programs unchanged)
    y32 = take_rows(t, ids, F32)
    assert np.array_equal(np.asarray(y32), np.asarray(jnp.take(t, ids, axis=0)))


def test_a_tied_head_casts_the_table_before_transposing_it():
    """`Embed.unembedding(dtype)` is the cast table transposed (the same values as the old
    transpose then cast), so the head and the lookup read one cast."""
    e = Embed(10, 6, rngs=nnx.Rngs(0))
    got = e.unembedding(BF16)
    assert got.dtype == BF16 and got.shape == (6, 10)
    assert np.array_equal(np.asarray(got, F32), np.asarray(e.unembedding().astype(BF16), F32))
    jaxpr = jax.make_jaxpr(lambda: e.unembedding(BF16))().jaxpr
    names = [x.primitive.name for x in jaxpr.eqns]
    assert names.index("convert_element_type") < names.index("transpose")
