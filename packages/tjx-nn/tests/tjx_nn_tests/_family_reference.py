"""A float64 NumPy decoder with the families' switches, written from the papers and transformers'
modelling files (Gemma 2/3, Qwen3, OLMo 2; gpt-oss's attention sinks, projection biases and
clamped SwiGLU; GLM-4.5's partial RoPE), independent of tjx's modules: the reference the switch
tests compare tjx's ``Llama`` against."""

from __future__ import annotations

import math

import numpy as np


def _rms(x, w, eps, plus_one):
    y = x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * ((1.0 + w) if plus_one else w)


def _rope(x, pos, theta, fraction=1.0):
    """Rotate-half RoPE of the first ``int(head_dim · fraction)`` dims (GLM's partial RoPE:
    frequencies of a head that wide), the rest passed through."""
    turned = int(x.shape[-1] * fraction)
    if turned < x.shape[-1]:
        return np.concatenate([_rope(x[..., :turned], pos, theta), x[..., turned:]], -1)
    half = x.shape[-1] // 2
    inv = 1.0 / theta ** (np.arange(half) / half)
    ang = pos[..., None, None] * inv  # [b, s, 1, half]
    x1, x2 = x[..., :half], x[..., half:]
    return np.concatenate(
        [x1 * np.cos(ang) - x2 * np.sin(ang), x2 * np.cos(ang) + x1 * np.sin(ang)], -1
    )


def _gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def _clamped_swiglu(gate, up):
    """gpt-oss: ``(clip(up, ±7) + 1) · g · sigmoid(1.702 g)``, ``g = min(gate, 7)``."""
    g = np.minimum(gate, 7.0)
    return (np.clip(up, -7.0, 7.0) + 1.0) * g / (1.0 + np.exp(-1.702 * g))


def _cap(x, c):
    return x if c is None else c * np.tanh(x / c)


def reference_logits(p: dict[str, np.ndarray], c, tokens: np.ndarray) -> np.ndarray:
    """Logits ``[b, s, vocab]`` of a causal ``LlamaConfig`` ``c`` with params ``p`` (tjx's flat
    naming, float64) on ``tokens``."""
    p = {k: np.asarray(v, np.float64) for k, v in p.items()}
    b, s = tokens.shape
    h, hk, hd, eps = c.num_heads, c.num_kv_heads, c.head_dim, c.norm.eps
    x = p["embed.embedding"][tokens]
    if c.scale_embeddings:
        x = x * np.float64(np.float32(math.sqrt(c.d_model)))
    pos = np.broadcast_to(np.arange(s), (b, s)).astype(np.float64)

    def norm(name, y):
        return _rms(y, p[name + ".scale"], eps, c.norm.plus_one) if name + ".scale" in p else y

    def lin(y, name, spec):
        """A projection: ``einsum(spec)`` with the kernel, plus its bias if it has one."""
        out = np.einsum(spec, y, p[name + ".kernel"])
        return out + p[name + ".bias"] if name + ".bias" in p else out

    def qk(name, y, heads):
        if not c.attention.qk_norm:
            return y
        if c.attention.qk_norm_scope == "head":
            return _rms(y, p[name + ".scale"], eps, c.norm.plus_one)
        flat = _rms(y.reshape(b, s, heads * hd), p[name + ".scale"], eps, c.norm.plus_one)
        return flat.reshape(y.shape)

    causal = np.tril(np.ones((s, s), bool))
    rows, cols = np.arange(s)[:, None], np.arange(s)[None, :]
    scale = 1.0 / math.sqrt(c.attention.query_pre_attn_scalar or hd)
    for i in range(c.num_layers):
        t = f"stack.layers.{i}."
        # Gemma's local layers: query i sees keys i - window < j <= i, rotated at their own base.
        window = c.layer_windows()[i]
        seen = causal if window is None else causal & (rows - cols < window)
        theta = (
            c.position.rope_local_theta
            if window is not None and c.position.rope_local_theta
            else c.position.rope_theta
        )
        a = norm(t + "attn_norm", x)
        q = qk(t + "attn.q_norm", lin(a, t + "attn.query", "bsd,dhk->bshk"), h)
        k = qk(t + "attn.k_norm", lin(a, t + "attn.key", "bsd,dhk->bshk"), hk)
        v = lin(a, t + "attn.value", "bsd,dhk->bshk")
        q, k = _rope(q, pos, theta, c.position.rope_fraction), _rope(
            k, pos, theta, c.position.rope_fraction
        )
        k, v = np.repeat(k, h // hk, axis=2), np.repeat(v, h // hk, axis=2)
        logits = _cap(np.einsum("bqhd,bkhd->bhqk", q, k) * scale, c.attention.logit_softcap)
        logits = np.where(seen, logits, -np.inf)
        # gpt-oss's sinks: a column of logit sink[h] in every row's softmax, with no value.
        sink = p.get(t + "attn.sinks", np.full(h, -np.inf))[None, :, None, None]
        top = np.maximum(logits.max(-1, keepdims=True), sink)
        w = np.exp(logits - top)
        w /= w.sum(-1, keepdims=True) + np.exp(sink - top)
        o = np.einsum("bhqk,bkhd->bqhd", w, v)
        o = lin(o, t + "attn.out", "bshk,hkd->bsd")
        x = x + norm(t + "attn_post_norm", o)
        m = norm(t + "mlp_norm", x)
        gate, up = lin(m, t + "mlp.fc_gate", "bsd,df->bsf"), lin(m, t + "mlp.fc_in", "bsd,df->bsf")
        if c.mlp.activation == "swiglu_clamped":
            unit = _clamped_swiglu(gate, up)
        else:
            act = _gelu_tanh(gate) if c.mlp.activation == "geglu" else gate / (1 + np.exp(-gate))
            unit = act * up
        y = lin(unit, t + "mlp.fc_out", "bsf,fd->bsd")
        x = x + norm(t + "mlp_post_norm", y)
    x = norm("final_norm", x)
    head = p["embed.embedding"].T if c.tie_embeddings else p["head.kernel"]
    return _cap(x @ head, c.final_logit_softcap)
