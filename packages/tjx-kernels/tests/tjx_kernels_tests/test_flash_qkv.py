"""Flash attention over one stacked ``qkv`` (#68): against float64 NumPy references, bitwise
against the separate-array kernel, its gradient written by the kernels into one buffer (no
concatenation), lowered for CUDA, partitioned on 8 simulated devices; Pallas interpret mode.

Each case compiles one jitted function returning the output and ``d_qkv`` (~3 s a shape)."""

from __future__ import annotations

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from tjx.kernels import (
    AttentionKernel,
    AttentionMask,
    attention,
    attention_qkv,
    flash_attention,
    flash_attention_qkv,
    flash_qkv,
    reads_stacked_qkv,
)
from tjx.kernels.costs import custom_call_cost
from tjx.kernels.launch import LaunchDefaults

from ._ref import cuda_target, np_attention, np_mask, rel_err

F32, BF16 = jnp.float32, jnp.bfloat16
TOL = {F32: 1e-5, BF16: 2e-2}


@pytest.fixture
def biases_in_kernel(monkeypatch):
    """The kernels add the biases whatever the tiles (the rule keeps them in for 16-bit
    head_dim <= 64 only: `test_the_kernels_add_the_biases_where_they_compile_cheaply`), so
    that float32 cases check that path to float32's tolerance."""
    monkeypatch.setattr(flash_qkv, "biases_in_kernel", lambda dtype, head_dim: True)


def _inputs(seed, b, s, h, d, dtype):
    """qkv [b, s, 3, h, d] and d_out [b, s, h, d] as float64, rounded through ``dtype``."""
    rng = np.random.default_rng(seed)
    qkv, do = rng.standard_normal((b, s, 3, h, d)), rng.standard_normal((b, s, h, d))
    return [np.asarray(jnp.asarray(x, dtype).astype(F32), np.float64) for x in (qkv, do)]


def _segments(seed, b, s):
    """1-3 segments a row, then 1..s/4 padding tokens (id 0)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((b, s), np.int32)
    for r in range(b):
        n = s - int(rng.integers(1, s // 4 + 1))
        cuts = np.sort(rng.integers(0, n, size=2))
        ids[r, :n] = 1 + (np.arange(n) >= cuts[0]) + (np.arange(n) >= cuts[1])
    return ids


def _biases(seed, h, d, dtype):
    """Three [h, d] biases (float64, rounded through ``dtype``)."""
    rng = np.random.default_rng(seed)
    xs = rng.standard_normal((3, h, d))
    return [np.asarray(jnp.asarray(x, dtype).astype(F32), np.float64) for x in xs]


def _run(fn, qkv, do, dtype, biases=None):
    """(out, d_qkv[, d_biases]) of ``fn(qkv[, biases])`` for the cotangent ``do``, as float32
    NumPy arrays."""

    @jax.jit
    def fwd_bwd(qkv, do, *biases):
        out, vjp = jax.vjp(fn, qkv, *biases)
        return out, *vjp(do.astype(out.dtype))

    extra = [] if biases is None else [tuple(jnp.asarray(b, dtype) for b in biases)]
    got = fwd_bwd(jnp.asarray(qkv, dtype), jnp.asarray(do, dtype), *extra)
    return [np.asarray(x.astype(F32)) for x in jax.tree.leaves(got)]


def _separate(mask=None, **kw):
    """flash_attention of the three slots (the path a stacked model no longer takes)."""
    return lambda x: flash_attention(x[:, :, 0], x[:, :, 1], x[:, :, 2], mask, **kw)


def _masked(kw):
    """``kw``'s mask parts as an AttentionMask, and the other arguments."""
    parts = ("causal", "segment_ids", "window")
    rest = {name: value for name, value in kw.items() if name not in parts}
    return AttentionMask(**{name: kw[name] for name in parts if name in kw}), rest


# (batch, seq, heads, head_dim, causal, segments, window, biases, dtype); 37/70 pad the
# sequence, 50 the head_dim (to 64), "pair" passes (q_ids, kv_ids).
CASES = [
    (2, 37, 4, 64, True, "self", None, True, F32),
    (1, 64, 2, 50, False, "pair", None, True, F32),
    (1, 96, 2, 32, True, None, 24, False, F32),
    (2, 70, 4, 64, True, "self", None, True, BF16),
]


@pytest.mark.parametrize("b,s,h,d,causal,segs,window,bias,dtype", CASES)
def test_stacked_flash_matches_float64_reference(b, s, h, d, causal, segs, window, bias, dtype):
    """Output, ``d_qkv`` and the biases' gradients (each slot's sum over batch and rows)
    against float64 attention of the biased slots."""
    seed = 7 * s + d + h
    qkv, do = _inputs(seed, b, s, h, d, dtype)
    ids = seg = None
    if segs is not None:
        ids = _segments(seed, b, s)
        seg = jnp.asarray(ids) if segs == "self" else (jnp.asarray(ids), jnp.asarray(ids))
    biases = _biases(seed, h, d, dtype) if bias else None
    slots = [qkv[:, :, i] + (0.0 if biases is None else biases[i]) for i in range(3)]
    mask = np_mask(b, s, s, causal=causal, q_ids=ids, kv_ids=ids, window=window)
    out, dq, dk, dv = np_attention(*slots, mask, d_out=do)
    want = [out, np.stack([dq, dk, dv], axis=2)]
    want += [] if biases is None else [g.sum(axis=(0, 1)) for g in (dq, dk, dv)]

    def fn(x, *b):
        qkv_bias = b[0] if b else None
        return flash_attention_qkv(
            x, mask=AttentionMask(causal=causal, segment_ids=seg, window=window), qkv_bias=qkv_bias
        )

    got = _run(fn, qkv, do, dtype, biases)
    names = ("out", "d_qkv", "d_q_bias", "d_k_bias", "d_v_bias")
    assert len(got) == len(want)
    for name, a, e in zip(names, got, want, strict=False):
        assert a.shape == e.shape and np.all(np.isfinite(a)), name
        # d_k_bias is 0 in exact arithmetic (softmax ignores a shift of every logit): compared
        # on d_v_bias's scale.
        scale = np.max(np.abs(want[-1])) if name == "d_k_bias" else None
        err = rel_err(a, e) if scale is None else float(np.max(np.abs(a - e)) / scale)
        assert err <= TOL[dtype], (name, err)


@pytest.mark.parametrize(
    "kw",
    [
        # the backward's head split (two 16-column slices of a padded head_dim 32) and explicit
        # tiles: the stacked kernels write each slice of their slots
        {"causal": True, "launch": LaunchDefaults(16, 16, 1, 16, 32, 1, head_split_bwd=2)},
        {"causal": False, "softcap": 5.0, "window": 9, "block_q": 16, "block_k": 32},
    ],
)
def test_stacked_flash_is_the_separate_kernel_bitwise(kw, biases_in_kernel):
    """The same kernel bodies, tiles and masks on the same values: the output and the gradient's
    three slots are the separate-array kernel's dq, dk, dv exactly (interpret mode), and biases
    added as the kernels read are the biased slots' (rounded once, as XLA's add)."""
    qkv, do = _inputs(21, 2, 40, 2, 30, F32)
    mask, kw = _masked(kw)
    got = _run(lambda x: flash_attention_qkv(x, mask, **kw), qkv, do, F32)
    want = _run(_separate(mask, **kw), qkv, do, F32)
    for a, e in zip(got, want, strict=True):
        assert np.array_equal(a, e)
    biases = _biases(22, 2, 30, F32)
    with_bias = lambda x, b: flash_attention_qkv(x, mask, qkv_bias=b, **kw)
    added = lambda x, b: _separate(mask, **kw)(x + jnp.stack(b)[None, None])
    got = _run(with_bias, qkv, do, F32, biases)
    want = _run(added, qkv, do, F32, biases)
    for a, e in zip(got[:2], want[:2], strict=True):  # the biases' sums: another fusion's
        assert np.array_equal(a, e)
    for a, e in zip(got[2:], want[2:], strict=True):
        assert np.max(np.abs(a - e)) <= 1e-6 * np.max(np.abs(want[-1]))


def _primitives(jaxpr):
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            yield from _primitives(sub)


def _kernel_calls(jaxpr):
    """{kernel name: its pallas_call's params} of a traced program."""
    return {
        e.params["name"]: e.params for e in _primitives(jaxpr) if e.primitive.name == "pallas_call"
    }


@pytest.mark.parametrize("stacked", [True, False])
def test_the_gradient_is_one_buffer_with_no_concatenation(stacked):
    """The backward's dK/dV kernel makes ``d_qkv`` and the dQ kernel fills its query slot in
    place (its input aliased to its output); nothing stacks or concatenates. Control: the
    separate kernel's gradient of the same ``qkv`` needs a concatenation of dq, dk, dv."""
    qkv = jnp.ones((1, 64, 3, 2, 16), F32)
    fn = (
        (lambda x: flash_attention_qkv(x, mask=AttentionMask(causal=True)))
        if stacked
        else _separate(AttentionMask(causal=True))
    )
    jaxpr = jax.make_jaxpr(jax.grad(lambda x: fn(x).sum()))(qkv).jaxpr
    joins = [
        e
        for e in _primitives(jaxpr)
        if e.primitive.name in ("concatenate", "dynamic_update_slice", "add_any")
    ]
    calls = _kernel_calls(jaxpr)
    if not stacked:
        assert joins and "tjx_flash_bwd_dq" in calls
        return
    assert not joins, [e.primitive.name for e in joins]
    assert set(calls) == {"tjx_flash_qkv_fwd", "tjx_flash_qkv_bwd_dkdv", "tjx_flash_qkv_bwd_dq"}
    dq = calls["tjx_flash_qkv_bwd_dq"]
    n_in = len(dq["jaxpr"].invars) - 1  # the call's operands; its one output last
    assert dq["input_output_aliases"] == ((n_in - 1, 0),)  # d_qkv in, d_qkv out


def test_stacked_kernels_lower_to_triton_for_cuda():
    """Cross-lowered for CUDA without a GPU: three Triton calls, the dQ one aliasing its last
    operand (the dK/dV call's result) to its result."""
    from jax import export

    def fwd_bwd(qkv, ids, qkv_bias):
        def loss(qkv, qkv_bias):
            out = flash_attention_qkv(
                qkv,
                mask=AttentionMask(causal=True, segment_ids=ids),
                interpret=False,
                qkv_bias=qkv_bias,
            )
            return out.astype(F32).sum()

        return jax.grad(loss, (0, 1))(qkv, qkv_bias)

    args = [
        jax.ShapeDtypeStruct((1, 300, 3, 4, 64), BF16),
        jax.ShapeDtypeStruct((1, 300), jnp.int32),
        (jax.ShapeDtypeStruct((4, 64), BF16),) * 3,
    ]
    triton = "__gpu$xla.gpu.triton"
    with cuda_target():
        exported = export.export(
            jax.jit(fwd_bwd),
            platforms=["cuda"],
            disabled_checks=[export.DisabledSafetyCheck.custom_call(triton)],
        )(*args)
    text = exported.mlir_module()
    for name in ("tjx_flash_qkv_fwd", "tjx_flash_qkv_bwd_dkdv", "tjx_flash_qkv_bwd_dq"):
        assert f'name = "{name}"' in text
    assert text.count(triton) == 3
    assert text.count("output_operand_aliases") == 1


@pytest.mark.parametrize("shardy", [True, False])
def test_sharded_stacked_flash_runs_on_local_shards(biases_in_kernel, shardy):
    """Batch over a 2-way and heads over a 4-way axis: the kernels run on each device's shard
    (no all-gather, the global qkv shape on no device) and give the unsharded values; under
    Shardy (jax's default) and GSPMD (the callbacks)."""
    previous = jax.config.jax_use_shardy_partitioner
    jax.config.update("jax_use_shardy_partitioner", shardy)
    try:
        _sharded_case()
    finally:
        jax.config.update("jax_use_shardy_partitioner", previous)


def _sharded_case():
    assert jax.device_count() == 8, "tools/devtest simulates 8 CPU devices"
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("data", "model"))
    b, s, h, d = 2, 32, 8, 16
    qkv, do = (jnp.asarray(x, F32) for x in _inputs(5, b, s, h, d, F32))
    ids = jnp.asarray(_segments(5, b, s))
    biases = jnp.asarray(np.stack(_biases(5, h, d, F32)), F32)  # [3, h, d]

    def fwd_bwd(qkv, ids, do, biases):
        def attend(x, bias):
            return flash_attention_qkv(
                x,
                mask=AttentionMask(causal=True, segment_ids=ids),
                qkv_bias=(bias[0], bias[1], bias[2]),
            )

        out, vjp = jax.vjp(attend, qkv, biases)
        return out, *vjp(do)

    specs = (
        PartitionSpec("data", None, None, "model"),
        PartitionSpec("data"),
        PartitionSpec("data", None, "model"),
        PartitionSpec(None, "model"),
    )
    args = (qkv, ids, do, biases)
    placed = [jax.device_put(x, NamedSharding(mesh, p)) for x, p in zip(args, specs, strict=True)]
    compiled = jax.jit(fwd_bwd).lower(*placed).compile()
    got, hlo = compiled(*placed), compiled.as_text()
    want = jax.jit(fwd_bwd)(*args)
    for a, e, spec in zip(got, want, (specs[2], specs[0], specs[3]), strict=True):
        assert rel_err(a, e) <= 1e-6
        assert a.sharding.is_equivalent_to(NamedSharding(mesh, spec), a.ndim)
    assert "all-gather" not in hlo
    assert f"f32[{b},{s},3,{h},{d}]" not in hlo and f"f32[1,{s},3,2,{d}]" in hlo


@pytest.mark.parametrize("per_example_bias", [False, True])
def test_vmap_folds_into_the_batch(per_example_bias, biases_in_kernel):
    """vmap over examples (shared biases: they pass as they are), or over examples and their
    biases (a vmap over models: each example's biases added to its qkv first): each example's
    output and gradients are its own call's."""
    qkv, do = (jnp.asarray(x, F32) for x in _inputs(9, 3, 16, 2, 16, F32))
    bias = jnp.asarray(np.stack([np.stack(_biases(9 + i, 2, 16, F32)) for i in range(3)]), F32)

    def one(x, b, ct):  # one example: [s, 3, h, d], its biases [3, h, d]
        attend = lambda x, b: flash_attention_qkv(
            x[None], mask=AttentionMask(causal=True), qkv_bias=tuple(b)
        )[0]
        out, vjp = jax.vjp(attend, x, b)
        return out, *vjp(ct)

    bias_axis = 0 if per_example_bias else None
    b_in = bias if per_example_bias else bias[0]
    got = jax.jit(jax.vmap(one, in_axes=(0, bias_axis, 0)))(qkv, b_in, do)
    for i in range(3):
        want = jax.jit(one)(qkv[i], bias[i] if per_example_bias else bias[0], do[i])
        for g, w in zip(got[:2], want[:2], strict=True):
            np.testing.assert_allclose(np.asarray(g[i]), np.asarray(w), rtol=0, atol=1e-6)
        if per_example_bias:
            np.testing.assert_allclose(np.asarray(got[2][i]), np.asarray(want[2]), atol=1e-5)
    if not per_example_bias:  # the shared biases' gradient: every example's summed
        total = sum(jax.jit(one)(qkv[i], bias[0], do[i])[2] for i in range(3))
        np.testing.assert_allclose(np.asarray(got[2].sum(0)), np.asarray(total), atol=1e-5)


def test_dispatcher_takes_the_stacked_kernel_for_16_bit_pallas_only():
    """`attention_qkv` runs the stacked Pallas kernel on 16-bit tiles, every other kernel (and
    float32 tiles) on the three biased slices (`attention`'s own result), and a zero-length
    sequence without a kernel."""
    assert reads_stacked_qkv(AttentionKernel.PALLAS, BF16)
    assert reads_stacked_qkv(AttentionKernel.PALLAS, jnp.float16)
    assert not reads_stacked_qkv(AttentionKernel.PALLAS, F32)
    assert not any(reads_stacked_qkv(k, BF16) for k in (AttentionKernel.XLA, AttentionKernel.CUDNN))
    qkv = jnp.asarray(_inputs(3, 1, 24, 2, 16, F32)[0], F32)
    bias = tuple(jnp.asarray(b, F32) for b in _biases(3, 2, 16, F32))
    q, k, v = (qkv[:, :, i] + bias[i] for i in range(3))
    for kernel in ("xla", "pallas", AttentionKernel.XLA):  # float32: that kernel on the slices
        got = attention_qkv(
            qkv, mask=AttentionMask(causal=True), implementation=kernel, qkv_bias=bias
        )
        assert np.array_equal(
            got, attention(q, k, v, mask=AttentionMask(causal=True), implementation=kernel)
        )
    pallas = jax.make_jaxpr(lambda x: attention_qkv(x, implementation="pallas"))(qkv.astype(BF16))
    assert "tjx_flash_qkv_fwd" in _kernel_calls(pallas.jaxpr)
    empty = attention_qkv(jnp.ones((2, 0, 3, 2, 16), BF16), implementation="pallas")
    assert empty.shape == (2, 0, 2, 16)
    empty = flash_attention_qkv(jnp.ones((2, 0, 3, 2, 16), BF16))  # no row: nothing to tile
    assert empty.shape == (2, 0, 2, 16) and empty.dtype == BF16


@pytest.mark.parametrize("dtype,d,inside", [(BF16, 64, True), (BF16, 128, False), (F32, 64, False)])
def test_the_kernels_add_the_biases_where_they_compile_cheaply(dtype, d, inside):
    """16-bit tiles of head_dim <= 64 take the biases as kernel operands (no biased copy);
    elsewhere XLA adds them first (in-kernel adds spilled the backward's registers on sm_90)."""
    qkv = jnp.zeros((1, 16, 3, 2, d), dtype)
    bias = (jnp.zeros((2, d), dtype),) * 3
    loss = lambda x, b: flash_attention_qkv(x, qkv_bias=b).astype(F32).sum()
    jaxpr = jax.make_jaxpr(jax.grad(loss, (0, 1)))(qkv, bias).jaxpr
    calls = [e for e in _primitives(jaxpr) if e.primitive.name == "pallas_call"]
    bias_operands = [
        len([v for v in e.invars if v.aval.shape == (2, d)]) for e in calls
    ]  # each kernel: three bias rows, or none
    assert bias_operands == ([3, 3, 3] if inside else [0, 0, 0])
    assert flash_qkv.biases_in_kernel(dtype, d) is inside


BIAS = jnp.zeros((2, 16), F32)


@pytest.mark.parametrize(
    "shape,kwargs,match",
    [
        ((1, 8, 2, 16), {}, r"\[batch, seq, 3, heads, head_dim\]"),  # q-shaped
        ((1, 8, 4, 2, 16), {}, r"stacked on axis 2"),  # four slots
        ((1, 8, 3, 2, 16), {"block_q": 24}, "block_q"),
        ((1, 8, 3, 2, 300), {}, "head_dim"),
        ((1, 8, 3, 2, 16), {"qkv_bias": (BIAS, BIAS)}, r"three arrays .* \(2, 16\)"),
        ((1, 8, 3, 2, 16), {"qkv_bias": (BIAS, BIAS, BIAS.T)}, r"\(2, 16\), \(16, 2\)\]"),
        ((1, 8, 3, 2, 16), {"qkv_bias": (BIAS, BIAS, BIAS.astype(BF16))}, "dtype float32"),
    ],
)
def test_bad_stacked_input_is_one_clear_error(shape, kwargs, match):
    with pytest.raises(ValueError, match=match):
        flash_attention_qkv(jnp.ones(shape, F32), **kwargs)


def _kernel_operand_shapes():
    """{stacked kernel: its operands' ranks} in a traced program with segment ids (no
    biases: their [h, d] rows are left out of the price either way)."""
    qkv, ids = jnp.zeros((1, 16, 3, 2, 16), BF16), jnp.ones((1, 16), jnp.int32)
    loss = lambda x: flash_attention_qkv(x, mask=AttentionMask(segment_ids=ids)).astype(F32).sum()
    jaxpr = jax.make_jaxpr(jax.grad(loss))(qkv).jaxpr
    return {
        e.params["name"]: [len(v.aval.shape) for v in e.invars]
        for e in _primitives(jaxpr)
        if e.primitive.name == "pallas_call"
    }


def test_the_stacked_kernels_are_priced_as_the_separate_ones():
    """tjx-metrics' estimate prices the stacked calls (operands: qkv's [b, s, 3h, d] view three
    times, the dQ call's aliased [b, s, 3, h, d] buffer last) at the separate kernels' FLOPs
    and bytes for the same shapes; the operands as a lowered program has them."""
    b, s, h, d = 4, 1024, 12, 64
    view, qkv = ("bf16", (b, s, 3 * h, d)), ("bf16", (b, s, 3, h, d))
    q, lse = ("bf16", (b, s, h, d)), ("f32", (b, h, s))
    ids = [("s32", (b, s))] * 2
    grid = (s // 128, b, h)
    pairs = [
        ("tjx_flash_fwd", [q, q, q, *ids], [q, lse],
         "tjx_flash_qkv_fwd", [view] * 3 + ids, [q, lse]),
        ("tjx_flash_bwd_dq", [q, q, q, q, lse, lse, *ids], [q], "tjx_flash_qkv_bwd_dq",
         [view] * 3 + [q, lse, lse, *ids, qkv], [qkv]),
        ("tjx_flash_bwd_dkdv", [q, q, q, q, lse, lse, *ids], [q, q], "tjx_flash_qkv_bwd_dkdv",
         [view] * 3 + [q, lse, lse, *ids], [qkv]),
    ]  # fmt: skip
    shapes = _kernel_operand_shapes()
    for _name, _ops, _, stacked, s_ops, _ in pairs:  # the operands' ranks are the program's
        assert shapes[stacked] == [len(dims) for _, dims in s_ops], stacked
    biases = [("bf16", (h, d))] * 3  # read once a program: left out, as the ids' few bytes
    for name, ops, res, stacked, s_ops, s_res in pairs:
        want = custom_call_cost(name, grid, ops, res, device_kind="NVIDIA H100 80GB HBM3")
        got = custom_call_cost(stacked, grid, s_ops, s_res, device_kind="NVIDIA H100 80GB HBM3")
        assert want is not None and got == want, (stacked, got, want)
        alias = s_ops[-1:] if stacked.endswith("_dq") else []
        with_bias = s_ops[: len(s_ops) - len(alias)] + biases + alias
        got = custom_call_cost(stacked, grid, with_bias, s_res, device_kind="NVIDIA H100 80GB HBM3")
        assert got == want, (stacked, "with biases")
