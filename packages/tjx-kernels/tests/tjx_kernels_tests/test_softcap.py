"""Logit soft-capping (``cap · tanh(x / cap)``, Gemma 2) in every kernel that may serve it, against
float64 references with the cap's derivative written out by hand (not JAX's autodiff); cuDNN,
which cannot cap, is left out of ``auto`` and refused by name."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tjx.kernels import (
    AttentionMask,
    attention,
    auto_order,
    chunked_cross_entropy,
    flash_attention,
    kernel_order,
    reference_attention,
    resolve_attention,
    soft_cap,
)
from tjx.kernels.choice import Target
from tjx.kernels.launch import LaunchDefaults

from ._ref import masked, measured_table, np_mask, pretend_h100, rel_err

H100 = Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
F32, BF16 = jnp.float32, jnp.bfloat16
TOL = {F32: 1e-5, BF16: 2e-2}


def _np_capped_attention(q, k, v, mask, do, *, scale, cap):
    """(out, dq, dk, dv) of soft-capped attention in float64: logits ``cap·tanh(s·scale/cap)``,
    masked after the cap; the backward multiplies dS by ``1 - t²``."""
    b, sq, h, d = q.shape
    hkv, sk = k.shape[2], k.shape[1]
    g = h // hkv
    ke, ve = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    t = np.tanh(np.einsum("bqhd,bkhd->bhqk", q, ke) * scale / cap)
    s = np.where(mask[:, None], cap * t, -np.inf)
    mx = np.max(s, axis=-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(mx), mx, 0.0))
    den = p.sum(-1, keepdims=True)
    p = p / np.where(den == 0, 1.0, den)
    out = np.einsum("bhqk,bkhd->bqhd", p, ve)
    dp = np.einsum("bqhd,bkhd->bhqk", do, ve)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True)) * (1.0 - t * t)
    dq = np.einsum("bhqk,bkhd->bqhd", ds, ke) * scale
    dk = (np.einsum("bhqk,bqhd->bkhd", ds, q) * scale).reshape(b, sk, hkv, g, d).sum(3)
    dv = np.einsum("bhqk,bqhd->bkhd", p, do).reshape(b, sk, hkv, g, d).sum(3)
    return out, dq, dk, dv


def _inputs(seed, b, sq, sk, h, hkv, d, dtype, magnitude):
    rng = np.random.default_rng(seed)
    shapes = ((b, sq, h, d), (b, sk, hkv, d), (b, sk, hkv, d), (b, sq, h, d))
    xs = [
        rng.standard_normal(s) * m
        for s, m in zip(shapes, (magnitude, magnitude, 1, 1), strict=True)
    ]
    return [np.asarray(jnp.asarray(x, dtype).astype(F32), np.float64) for x in xs]


def _fwd_bwd(fn, q, k, v, do, dtype):
    @jax.jit
    def run(q, k, v, do):
        out, vjp = jax.vjp(fn, q, k, v)
        return (out, *vjp(do.astype(out.dtype)))

    return [
        np.asarray(x).astype(np.float64)
        for x in run(*(jnp.asarray(x, dtype) for x in (q, k, v, do)))
    ]


# (b, sq, sk, h, hkv, d, causal, segments, dtype, launch): magnitude 3 puts many logits in the
# cap's saturated range (|s·scale| up to ~4x the cap of 5), where 1 - t² is far from 1.
CASES = [
    (2, 37, 37, 4, 2, 32, True, False, F32, None),
    (1, 24, 40, 2, 1, 64, False, True, F32, None),
    (1, 40, 40, 4, 2, 50, True, True, F32, LaunchDefaults(16, 16, 1, 16, 32, 1, head_split_bwd=4)),
    (2, 33, 33, 2, 2, 32, True, False, BF16, None),
]


@pytest.mark.parametrize("b,sq,sk,h,hkv,d,causal,segs,dtype,launch", CASES)
def test_pallas_soft_cap_forward_and_backward_match_float64(
    b, sq, sk, h, hkv, d, causal, segs, dtype, launch
):
    cap, scale = 5.0, 0.7
    q, k, v, do = _inputs(sq + d, b, sq, sk, h, hkv, d, dtype, magnitude=3.0)
    q_ids = kv_ids = seg = None
    if segs:
        rng = np.random.default_rng(sk)
        q_ids = np.sort(rng.integers(0, 3, (b, sq)), axis=1).astype(np.int32)
        kv_ids = np.sort(rng.integers(0, 3, (b, sk)), axis=1).astype(np.int32)
        seg = (jnp.asarray(q_ids), jnp.asarray(kv_ids))
    mask = np_mask(b, sq, sk, causal=causal, q_ids=q_ids, kv_ids=kv_ids)
    want = _np_capped_attention(q, k, v, mask, do, scale=scale, cap=cap)
    kw = masked(causal=causal, segment_ids=seg, scale=scale, softcap=cap, launch=launch)
    got = _fwd_bwd(lambda q, k, v: flash_attention(q, k, v, **kw), q, k, v, do, dtype)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert np.all(np.isfinite(a)), name
        assert rel_err(a, e) <= TOL[dtype], (name, rel_err(a, e))
    # The cap changed the result: the same call uncapped is far from the capped reference.
    plain = _fwd_bwd(
        lambda q, k, v: flash_attention(
            q, k, v, mask=AttentionMask(causal=causal, segment_ids=seg), scale=scale
        ),
        q,
        k,
        v,
        do,
        dtype,
    )
    assert rel_err(plain[0], want[0]) > 10 * TOL[dtype]


def test_reference_soft_cap_matches_float64_and_precedes_the_bias():
    with jax.enable_x64(True):
        q, k, v, do = _inputs(1, 2, 9, 9, 4, 2, 16, jnp.float64, magnitude=3.0)
        bias = np.random.default_rng(2).standard_normal((1, 4, 9, 9))
        got = _fwd_bwd(
            lambda q, k, v: reference_attention(
                q,
                k,
                v,
                mask=AttentionMask(causal=True),
                scale=0.5,
                softcap=4.0,
                bias=jnp.asarray(bias),
            ),
            q,
            k,
            v,
            do,
            jnp.float64,
        )
        # The bias is added after the cap: reproduce it in float64 with the bias folded in.
        ke = np.repeat(k, 2, axis=2)
        s = 4.0 * np.tanh(np.einsum("bqhd,bkhd->bhqk", q, ke) * 0.5 / 4.0) + bias
        s = np.where(np.tril(np.ones((9, 9), bool)), s, -np.inf)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out = np.einsum("bhqk,bkhd->bqhd", p, np.repeat(v, 2, axis=2))
    assert rel_err(got[0], out) < 1e-12
    no_bias = _np_capped_attention(q, k, v, np_mask(2, 9, 9, causal=True), do, scale=0.5, cap=4.0)
    with jax.enable_x64(True):
        grads = _fwd_bwd(
            lambda q, k, v: reference_attention(
                q, k, v, mask=AttentionMask(causal=True), scale=0.5, softcap=4.0
            ),
            q,
            k,
            v,
            do,
            jnp.float64,
        )
    for a, e in zip(grads, no_bias, strict=True):
        assert rel_err(a, e) < 1e-12


def test_attention_dispatch_serves_soft_cap_on_xla_and_pallas_alike():
    q, k, v, _ = _inputs(3, 1, 20, 20, 2, 1, 32, F32, magnitude=3.0)
    args = [jnp.asarray(x) for x in (q, k, v)]
    xla = attention(*args, mask=AttentionMask(causal=True), softcap=3.0, implementation="xla")
    pallas = attention(*args, mask=AttentionMask(causal=True), softcap=3.0, implementation="pallas")
    assert rel_err(pallas, xla) < 1e-5
    assert (
        rel_err(attention(*args, mask=AttentionMask(causal=True), implementation="xla"), xla) > 1e-3
    )
    with pytest.raises(ValueError, match="softcap"):
        attention(*args, softcap=-1.0)
    with pytest.raises(ValueError, match="softcap"):
        attention(*args, softcap=float("inf"))


def test_auto_leaves_cudnn_out_of_a_soft_capped_call_and_says_so(monkeypatch, tmp_path):
    choice = auto_order(BF16, 64, H100, softcap=True)
    assert choice.order == ("xla",) and "cudnn skipped: it cannot soft-cap" in choice.line()
    assert auto_order(BF16, 64, H100).order == ("cudnn", "xla")
    assert resolve_attention("auto", BF16, 64, target=H100, softcap=True) == "xla"
    with pytest.raises(ValueError, match="not supported by implementation 'cudnn'"):
        resolve_attention("cudnn", BF16, 64, target=H100, softcap=True)
    pretend_h100(monkeypatch)
    said: list[str] = []
    assert kernel_order("auto", BF16, 64, named_by="m", say=said.append, softcap=True) == ("xla",)
    assert "cudnn skipped" in said[0]
    with pytest.raises(ValueError, match="model.attention_impl: `softcap` is not supported"):
        kernel_order("cudnn", BF16, 64, named_by="model.attention_impl", softcap=True)
    # A Pallas kernel measured correct still serves it: only cuDNN is left out.
    measured_table(monkeypatch, tmp_path, {"bf16-64": {"cudnn": 1.0, "pallas": 1.5}})
    assert auto_order(BF16, 64, H100, softcap=True).order == ("pallas", "xla")


def _np_capped_ce(hidden, w, labels, cap, z_loss):
    """(loss, sum_loss, correct, dh, dw) of the capped full-logits CE in float64."""
    h = hidden.reshape(-1, hidden.shape[-1])
    lab = labels.reshape(-1)
    t = np.tanh(h @ w / cap)
    logits = cap * t
    mx = logits.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(logits - mx).sum(-1, keepdims=True)))[:, 0]
    valid = lab != -100
    safe = np.where(valid, lab, 0)
    ce = np.where(valid, lse - logits[np.arange(len(lab)), safe], 0.0)
    n = max(int(valid.sum()), 1)
    loss = (ce.sum() + z_loss * np.where(valid, lse**2, 0).sum()) / n
    p = np.exp(logits - lse[:, None])
    onehot = np.eye(w.shape[1])[safe]
    dcap = (p - onehot + 2 * z_loss * lse[:, None] * p) * valid[:, None] / n
    dlogits = dcap * (1 - t * t)
    correct = int((valid & (logits.argmax(-1) == safe)).sum())
    return loss, ce.sum(), correct, (dlogits @ w.T).reshape(hidden.shape), h.T @ dlogits


@pytest.mark.parametrize("z_loss,chunk", [(0.0, 5), (1e-2, 4), (0.0, 64)])
def test_chunked_cross_entropy_soft_cap_matches_float64(z_loss, chunk):
    rng = np.random.default_rng(int(z_loss * 100) + chunk)
    hidden = rng.standard_normal((2, 7, 12))
    w = rng.standard_normal((12, 37)) * 2.0  # logits up to ~25: the cap of 6 saturates
    labels = rng.integers(0, 37, (2, 7)).astype(np.int32)
    labels[0, :2] = -100
    loss, sum_loss, correct, dh, dw = _np_capped_ce(hidden, w, labels, 6.0, z_loss)

    def f(h, w):
        out = chunked_cross_entropy(
            h, w, jnp.asarray(labels), chunk_size=chunk, z_loss=z_loss, softcap=6.0
        )
        return out.loss, out

    # The kernel sums and accumulates in float32: float32 tolerances, as test_cross_entropy's.
    (got, out), (gh, gw) = jax.jit(jax.value_and_grad(f, argnums=(0, 1), has_aux=True))(
        jnp.asarray(hidden, F32), jnp.asarray(w, F32)
    )
    assert abs(float(got) - loss) < 1e-5 * loss and abs(float(out.sum_loss) - sum_loss) < 1e-4
    assert int(out.num_correct) == correct and int(out.num_tokens) == 12
    assert rel_err(gh, dh) < 1e-5 and rel_err(gw, dw) < 1e-5
    plain = chunked_cross_entropy(jnp.asarray(hidden), jnp.asarray(w), jnp.asarray(labels))
    assert abs(float(plain.loss) - loss) > 0.1  # the cap mattered
    with pytest.raises(ValueError, match="softcap"):
        chunked_cross_entropy(jnp.asarray(hidden), jnp.asarray(w), jnp.asarray(labels), softcap=0)


def test_soft_cap_is_identity_without_a_cap_and_bounded_with_one():
    x = jnp.linspace(-100.0, 100.0, 11)
    assert soft_cap(x, None) is x
    capped = soft_cap(x, 30.0)
    assert float(jnp.max(jnp.abs(capped))) < 30.0
    np.testing.assert_allclose(soft_cap(jnp.asarray([1e-3]), 30.0), [1e-3], rtol=1e-6)


def test_capped_window_key_halves_merged_by_their_lse_are_the_capped_attention():
    """Gemma 2's local layer under context parallelism (XLA blocks): each key half's forward
    (its output and the log-sum-exp of its capped logits), merged by those, and each half's
    backward given the merged rows give the windowed soft-capped attention and its gradients."""
    from tjx.kernels import attention_backward, attention_forward

    s, half, cap, scale, window = 40, 24, 4.0, 0.6, 11
    q, k, v, do = _inputs(7, 1, s, s, 4, 2, 16, F32, magnitude=3.0)
    want = _np_capped_attention(
        q, k, v, np_mask(1, s, s, causal=True, window=window), do, scale=scale, cap=cap
    )
    qj, do_j = jnp.asarray(q, F32), jnp.asarray(do, F32)
    parts = []
    for sl in (slice(0, half), slice(half, s)):
        kj, vj = jnp.asarray(k[:, sl], F32), jnp.asarray(v[:, sl], F32)
        kw = masked(
            causal=True, window=window, scale=scale, softcap=cap, implementation="xla",
            token_index=(jnp.arange(s), jnp.arange(sl.start, sl.stop)),
        )  # fmt: skip
        parts.append((kj, vj, kw, *attention_forward(qj, kj, vj, **kw)))
    lse = jnp.logaddexp(parts[0][4], parts[1][4])
    w = [jnp.where(jnp.isfinite(p[4]), jnp.exp(p[4] - lse), 0.0) for p in parts]
    out = sum(wi.transpose(0, 2, 1)[..., None] * p[3] for wi, p in zip(w, parts, strict=True))
    assert rel_err(out, want[0]) <= 1e-5
    grads = [attention_backward(qj, kj, vj, out, lse, do_j, **kw) for kj, vj, kw, _, _ in parts]
    assert rel_err(grads[0][0] + grads[1][0], want[1]) <= 1e-5
    assert rel_err(jnp.concatenate([grads[0][1], grads[1][1]], 1), want[2]) <= 1e-5
    assert rel_err(jnp.concatenate([grads[0][2], grads[1][2]], 1), want[3]) <= 1e-5


def test_pallas_halves_of_a_capped_window_give_its_output_lse_and_gradients():
    """The Pallas forward/backward halves (one block: every key) with a cap and a window."""
    from tjx.kernels import attention_backward, attention_forward

    cap, scale, window = 4.0, 0.6, 11
    q, k, v, do = _inputs(8, 1, 40, 40, 4, 2, 16, F32, magnitude=3.0)
    want = _np_capped_attention(
        q, k, v, np_mask(1, 40, 40, causal=True, window=window), do, scale=scale, cap=cap
    )
    kw = masked(causal=True, window=window, scale=scale, softcap=cap, implementation="pallas")
    qj, kj, vj, do_j = (jnp.asarray(x, F32) for x in (q, k, v, do))
    out, lse = attention_forward(qj, kj, vj, **kw)
    assert rel_err(out, want[0]) <= 1e-5
    for g, e in zip(attention_backward(qj, kj, vj, out, lse, do_j, **kw), want[1:], strict=True):
        assert rel_err(g, e) <= 1e-5


def test_a_windowed_capped_flash_call_matches_float64():
    """Both switches of a Gemma 2 local layer in one Pallas call (window walk + cap)."""
    cap, scale, window = 5.0, 0.7, 9
    q, k, v, do = _inputs(11, 2, 45, 45, 4, 2, 32, F32, magnitude=3.0)
    want = _np_capped_attention(
        q, k, v, np_mask(2, 45, 45, causal=True, window=window), do, scale=scale, cap=cap
    )
    kw = masked(causal=True, scale=scale, softcap=cap, window=window, block_q=16, block_k=16)
    got = _fwd_bwd(lambda q, k, v: flash_attention(q, k, v, **kw), q, k, v, do, F32)
    for name, a, e in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert rel_err(a, e) <= 1e-5, (name, rel_err(a, e))
