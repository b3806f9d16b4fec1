"""Naive float64 NumPy references for the T5 relative position bias tests.

Written from the formula (T5 paper, section 2.1; ``transformers``' documented
``_relative_position_bucket``), independently of ``tjx.nn.relative_bias``: scalar Python maths
per distance, and plain softmax attention over explicit masks. The models here are pre-LN,
RMSNorm, SwiGLU, no biases (``use_bias=False``), which is all the reference forward handles.
"""

import math

import numpy as np

from tjx import nn as tnn


def bucket(rel: int, *, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """T5 bucket of one relative position ``key - query``."""
    per_dir = num_buckets // 2 if bidirectional else num_buckets
    base = per_dir if bidirectional and rel > 0 else 0
    n = abs(rel) if bidirectional else max(-rel, 0)
    exact = per_dir // 2
    if n < exact:
        return base + n
    # int() truncates toward zero, which is floor here (the argument is >= 0).
    large = exact + int(math.log(n / exact) / math.log(max_distance / exact) * (per_dir - exact))
    return base + min(large, per_dir - 1)


def bias_matrix(table, q_pos, k_pos, *, bidirectional, num_buckets, max_distance):
    """``[b, heads, s_q, s_k]`` float64 bias from a ``[buckets, heads]`` table."""
    b, sq = q_pos.shape
    sk = k_pos.shape[1]
    out = np.zeros((b, table.shape[1], sq, sk))
    for r in range(b):
        for i in range(sq):
            for j in range(sk):
                idx = bucket(
                    int(k_pos[r, j] - q_pos[r, i]),
                    bidirectional=bidirectional,
                    num_buckets=num_buckets,
                    max_distance=max_distance,
                )
                out[r, :, i, j] = table[idx]
    return out


def rms(x, scale, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def attention(p, name, xq, xkv, bias, mask):
    """Softmax attention of layer ``name`` (``p``: flat float64 params); mask ``[b, s_q, s_k]``."""
    q = np.einsum("bsd,dhk->bshk", xq, p[f"{name}.query.kernel"])
    k = np.einsum("bsd,dhk->bshk", xkv, p[f"{name}.key.kernel"])
    v = np.einsum("bsd,dhk->bshk", xkv, p[f"{name}.value.kernel"])
    g = q.shape[2] // k.shape[2]  # GQA: query head h reads kv head h // g
    k, v = np.repeat(k, g, axis=2), np.repeat(v, g, axis=2)
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / math.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + bias
    logits = np.where(mask[:, None], logits, -np.inf)
    top = np.max(logits, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    w = np.exp(logits - top)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-300)  # a fully masked row gives zeros
    out = np.einsum("bhqk,bkhd->bqhd", w, v)
    return np.einsum("bqhd,hdD->bqD", out, p[f"{name}.out.kernel"])


def mlp(p, name, x):
    gate = x @ p[f"{name}.fc_gate.kernel"]
    return (gate / (1 + np.exp(-gate)) * (x @ p[f"{name}.fc_in.kernel"])) @ p[
        f"{name}.fc_out.kernel"
    ]


def layer(p, name, x, eps, *, self_bias, self_mask, memory=None, cross_mask=None):
    h = rms(x, p[f"{name}.attn_norm.scale"], eps)
    x = x + attention(p, f"{name}.attn", h, h, self_bias, self_mask)
    if memory is not None:
        h = rms(x, p[f"{name}.cross_norm.scale"], eps)
        x = x + attention(p, f"{name}.cross_attn", h, memory, None, cross_mask)
    return x + mlp(p, f"{name}.mlp", rms(x, p[f"{name}.mlp_norm.scale"], eps))


def logits(p, h):
    return h @ p["head.kernel"] if "head.kernel" in p else h @ p["embed.embedding"].T


def self_mask(seg, *, causal):
    """Same non-padding segment (and ``j <= i`` by index when causal)."""
    m = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
    if causal:
        m &= np.tril(np.ones((seg.shape[1],) * 2, bool))[None]
    return m


def randomize(model, seed):
    """Weights of order one, tables N(0, 1), returned as float64 flat params.

    The init's 0.02 would leave every bias (and most logit margins) nearly irrelevant, so tests
    could pass with a wrong bias.
    """
    rs = np.random.RandomState(seed)
    flat = {}
    for name, value in tnn.get_flat_params(model).items():
        if name.endswith("scale"):
            flat[name] = 1.0 + 0.1 * rs.randn(*value.shape)
        elif name.endswith("table"):
            flat[name] = rs.randn(*value.shape)
        else:
            flat[name] = rs.randn(*value.shape) / np.sqrt(value.shape[0])
    tnn.set_flat_params(model, flat)
    return {k: np.asarray(v, np.float64) for k, v in tnn.get_flat_params(model).items()}
