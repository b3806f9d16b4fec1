"""cuDNN attention of packed batches (``cudnn_segments``): runs, branches, values and gradients.

No GPU here: cuDNN is emulated on CPU with its documented behaviour — the padding mask zeroes the
output rows past a row's length; the packed layout leaves tokens outside every segment
unspecified (here: NaN in outputs and gradients, so any leak shows).
"""

from __future__ import annotations

import functools

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest

import tjx.kernels.cudnn_segments as cs
from tjx.kernels import AttentionMask, attention, choice
from tjx.kernels._jax_private import SYMBOLS, _module
from tjx.kernels.choice import Target

from ._ref import emulate_cudnn, np_attention, np_mask, rel_err

H100 = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
A100 = Target("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))


def _runs(row):
    """(starts, lengths, distinct) of the runs of equal ids of one row, by a plain scan."""
    starts, lengths, seen, distinct = [], [], [], True
    for i, x in enumerate(row):
        if i == 0 or x != row[i - 1]:
            starts.append(i)
            lengths.append(1)
            if x != 0:
                distinct &= all(x > y for y in seen)
                seen.append(x)
        else:
            lengths[-1] += 1
    return starts, lengths, distinct


ROWS = [
    [1, 1, 1, 2, 2, 3, 3, 3],  # three documents
    [1, 1, 1, 1, 1, 1, 0, 0],  # one document and padding
    [0, 1, 1, 0, 2, 2, 2, 0],  # gaps
    [1, 1, 2, 2, 1, 1, 3, 3],  # id 1 in two runs: not distinct
    [1, 2, 3, 4, 5, 6, 7, 8],  # more runs than slots
    [0, 0, 0, 0, 0, 0, 0, 0],  # all padding
    [3, 3, 2, 2, 2, 5, 5, 5],  # decreasing id: not "later ids are new"
]


@pytest.mark.parametrize("m", [1, 3, 8])
def test_segment_runs_are_the_runs_of_each_row(m):
    ids = jnp.asarray(ROWS, jnp.int32)
    offsets, lengths, count, distinct = jax.jit(cs.segment_runs, static_argnums=1)(ids, m)
    assert offsets.shape == (len(ROWS), m + 1) and lengths.shape == (len(ROWS), m)
    for r, row in enumerate(ROWS):
        starts, lens, dist = _runs(row)
        want_off = (starts[:m] + [-1] * (m + 1))[: m + 1]
        want_len = (lens[:m] + [-1] * m)[:m]
        assert list(np.asarray(offsets[r])) == want_off, row
        assert list(np.asarray(lengths[r])) == want_len, row
        assert int(count[r]) == len(starts) and bool(distinct[r]) == dist, row


def test_each_batch_takes_the_cheap_branch_where_it_is_exact():
    def dense(rows, m=8, packed_ok=True):
        ids = jnp.asarray(rows, jnp.int32)
        return bool(cs.branch_index(ids, max_segments=m, packed_ok=packed_ok)[0])

    # Hopper: the packed layout
    assert not dense([ROWS[1], ROWS[5]])  # one document from column 0, or none
    assert not dense([ROWS[0], ROWS[1]])
    assert not dense([ROWS[2]])  # gaps: runs of padding are segments too (5 runs)
    assert dense([ROWS[2]], m=4)
    assert dense([ROWS[0]], m=2)  # three runs, two slots
    assert dense([ROWS[3]])  # an id in two runs: runs are not segments
    assert dense([ROWS[6]])
    # before Hopper: one run from column 0 per row, else the mask
    assert not dense([ROWS[1], ROWS[5]], packed_ok=False)
    assert dense([ROWS[0]], packed_ok=False)
    assert dense([ROWS[2]], packed_ok=False)


@pytest.mark.parametrize(
    "rows, causal, hopper, window",
    [
        ([ROWS[1], ROWS[5]], True, False, None),  # single
        ([ROWS[1], ROWS[5]], True, True, None),  # packed
        ([ROWS[0], ROWS[2]], True, True, None),  # packed, with gaps
        ([ROWS[0], ROWS[2]], False, True, None),
        ([ROWS[0], ROWS[2]], True, False, None),  # dense (no packed layout before Hopper)
        ([ROWS[3], ROWS[4]], True, True, None),  # dense
        # #42's sliding window reaches every branch (cuDNN's window is causal only)
        ([ROWS[1], ROWS[5]], True, False, 3),  # single
        ([ROWS[0], ROWS[1]], True, True, 2),  # packed
        ([ROWS[3], ROWS[4]], True, True, 3),  # dense
    ],
)
def test_packed_batches_match_float64_in_value_and_gradients(
    monkeypatch, rows, causal, hopper, window
):
    emulate_cudnn(monkeypatch)
    if not hopper:
        a100 = Target("gpu", "NVIDIA A100-SXM4-80GB", (8, 0))
        monkeypatch.setattr(choice, "default_target", lambda: a100)
    rng = np.random.default_rng(len(rows[0]) + 7 * causal + sum(map(sum, rows)))
    ids = jnp.asarray(rows, jnp.int32)
    b, s, h, hk, d = len(rows), 8, 4, 2, 16
    shapes = [(b, s, h, d), (b, s, hk, d), (b, s, hk, d), (b, s, h, d)]
    q, k, v, g = (rng.standard_normal(shape) for shape in shapes)
    as_bf16 = functools.partial(jnp.asarray, dtype=jnp.bfloat16)

    def loss(q, k, v):
        out = attention(
            q,
            k,
            v,
            mask=AttentionMask(causal=causal, segment_ids=ids, window=window),
            implementation="cudnn",
        )
        return jnp.sum(out.astype(jnp.float32) * g), out

    (_, out), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))(
        as_bf16(q), as_bf16(k), as_bf16(v)
    )
    # the reference sees the inputs the kernel saw (bf16-rounded), in float64
    q, k, v = (np.asarray(as_bf16(x), np.float64) for x in (q, k, v))
    mask = np_mask(b, s, s, causal=causal, q_ids=ids, kv_ids=ids, window=window)
    ref = np_attention(q, k, v, mask, d_out=g)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *grads), ref, strict=True):
        got = np.asarray(got, np.float64)
        assert np.all(np.isfinite(got)), name
        assert rel_err(got, want) <= 2e-2, name
    assert np.all(np.asarray(out, np.float64)[np.asarray(ids) == 0] == 0.0)  # padding rows: zeros


def _has_square(jaxpr, s):
    """Whether any value of ``jaxpr`` (sub-jaxprs included) has two axes of length ``s``."""
    for eqn in jaxpr.eqns:
        for var in eqn.outvars:
            if list(getattr(var.aval, "shape", ())).count(s) >= 2:
                return True
        for sub in jax.extend.core.jaxprs_in_params(eqn.params):
            if _has_square(sub, s):
                return True
    return False


def test_the_single_and_packed_branches_hold_no_square_array(monkeypatch):
    """What tjx adds around the cuDNN calls (stubbed here) is O(b·s) in the two cheap branches;
    the dense fallback builds the s x s mask (the control)."""
    stub = lambda q, k, v, *a, **kw: q
    monkeypatch.setattr(cs, "packed_attention", stub)
    monkeypatch.setattr(jax.nn, "dot_product_attention", stub)
    s = 48
    q = jnp.zeros((2, s, 4, 16), jnp.bfloat16)
    ids = jnp.ones((2, s), jnp.int32)

    def branches(t):
        run = lambda q, ids: cs.segment_attention(
            q, q, q, AttentionMask(causal=True, segment_ids=ids), scale=0.25, target=t
        )
        (switch,) = (
            e for e in jax.make_jaxpr(run)(q, ids).jaxpr.eqns if e.primitive.name == "cond"
        )
        return [br.jaxpr for br in switch.params["branches"]]

    for t in (H100, A100):  # packed or single, then dense
        cheap, dense = branches(t)
        assert not _has_square(cheap, s)
        assert _has_square(dense, s)
        # the cheap branch is the one tjx-metrics' roofline counts (its named scope)
        assert all(cs.LIKELY_BRANCH in str(e.source_info.name_stack) for e in cheap.eqns)
        assert not any(cs.LIKELY_BRANCH in str(e.source_info.name_stack) for e in dense.eqns)


def test_the_switch_saves_only_the_cheap_branchs_residuals():
    """Under ``jax.grad`` a ``lax.switch`` keeps the residuals of all its branches: the dense
    fallback (recomputed) must add only its inputs, and no mask, to the packed branch's."""
    stub_calls = []

    def stub(q, k, v, **kw):  # the packed kernel's residuals: its inputs and output (as cuDNN)
        stub_calls.append(kw["lengths"].shape)
        return q * 1.0

    s = 48
    q = jnp.zeros((2, s, 4, 16), jnp.bfloat16)
    ids = jnp.ones((2, s), jnp.int32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cs, "packed_attention", stub)
        mp.setattr(jax.nn, "dot_product_attention", lambda q, k, v, **kw: q * 1.0)
        loss = (
            lambda q, k, v: cs.segment_attention(
                q, k, v, AttentionMask(causal=True, segment_ids=ids), scale=0.25, target=H100
            )
            .astype(jnp.float32)
            .sum()
        )
        jaxpr = jax.make_jaxpr(jax.grad(loss, argnums=(0, 1, 2)))(q, q, q).jaxpr
    fwd = next(e for e in jaxpr.eqns if e.primitive.name == "cond")
    sizes = [v.aval.size for v in fwd.outvars]
    assert max(sizes) == q.size  # nothing bigger than q: no [b, 1, s, s] mask
    assert sum(x == q.size for x in sizes) <= 4, [v.aval.str_short() for v in fwd.outvars]


def test_jax_still_has_the_private_symbols_tjx_uses():
    fa = _module()
    for name in SYMBOLS:
        assert hasattr(fa, name), f"jax._src.cudnn.fused_attention_stablehlo.{name} moved"
    assert {"PADDING", "PADDING_CAUSAL"} <= set(fa.MaskType.__members__)


def test_jaxs_gpu_generation_check_answers_from_the_target_while_cross_lowering():
    """On a CPU machine jax's check asks a device that does not exist; inside a ``target`` block
    naming a GPU it reads the target's compute capability, elsewhere it is jax's own."""
    from tjx.kernels import target
    from tjx.kernels._jax_private import install_capability_hook

    install_capability_hook()
    install_capability_hook()  # once is enough: the second call keeps the first hook
    fa = _module()
    assert getattr(fa.check_compute_capability, "_tjx_hook", False)
    assert fa.check_compute_capability("9.0") is False  # CPU, no target: jax's answer
    with target("gpu", "NVIDIA H100 80GB HBM3", (9, 0)):
        assert fa.check_compute_capability("9.0") and not fa.check_compute_capability("10.0")
    with target("gpu", "NVIDIA A100-SXM4-40GB", (8, 0)):
        assert not fa.check_compute_capability("9.0") and fa.check_compute_capability("8.0")
