"""A float64 NumPy decoder with the families' switches, written from the papers and transformers'
modelling files (Gemma 2/3, Qwen3, OLMo 2), independent of tjx's modules: the reference the
switch tests compare tjx's ``Llama`` against."""

from __future__ import annotations

import math

import numpy as np


def _rms(x, w, eps, plus_one):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if plus_one else w)


def _rope(x, pos, theta):
    half = x.shape[-1] // 2
    inv = 1.0 / theta ** (np.arange(half) / half)
    ang = pos[..., None, None] * inv  # [b, s, 1, half]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate(
        [x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1
    )


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _cap(x, c):
    return x if c is None else c * np.tanh(x / c)


def reference_logits(p: dict[str, np.ndarray], c, tokens: np.ndarray) -> np.ndarray:
    """Logits ``[b, s, vocab]`` of a causal ``LlamaConfig`` ``c`` with params ``p`` (tjx's flat
    naming, float64) on ``tokens``."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    b, s = tokens.shape
    h, hk, hd, eps = c.num_heads, c.num_kv_heads, c.head_dim, c.norm_eps
    x = p["embed.embedding"][tokens]
    if c.scale_embeddings:
        x = x * np.float64(np.float32(math.sqrt(c.d_model)))
    pos = np.broadcast_to(np.arange(s), (b, s)).astype(np.float64)

    def norm(name, y):
        return _rms(y, p[name + ".scale"], eps, c.norm_plus_one) if name + ".scale" in p else y

    def qk(name, y, heads):
        if not c.qk_norm:
            return y
        if c.qk_norm_scope == "head":
            return _rms(y, p[name + ".scale"], eps, c.norm_plus_one)
        flat = _rms(y.reshape(b, s, heads * hd), p[name + ".scale"], eps, c.norm_plus_one)
        return flat.reshape(y.shape)

    causal = np.tril(np.ones((s, s), bool))
    rows, cols = np.arange(s)[:, None], np.arange(s)[None, :]
    scale = 1.0 / math.sqrt(c.query_pre_attn_scalar or hd)
    for i in range(c.num_layers):
        t = f"stack.layers.{i}."
        # Gemma's local layers: query i sees keys i - window < j <= i, rotated at their own base.
        window = c.layer_windows()[i]
        seen = causal if window is None else causal & (rows - cols < window)
        theta = c.rope_local_theta if window is not None and c.rope_local_theta else c.rope_theta
        a = norm(t + "attn_norm", x)
        q = qk(t + "attn.q_norm", np.einsum("bsd,dhk->bshk", a, p[t + "attn.query.kernel"]), h)
        k = qk(t + "attn.k_norm", np.einsum("bsd,dhk->bshk", a, p[t + "attn.key.kernel"]), hk)
        v = np.einsum("bsd,dhk->bshk", a, p[t + "attn.value.kernel"])
        q, k = _rope(q, pos, theta), _rope(k, pos, theta)
        k, v = np.repeat(k, h // hk, axis=2), np.repeat(v, h // hk, axis=2)
        logits = _cap(np.einsum("bqhd,bkhd->bhqk", q, k) * scale, c.attn_logit_softcap)
        logits = np.where(seen, logits, -np.inf)
        w = np.exp(logits - logits.max(-1, keepdims=True))
        w /= w.sum(-1, keepdims=True)
        o = np.einsum("bhqk,bkhd->bqhd", w, v)
        o = np.einsum("bshk,hkd->bsd", o, p[t + "attn.out.kernel"])
        x = x + norm(t + "attn_post_norm", o)
        m = norm(t + "mlp_norm", x)
        gate = m @ p[t + "mlp.fc_gate.kernel"]
        act = _gelu_tanh(gate) if c.mlp_activation == "geglu" else gate / (1.0 + np.exp(-gate))
        y = (act * (m @ p[t + "mlp.fc_in.kernel"])) @ p[t + "mlp.fc_out.kernel"]
        x = x + norm(t + "mlp_post_norm", y)
    x = norm("final_norm", x)
    head = p["embed.embedding"].T if c.tie_embeddings else p["head.kernel"]
    return _cap(x @ head, c.final_logit_softcap)
