"""chunked_cross_entropy against the naive full-logits computation in float64."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import CrossEntropyOutput, chunked_cross_entropy

from ._ref import np_cross_entropy, rel_err


def _data(seed, shape, d, vocab, ignore_frac=0.2, ignore_index=-100):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((*shape, d))
    w = rng.standard_normal((d, vocab)) * 0.5
    labels = rng.integers(0, vocab, shape).astype(np.int32)
    labels[rng.random(shape) < ignore_frac] = ignore_index
    return hidden, w, labels


@pytest.mark.parametrize(
    "shape,chunk,z_loss,ignore_index",
    [
        ((3, 7), 4, 0.0, -100),  # 21 tokens: padded up to 24
        ((2, 8), 16, 1e-2, -100),  # one chunk
        ((17,), 1, 0.0, 0),  # chunk of one token; ignore_index inside the vocab range
        ((2, 3), 64, 1e-1, -1),  # chunk larger than the token count
        ((2, 7), 6, 0.0, -100),  # 3 positions per row per step: last axis padded 7 → 9
    ],
)
def test_matches_naive_loss_counts_and_grads(shape, chunk, z_loss, ignore_index):
    d, vocab = 12, 37
    hidden, w, labels = _data(chunk + len(shape), shape, d, vocab, ignore_index=ignore_index)
    loss, sum_loss, n, correct, dh, dw = np_cross_entropy(
        hidden, w, labels, ignore_index=ignore_index, z_loss=z_loss
    )

    def fn(h, w):
        out = chunked_cross_entropy(
            h, w, jnp.asarray(labels), chunk_size=chunk, ignore_index=ignore_index, z_loss=z_loss
        )
        return out.loss, out

    (got_loss, out), (g_h, g_w) = jax.jit(jax.value_and_grad(fn, argnums=(0, 1), has_aux=True))(
        jnp.asarray(hidden, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    assert isinstance(out, CrossEntropyOutput)
    assert rel_err(got_loss, loss) <= 1e-5
    assert rel_err(out.sum_loss, sum_loss) <= 1e-5
    assert int(out.num_tokens) == n and int(out.num_correct) == correct
    assert out.num_tokens.dtype == jnp.int32 and out.loss.dtype == jnp.float32
    assert rel_err(g_h, dh) <= 1e-5
    assert rel_err(g_w, dw) <= 1e-5


def test_sum_loss_gradient_and_accuracy_counts():
    hidden, w, labels = _data(3, (4, 5), 8, 11)
    w = w * 0.0 + np.eye(8, 11) * 10.0  # logits ≈ 10·hidden[:, :8] → argmax is predictable
    _, sum_loss, _, correct, _, _ = np_cross_entropy(hidden, w, labels)
    fn = lambda h: chunked_cross_entropy(
        h, jnp.asarray(w, jnp.float32), jnp.asarray(labels), chunk_size=3
    )
    out = jax.jit(fn)(jnp.asarray(hidden, jnp.float32))
    assert int(out.num_correct) == correct
    g = jax.jit(jax.grad(lambda h: fn(h).sum_loss))(jnp.asarray(hidden, jnp.float32))
    assert rel_err(out.sum_loss, sum_loss) <= 1e-5 and bool(jnp.all(jnp.isfinite(g)))


def test_all_ignored_gives_zero_loss_and_zero_grads():
    hidden, w, _ = _data(4, (2, 3), 6, 9)
    labels = jnp.full((2, 3), -100, jnp.int32)
    fn = lambda h, w: chunked_cross_entropy(h, w, labels, chunk_size=2).loss
    loss, grads = jax.jit(jax.value_and_grad(fn, argnums=(0, 1)))(
        jnp.asarray(hidden, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    assert float(loss) == 0.0
    assert all(float(jnp.max(jnp.abs(g))) == 0.0 for g in grads)


def test_bf16_inputs_within_tolerance():
    hidden, w, labels = _data(5, (4, 16), 32, 50)
    h16 = jnp.asarray(hidden, jnp.bfloat16)
    w16 = jnp.asarray(w, jnp.bfloat16)
    loss, *_ = np_cross_entropy(
        np.asarray(h16.astype(jnp.float32)), np.asarray(w16.astype(jnp.float32)), labels
    )
    fn = lambda h: chunked_cross_entropy(h, w16, jnp.asarray(labels), chunk_size=8)
    out = jax.jit(fn)(h16)
    g = jax.jit(jax.grad(lambda h: fn(h).loss))(h16)
    assert out.loss.dtype == jnp.float32 and g.dtype == jnp.bfloat16
    assert rel_err(out.loss, loss) <= 2e-2


def test_extreme_hidden_stays_finite():
    hidden, w, labels = _data(6, (2, 4), 8, 13)
    h = jnp.asarray(hidden * 1e3, jnp.float32)
    fn = lambda h: chunked_cross_entropy(
        h, jnp.asarray(w, jnp.float32), jnp.asarray(labels), chunk_size=3, z_loss=1e-4
    ).loss
    loss, g = jax.jit(jax.value_and_grad(fn))(h)
    assert bool(jnp.isfinite(loss)) and bool(jnp.all(jnp.isfinite(g)))


def _all_avals(jaxpr):
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            yield var.aval
        for param in eqn.params.values():
            subs = param if isinstance(param, list | tuple) else [param]
            for sub in subs:
                inner = getattr(sub, "jaxpr", sub)  # ClosedJaxpr → Jaxpr
                if hasattr(inner, "eqns"):
                    yield from _all_avals(inner)


@pytest.mark.parametrize("shape", [(64,), (4, 16)])
def test_never_materialises_full_logits(shape):
    n_tok, vocab, d = 64, 96, 8
    hidden, w, labels = _data(7, shape, d, vocab)
    fn = lambda h, w: chunked_cross_entropy(h, w, jnp.asarray(labels), chunk_size=16).loss
    jaxpr = jax.make_jaxpr(jax.grad(fn, argnums=(0, 1)))(
        jnp.asarray(hidden, jnp.float32), jnp.asarray(w, jnp.float32)
    )
    shapes = [tuple(getattr(a, "shape", ())) for a in _all_avals(jaxpr.jaxpr)]
    assert (16, vocab) in shapes  # the chunk's logits exist...
    assert all(
        not (len(s) >= 2 and s[-1] == vocab and int(np.prod(s[:-1])) >= n_tok) for s in shapes
    )  # ...the full [tokens, vocab] never does


def test_batch_sharded_input_gives_the_same_result():
    devices = np.array(jax.devices())
    mesh = jax.sharding.Mesh(devices, ("data",))
    rows = len(devices)
    hidden, w, labels = _data(8, (rows, 6), 8, 21)
    spec = jax.sharding.PartitionSpec("data")
    h = jax.device_put(jnp.asarray(hidden, jnp.float32), jax.sharding.NamedSharding(mesh, spec))
    lab = jax.device_put(jnp.asarray(labels), jax.sharding.NamedSharding(mesh, spec))
    fn = jax.jit(
        jax.value_and_grad(
            lambda h, w, lab: chunked_cross_entropy(h, w, lab, chunk_size=2 * rows).loss
        )
    )
    loss, g = fn(h, jnp.asarray(w, jnp.float32), lab)
    ref_loss, *_, dh, _ = np_cross_entropy(hidden, w, labels)
    assert rel_err(loss, ref_loss) <= 1e-5 and rel_err(g, dh) <= 1e-5


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_bf16_stored_logits_give_the_loss_and_grads_of_the_rounded_logits(z_loss):
    # Reference: float64 CE of the bfloat16 inputs' logits rounded to bfloat16 (what the
    # product stores), its gradient through the float64 softmax of those rounded logits.
    seed = int(np.random.default_rng().integers(1 << 30))
    hidden, w, labels = _data(seed, (4, 16), 32, 50)
    h16, w16 = jnp.asarray(hidden, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
    h64, w64 = (np.asarray(x.astype(jnp.float32), np.float64) for x in (h16, w16))
    logits = np.asarray(jnp.asarray(h64.reshape(-1, 32) @ w64, jnp.bfloat16), np.float64)
    lab = labels.reshape(-1)
    valid = lab != -100
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    ce = np.where(valid, lse - logits[np.arange(len(lab)), np.where(valid, lab, 0)], 0.0)
    n = max(int(valid.sum()), 1)
    loss = (ce.sum() + z_loss * np.where(valid, lse**2, 0.0).sum()) / n

    def fn(h, dtype):
        return chunked_cross_entropy(
            h, w16, jnp.asarray(labels), chunk_size=8, z_loss=z_loss, logits_dtype=dtype
        )

    out = jax.jit(lambda h: fn(h, jnp.bfloat16))(h16)
    # bf16 rounding of a product accumulated in float32 vs in float64: a last-bit flip of a
    # few logits moves the mean CE by well under 1e-3.
    assert abs(float(out.loss) - loss) <= 1e-3 * max(1.0, abs(loss))
    g16 = jax.jit(jax.grad(lambda h: fn(h, jnp.bfloat16).loss))(h16)
    g32 = jax.jit(jax.grad(lambda h: fn(h, None).loss))(h16)
    assert g16.dtype == jnp.bfloat16
    # The gradient moves by the logits' rounding (bf16, 2**-8 relative) and no more.
    assert rel_err(g16, g32) <= 2e-2
    exact = fn(h16, jnp.float32)
    assert int(out.num_tokens) == int(exact.num_tokens)


def test_logits_dtype_must_be_floating():
    with pytest.raises(ValueError, match="logits_dtype"):
        chunked_cross_entropy(
            jnp.ones((2, 4, 6)), jnp.ones((6, 10)), jnp.ones((2, 4), jnp.int32),
            logits_dtype=jnp.int8,
        )  # fmt: skip


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"hidden": jnp.ones((2, 5))}, "unembedding"),
        ({"labels": jnp.ones((2, 3), jnp.int32)}, "labels"),
        ({"labels": jnp.ones((2, 4))}, "integer"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"z_loss": -1.0}, "z_loss"),
    ],
)
def test_bad_arguments(kwargs, match):
    args = {
        "hidden": jnp.ones((2, 4, 6)),
        "unembedding": jnp.ones((6, 10)),
        "labels": jnp.ones((2, 4), jnp.int32),
        "chunk_size": 4,
    }
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        chunked_cross_entropy(
            args.pop("hidden"), args.pop("unembedding"), args.pop("labels"), **args
        )


def test_auto_chunk_size_takes_a_quarter_of_the_tokens_within_1_gib_and_above_8_mib():
    from tjx.kernels import auto_chunk_size

    assert auto_chunk_size(16 * 1024, 50304) == 4096  # gpt2_small's batch: 4 chunks of 0.8 GB
    assert auto_chunk_size(4 * 1024 + 1, 50304) == 1025  # rounds up: never more than 4 chunks
    big = 128 * 1024  # 26 GB of logits: 25 chunks of at most 1 GiB
    assert auto_chunk_size(big, 50304) == -(-big // 25)
    assert -(-big // 25) * 4 * 50304 <= 1 << 30 < -(-big // 24) * 4 * 50304
    assert auto_chunk_size(16 * 128, 257) == (8 << 20) // (4 * 257)  # tiny: one 8 MiB chunk
    assert auto_chunk_size(0, 10) >= 1
    with pytest.raises(ValueError, match="vocab >= 1"):
        auto_chunk_size(8, 0)


def _temp_bytes(fn, *args):
    """XLA's compiled temporaries of ``value_and_grad(fn)`` w.r.t. hidden and unembedding."""
    compiled = jax.jit(jax.value_and_grad(fn, argnums=(0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def _full_logits_ce(h, w, labels):
    """The full-logits loss (what the trainer's plain path computes): logits, then mean CE."""
    logits = jnp.einsum("bsd,dv->bsv", h, w, preferred_element_type=jnp.float32)
    lse = jax.nn.logsumexp(logits, axis=-1)
    return jnp.mean(lse - jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0])


@pytest.mark.parametrize("batch", [1, 4])
def test_default_chunks_keep_compiled_logits_memory_within_a_quarter(batch):
    """Compiled, not run: the loss head's forward + backward temporaries with the default
    (shape-chosen) chunks against the full-logits path, whose logits are 128 MiB."""
    seq, d, vocab = 4096 // batch, 64, 8192
    h = jax.ShapeDtypeStruct((batch, seq, d), jnp.float32)
    w = jax.ShapeDtypeStruct((d, vocab), jnp.float32)
    labels = jax.ShapeDtypeStruct((batch, seq), jnp.int32)
    chunked = lambda h, w, lab: chunked_cross_entropy(h, w, lab).loss
    assert _temp_bytes(chunked, h, w, labels) <= _temp_bytes(_full_logits_ce, h, w, labels) / 4


@pytest.mark.parametrize(("z_loss", "products"), [(0.0, 3), (1e-2, 4)])
def test_without_z_loss_the_gradient_needs_three_head_products_not_four(z_loss, products):
    """Without z-loss the forward forms the gradient while the logits exist (h·W, dlogits·Wᵀ,
    hᵀ·dlogits); with it the backward recomputes the logits first (a fourth product)."""
    h = jax.ShapeDtypeStruct((2, 16, 8), jnp.float32)
    w = jax.ShapeDtypeStruct((8, 32), jnp.float32)
    labels = jnp.zeros((2, 16), jnp.int32)

    def loss(h, w):
        return chunked_cross_entropy(h, w, labels, chunk_size=8, z_loss=z_loss).loss

    text = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(h, w).as_text()
    assert text.count("stablehlo.dot_general") == products


def test_one_pass_row_stats_match_float64_and_take_the_first_of_equal_maxima():
    from tjx.kernels.cross_entropy import row_stats

    x = np.random.default_rng(11).standard_normal((6, 777)) * 8
    x[1, [5, 300, 776]] = 40.0  # three equal maxima: the first wins, as jnp.argmax
    x[2] = -1e30  # a row of huge negatives: finite, no inf − inf
    labels = np.asarray([0, 300, 776, 5, 123, 9])
    lse, top, picked = jax.jit(row_stats)(jnp.asarray(x, jnp.float32), jnp.asarray(labels))
    x32 = np.asarray(jnp.asarray(x, jnp.float32), np.float64)
    mx = x32.max(-1, keepdims=True)
    ref = mx[:, 0] + np.log(np.exp(x32 - mx).sum(-1))
    assert np.max(np.abs(np.asarray(lse, np.float64) - ref) / np.abs(ref)) < 1e-6
    assert list(np.asarray(top)) == list(x32.argmax(-1)) and int(top[1]) == 5
    assert np.array_equal(np.asarray(picked, np.float64), x32[np.arange(6), labels])


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_the_chunk_scan_sums_nothing_to_a_scalar_per_chunk(z_loss):
    """#68: each chunk adds its tokens' CE, lse², counted and correct flags to per-token running
    sums (elementwise: on a GPU, in the kernel that makes them) and the step sums those once
    after the scan; the four scalar sums a chunk were a reduction and three adds (four kernel
    launches a chunk). The results are the naive loss's (test_matches_naive_loss_counts_and_grads).
    """
    h = jax.ShapeDtypeStruct((2, 16, 8), jnp.float32)
    w = jax.ShapeDtypeStruct((8, 32), jnp.float32)
    labels = jax.ShapeDtypeStruct((2, 16), jnp.int32)

    def loss(h, w, labels):
        out = chunked_cross_entropy(h, w, labels, chunk_size=8, z_loss=z_loss)
        return out.loss, out.num_correct

    jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1), has_aux=True))(h, w, labels).jaxpr

    def scans(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name == "scan":
                yield e.params["jaxpr"].jaxpr
            for sub in jax.extend.core.jaxprs_in_params(e.params):
                yield from scans(sub)

    bodies = list(scans(jaxpr))
    assert bodies
    for body in bodies:
        for e in body.eqns:
            if e.primitive.name in ("reduce_sum", "reduce", "reduce_max", "argmax"):
                assert all(v.aval.ndim >= 1 for v in e.outvars), e  # per token, never a scalar


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
def test_a_vocab_major_unembedding_is_read_transposed_inside_the_chunks(z_loss):
    """#68: ``vocab_major=True`` takes the unembedding as ``[vocab, d_model]`` (a tied table
    as stored) and gives its gradient in that layout; loss and gradients are the float64
    full-logits loss's within float32 rounding, and the table is transposed only inside the
    scan (where XLA folds it into the products), never before it (a transposed copy)."""
    from tjx.kernels import linear_cross_entropy

    rng = np.random.default_rng(681)
    h = jnp.asarray(rng.standard_normal((2, 16, 6)), jnp.float32)
    table = jnp.asarray(rng.standard_normal((32, 6)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 32, (2, 16)), jnp.int32).at[0, 3].set(-100)

    def loss(h, t):
        return chunked_cross_entropy(
            h, t, labels, chunk_size=8, z_loss=z_loss, vocab_major=True
        ).loss

    def full(h, t):
        logits = jnp.einsum("bsd,vd->bsv", h, t)
        lse = jax.nn.logsumexp(logits, axis=-1)
        pick = jnp.take_along_axis(logits, jnp.maximum(labels, 0)[..., None], axis=-1)[..., 0]
        valid = labels >= 0
        ce = jnp.where(valid, lse - pick, 0.0)
        z = jnp.where(valid, lse * lse, 0.0)
        return (jnp.sum(ce) + z_loss * jnp.sum(z)) / jnp.sum(valid)

    got_loss, got = jax.value_and_grad(loss, argnums=(0, 1))(h, table)
    with jax.enable_x64(True):
        args64 = [jnp.asarray(np.asarray(a), jnp.float64) for a in (h, table)]
        want_loss, want = jax.value_and_grad(full, argnums=(0, 1))(*args64)
        want = [np.asarray(w) for w in want]
    assert abs(float(got_loss) - float(want_loss)) < 1e-6 * abs(float(want_loss))
    assert got[1].shape == table.shape
    for g, r in zip(got, want, strict=True):
        assert rel_err(np.asarray(g, np.float64), r) < 1e-6
    same = linear_cross_entropy(h, table, labels, implementation="xla", vocab_major=True)
    ref = chunked_cross_entropy(h, table.T, labels)
    assert abs(float(same.loss) - float(ref.loss)) < 1e-6 * abs(float(ref.loss))
    # what the chunks' loop reads is the table itself, not a transposed copy of it
    outer = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1)))(h, table).jaxpr.eqns
    loops = [e for e in outer if e.primitive.name == "scan"]
    assert loops and all(v.aval.shape != (6, 32) for e in loops for v in e.invars)
    assert any(v.aval.shape == table.shape for e in loops for v in e.invars)
    with pytest.raises(ValueError, match=r"\[vocab, d_model\]"):
        chunked_cross_entropy(h, table.T, labels, vocab_major=True)
