"""The row kernel of the chunked loss head (`tjx.kernels.ce_rows`, Pallas interpret mode here)
against float64: the kernel alone, and the head with ``row_kernel=True`` (loss and gradients)."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import ce_auto_order, ce_implementation, chunked_cross_entropy
from tjx.kernels.ce_rows import ce_rows, pow2_divisor
from tjx.kernels.choice import Target

from ._ref import measured_table, np_cross_entropy, rel_err

H100 = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))


def _np_rows(x, labels, g_ce, g_z):
    """float64 (lse, argmax, label logit, dlogits) of ``x [c, V]``; negative labels unscored."""
    x = np.asarray(x, np.float64)
    mx = x.max(1, keepdims=True)
    lse = (mx + np.log(np.exp(x - mx).sum(1, keepdims=True)))[:, 0]
    safe = np.maximum(labels, 0)
    scored = labels >= 0
    pick = np.where(scored, x[np.arange(len(x)), safe], 0.0)
    p = np.exp(x - lse[:, None])
    onehot = np.eye(x.shape[1])[safe]
    d = g_ce * (p - onehot) + 2 * g_z * lse[:, None] * p
    return lse, x.argmax(1), pick, np.where(scored[:, None], d, 0.0)


@pytest.mark.parametrize("c,v", [(12, 80), (5, 37)])  # tiles 4×16 and 1×1
def test_the_row_kernel_gives_float64s_statistics_and_gradient_in_one_launch(c, v):
    """lse, the first argmax, the label's logit and ``g_ce·(p − onehot) + 2·g_z·lse·p`` (zero
    on unscored rows) within float32 rounding of float64 (1e-6 relative); with the log-sum-exp
    given, the gradient-only kernel writes the same gradient bit for bit."""
    rng = np.random.default_rng(c * v)
    x = (rng.standard_normal((c, v)) * 3.0).astype(np.float32)
    x[0, 3] = x[0, 7] = x[0].max() + 1.0  # a tie: the first column is the argmax
    labels = rng.integers(0, v, c).astype(np.int32)
    labels[1] = -1
    g = np.array([0.7, 0.2], np.float32)
    lse, top, pick, dx = ce_rows(
        jnp.asarray(x), jnp.asarray(labels), jnp.asarray(g), jnp.float32, interpret=True
    )
    want = _np_rows(x, labels, 0.7, 0.2)
    assert rel_err(lse, want[0]) <= 1e-6 and rel_err(pick, want[2]) <= 1e-6
    assert np.array_equal(np.asarray(top), want[1]) and int(top[0]) == 3
    assert rel_err(dx, want[3]) <= 1e-6 and not np.asarray(dx[1]).any()
    _, _, _, again = ce_rows(
        jnp.asarray(x), jnp.asarray(labels), jnp.asarray(g), jnp.float32, lse=lse, interpret=True
    )
    assert np.array_equal(np.asarray(again), np.asarray(dx))


def test_the_row_kernel_reads_bf16_logits_and_writes_a_bf16_gradient():
    """bf16 logits are upcast in the kernel: the gradient is float64's of the rounded logits
    within bf16's rounding of the output (2⁻⁸ relative)."""
    rng = np.random.default_rng(7)
    x = jnp.asarray(rng.standard_normal((8, 64)) * 2.0, jnp.bfloat16)
    labels = jnp.asarray(rng.integers(0, 64, 8), jnp.int32)
    g = jnp.asarray([1.0, 0.0], jnp.float32)
    lse, _, _, dx = ce_rows(x, labels, g, jnp.bfloat16, interpret=True)
    want = _np_rows(np.asarray(x.astype(jnp.float32)), np.asarray(labels), 1.0, 0.0)
    assert dx.dtype == jnp.bfloat16 and rel_err(dx, want[3]) <= 2**-8
    assert rel_err(lse, want[0]) <= 1e-6


def test_tiles_are_the_largest_powers_of_two_dividing_the_shape():
    assert [pow2_divisor(n, 1024) for n in (50304, 4096, 37, 12)] == [128, 1024, 1, 4]
    assert pow2_divisor(4096, 8) == 8


# ragged last chunks: 7 positions → 9, 5 → 6
@pytest.mark.parametrize("shape,chunk,z_loss", [((2, 7), 6, 0.0), ((3, 5), 4, 1e-2)])
def test_the_head_with_the_row_kernel_matches_float64_loss_and_gradients(shape, chunk, z_loss):
    """``chunked_cross_entropy(row_kernel=True)``: loss, sums, counts and both gradients (the
    hidden states, the unembedding) of the float64 full-logits loss within 1e-5, with and
    without z-loss (the fused forward's kernel; the z-loss backward's gradient-only kernel),
    a ragged last chunk (padded with ignored tokens) and ignored labels."""
    rng = np.random.default_rng(len(shape) * chunk + int(z_loss * 100))
    d, vocab = 12, 48
    hidden = rng.standard_normal((*shape, d))
    w = rng.standard_normal((d, vocab)) * 0.5
    labels = rng.integers(0, vocab, shape).astype(np.int32)
    labels[rng.random(shape) < 0.25] = -100
    loss, sum_loss, n, correct, dh, dw = np_cross_entropy(hidden, w, labels, z_loss=z_loss)

    def fn(h, w):
        out = chunked_cross_entropy(
            h, w, jnp.asarray(labels), chunk_size=chunk, z_loss=z_loss, row_kernel=True
        )
        return out.loss, out

    (got, out), (g_h, g_w) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(
        jnp.asarray(hidden, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    assert rel_err(got, loss) <= 1e-5 and rel_err(out.sum_loss, sum_loss) <= 1e-5
    assert int(out.num_tokens) == n and int(out.num_correct) == correct
    assert rel_err(g_h, dh) <= 1e-5 and rel_err(g_w, dw) <= 1e-5
    jaxpr = str(jax.make_jaxpr(jax.grad(lambda h, w: fn(h, w)[0], argnums=(0, 1)))(
        jnp.asarray(hidden, jnp.float32), jnp.asarray(w, jnp.float32)
    ))  # fmt: skip
    assert "tjx_ce_rows" in jaxpr


def test_the_row_kernel_refuses_a_soft_cap_and_auto_takes_it_only_measured(monkeypatch, tmp_path):
    """A capped head has no row kernel (one line naming the fix); ``auto`` never takes the row
    kernel on a byte estimate, only where the launch table measured it fastest."""
    h, w = jnp.zeros((4, 8), jnp.bfloat16), jnp.zeros((8, 16), jnp.bfloat16)
    labels = jnp.zeros((4,), jnp.int32)
    with pytest.raises(ValueError, match="row_kernel=False"):
        chunked_cross_entropy(h, w, labels, softcap=2.0, row_kernel=True)
    with pytest.raises(ValueError, match="row-kernel \\(pallas_rows\\).*does not soft-cap"):
        ce_implementation("pallas_rows", h, w, H100, softcap=2.0)
    assert ce_implementation("pallas_rows", h, w, H100) == "pallas_rows"
    for shape in [(16384, 768, 50304), (64, 64, 128)]:
        assert "pallas_rows" not in ce_auto_order(jnp.bfloat16, *shape, H100).order
    measured_table(monkeypatch, tmp_path, {"ce-bf16": {"pallas_rows": 3.0, "xla": 4.0}})
    assert ce_auto_order(jnp.bfloat16, 16384, 768, 50304, H100).order == ("pallas_rows", "xla")


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_the_row_kernels_are_priced_by_their_sweeps_of_the_logits(z_loss):
    """The estimate's price of each row-kernel launch the head makes (costs.py): the fused
    gradient's kernel reads a chunk's bf16 logits twice (two sweeps, no L2 credit) and writes
    the bf16 gradient and three statistics; the z-loss backward's reads them once."""
    from tjx.kernels import custom_call_cost

    c, d, v = 8, 16, 64
    h = jax.ShapeDtypeStruct((2, c, d), jnp.bfloat16)
    w = jax.ShapeDtypeStruct((d, v), jnp.bfloat16)
    labels = jax.ShapeDtypeStruct((2, c), jnp.int32)

    def loss(h, w, y):
        return chunked_cross_entropy(
            h, w, y, chunk_size=2 * c, z_loss=z_loss, logits_dtype=jnp.bfloat16, row_kernel=True
        ).loss

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(h, w, labels).jaxpr
    found = []

    def walk(j):
        for e in j.eqns:
            if e.primitive.name == "pallas_call":
                hlo = {"bfloat16": "bf16", "float32": "f32", "int32": "s32"}
                ops = [(hlo[str(x.aval.dtype)], x.aval.shape) for x in e.invars]
                outs = [(hlo[str(x.aval.dtype)], x.aval.shape) for x in e.outvars]
                found.append((str(e.params["name"]), ops, outs))
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                walk(sub)

    walk(jaxpr)
    name = "tjx_ce_rows_grad" if z_loss else "tjx_ce_rows"
    assert [f[0] for f in found] == [name]
    _, ops, outs = found[0]
    flops, read, written = custom_call_cost(name, (2 * c, 1, 1), ops, outs)
    logits = 2 * c * v * 2  # one chunk of 2·c tokens, bf16
    if z_loss:
        assert (read, written) == (logits + 8 * 2 * c + 8, logits)
    else:
        assert (read, written) == (2 * logits + 4 * 2 * c + 8, logits + 12 * 2 * c)
    assert flops == {}
