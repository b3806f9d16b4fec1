"""float64 NumPy references for the kernel tests (independent of JAX's autodiff)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tjx.kernels import AttentionMask, first_that_compiles, kernel_order, reference_attention


def np_mask(
    b, sq, sk, *, causal=False, q_ids=None, kv_ids=None, kv_lengths=None, window=None, index=None
):
    """Boolean [b, sq, sk] mask, True = attend (same rules as tjx.kernels.attention_mask).

    ``window``: query i sees keys with i - window < j (and j < i + window when not causal);
    ``index``: (q_index, kv_index) token indices replacing 0..s-1 in the causal/window tests.
    """
    m = np.ones((b, sq, sk), bool)
    qi, ki = (np.arange(sq), np.arange(sk)) if index is None else map(np.asarray, index)
    rows, cols = qi[:, None], ki[None, :]
    if causal:
        m &= (rows >= cols)[None]
    if window is not None:
        m &= (rows - cols < window)[None]
        if not causal:
            m &= (cols - rows < window)[None]
    if q_ids is not None:
        q_ids, kv_ids = np.asarray(q_ids), np.asarray(kv_ids)
        m &= (q_ids[:, :, None] == kv_ids[:, None, :]) & (kv_ids[:, None, :] != 0)
    if kv_lengths is not None:
        m &= np.arange(sk)[None, None, :] < np.asarray(kv_lengths)[:, None, None]
    return m


def np_attention(q, k, v, mask, *, scale=None, bias=None, d_out=None):
    """Attention forward (and backward when ``d_out`` is given) in float64.

    q [b, sq, h, d], k/v [b, sk, hkv, d], mask [b, sq, sk], bias [b|1, h|1, sq, sk].
    Returns out, or (out, dq, dk, dv).
    """
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    b, sq, h, d = q.shape
    hkv = k.shape[2]
    g = h // hkv
    scale = 1.0 / np.sqrt(d) if scale is None else scale
    ke = np.repeat(k, g, axis=2)  # head i uses kv head i // g
    ve = np.repeat(v, g, axis=2)
    s = np.einsum("bqhd,bkhd->bhqk", q, ke, optimize=True) * scale
    if bias is not None:
        s = s + np.asarray(bias, np.float64)
    m4 = mask[:, None]
    s = np.where(m4, s, -np.inf)
    mx = np.max(s, axis=-1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0.0)
    p = np.where(m4, np.exp(s - mx), 0.0)
    den = p.sum(-1, keepdims=True)
    p = p / np.where(den == 0, 1.0, den)
    out = np.einsum("bhqk,bkhd->bqhd", p, ve, optimize=True)
    if d_out is None:
        return out
    do = np.asarray(d_out, np.float64)
    dve = np.einsum("bhqk,bqhd->bkhd", p, do, optimize=True)
    dp = np.einsum("bqhd,bkhd->bhqk", do, ve, optimize=True)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.einsum("bhqk,bkhd->bqhd", ds, ke, optimize=True) * scale
    dke = np.einsum("bhqk,bqhd->bkhd", ds, q, optimize=True) * scale
    sk = k.shape[1]
    dk = dke.reshape(b, sk, hkv, g, d).sum(3)
    dv = dve.reshape(b, sk, hkv, g, d).sum(3)
    return out, dq, dk, dv


def rel_err(actual, expected):
    """Norm-wise relative error max|a - e| / max|e|.

    A tensor that is exactly zero in exact arithmetic (e.g. dq when each query sees one key) is
    compared absolutely (denominator 1): its rounding noise has no scale of its own.
    """
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if e.size == 0:
        return 0.0
    den = np.max(np.abs(e))
    return float(np.max(np.abs(a - e)) / (den if den > 0 else 1.0))


def np_cross_entropy(hidden, w, labels, *, ignore_index=-100, z_loss=0.0):
    """(loss, sum_loss, num_tokens, num_correct, dhidden, dw) of the naive full-logits CE."""
    h = np.asarray(hidden, np.float64).reshape(-1, hidden.shape[-1])
    w = np.asarray(w, np.float64)
    lab = np.asarray(labels).reshape(-1)
    logits = h @ w
    mx = logits.max(-1, keepdims=True)
    lse = (mx + np.log(np.exp(logits - mx).sum(-1, keepdims=True)))[:, 0]
    valid = lab != ignore_index
    safe = np.where(valid, lab, 0)
    ce = np.where(valid, lse - logits[np.arange(len(lab)), safe], 0.0)
    n = int(valid.sum())
    sum_loss = ce.sum()
    loss = (sum_loss + z_loss * np.where(valid, lse**2, 0).sum()) / max(n, 1)
    correct = int((valid & (logits.argmax(-1) == safe)).sum())
    p = np.exp(logits - lse[:, None])
    onehot = np.zeros_like(p)
    onehot[np.arange(len(lab)), safe] = 1.0
    dlogits = (p - onehot + 2 * z_loss * lse[:, None] * p) * valid[:, None] / max(n, 1)
    dh = (dlogits @ w.T).reshape(hidden.shape)
    dw = h.T @ dlogits
    return loss, sum_loss, n, correct, dh, dw


def cuda_target():
    """Context for cross-lowering Pallas kernels for CUDA on a machine without a GPU: jax >= 0.11
    asks the abstract mesh which GPU to target (0.10 fell back to sm_90 silently)."""
    from jax.sharding import AbstractDevice, AbstractMesh, use_abstract_mesh

    gpu = AbstractDevice(device_kind="NVIDIA H100", num_cores=None, platform="gpu")
    return use_abstract_mesh(AbstractMesh((), (), abstract_device=gpu))


def pretend_h100(monkeypatch):
    """Make the default device look like an H100 to the kernel choice (kernels still run on CPU:
    Pallas in interpret mode)."""
    from tjx.kernels import choice

    h100 = choice.Target("gpu", "NVIDIA H100 80GB HBM3", (9, 0))
    monkeypatch.setattr(choice, "default_target", lambda: h100)
    return h100


def measured_table(monkeypatch, tmp_path, timings, kind="NVIDIA H100 80GB HBM3"):
    """A launch-table file with only ``timings`` for ``kind``, made the current one."""
    import json

    from tjx.kernels import launch

    path = tmp_path / "tables.json"
    table = {"source": "test", "entries": {}, "timings": timings}
    path.write_text(json.dumps({"schema": 1, "devices": {kind: table}}))
    monkeypatch.setenv(launch.ENV_VAR, str(path))
    launch.clear_launch_cache()
    return path


# -- cuDNN emulated on CPU, with its documented behaviour -------------------------------------
# The padding mask zeroes output rows past a row's length; the packed layout leaves tokens
# outside every segment unspecified (here NaN in outputs and gradients, so any leak shows).


@jax.custom_vjp
def _nan_grads(x, bad):
    """Identity whose cotangent is NaN where ``bad`` ([b, s] float, 1 = bad): cuDNN's
    unspecified gradients for tokens outside every segment (it never reads their inputs)."""
    return x


def _nan_grads_bwd(bad, g):
    return jnp.where(bad[:, :, None, None] > 0, jnp.nan, g).astype(g.dtype), jnp.zeros_like(bad)


_nan_grads.defvjp(lambda x, bad: (x, bad), _nan_grads_bwd)


def _fake_packed(q, k, v, *, lengths, offsets, causal, scale, target, window=None):
    """The packed layout's semantics: token t is in segment m iff off[m] <= t < off[m] + len[m]."""
    assert target.compute_capability >= (9, 0)
    s, m = q.shape[1], lengths.shape[1]
    t = jnp.arange(s)[None, None, :]
    inside = (t >= offsets[:, :m, None]) & (t < offsets[:, :m, None] + lengths[:, :, None])
    ids = jnp.where(inside.any(1), jnp.argmax(inside, axis=1) + 1, 0)
    bad = (ids == 0).astype(jnp.float32)
    q, k, v = (_nan_grads(x, bad) for x in (q, k, v))
    out = reference_attention(
        q, k, v, mask=AttentionMask(causal=causal, segment_ids=ids, window=window), scale=scale
    )
    return jnp.where(bad[:, :, None, None] > 0, jnp.nan, out).astype(out.dtype)  # unspecified


def _fake_dpa(real):
    def dpa(q, k, v, *args, query_seq_lengths=None, implementation=None, **kw):
        assert implementation == "cudnn"
        out = real(q, k, v, *args, query_seq_lengths=query_seq_lengths, implementation="xla", **kw)
        if query_seq_lengths is not None:  # cuDNN's padding mask zeroes rows past the length
            keep = jnp.arange(q.shape[1])[None, :] < query_seq_lengths[:, None]
            out = jnp.where(keep[:, :, None, None], out, jnp.zeros((), out.dtype))
        return out

    return dpa


def emulate_cudnn(monkeypatch):
    """Route tjx's cuDNN calls (public and packed) to the CPU emulation; pretend an H100."""
    import tjx.kernels.cudnn_segments as cs

    monkeypatch.setattr(jax.nn, "dot_product_attention", _fake_dpa(jax.nn.dot_product_attention))
    monkeypatch.setattr(cs, "packed_attention", _fake_packed)
    return pretend_h100(monkeypatch)


MASK_PARTS = ("causal", "segment_ids", "kv_lengths", "window", "chunk", "sinks")


def masked(**kw):
    """``kw`` with its mask parts (causal, segment_ids, ...) folded into one ``mask``."""
    parts = {name: kw.pop(name) for name in MASK_PARTS if name in kw}
    return {**kw, "mask": AttentionMask(**parts)}


def choose(impl, dtype, head_dim, build, *, named_by, say, softcap=False):
    """The kernel choice as tjx-nn's ``resolve_attention`` makes it with a ``build``: the order
    said (`kernel_order`), then the first that compiles, and whether that is a fallback."""
    order = kernel_order(impl, dtype, head_dim, named_by=named_by, say=say, softcap=softcap)
    chosen = first_that_compiles(order, build, explicit=impl != "auto", say=say)
    return chosen, chosen != order[0]
