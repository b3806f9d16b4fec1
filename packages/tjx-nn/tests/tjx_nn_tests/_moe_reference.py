"""A per-token float64 reference of the MoE block, written from the definitions, for test_moe.

The choices (which experts, which assignments a capacity keeps) are made in NumPy from the
float64 router scores; the output is then a differentiable jnp function of the parameters and
the input with those choices fixed (the choice itself is piecewise constant: no gradient).
"""

import jax
import jax.numpy as jnp
import numpy as np


def _clamped(gate, up):
    """gpt-oss's expert unit (transformers' ``GptOssExperts._apply_gate``)."""
    gate = jnp.minimum(gate, 7.0)
    up = jnp.clip(up, -7.0, 7.0)
    return (up + 1.0) * (gate * jax.nn.sigmoid(gate * 1.702))


def _act(name):
    return {
        "swiglu": jax.nn.silu,
        "swiglu_clamped": None,  # two inputs: `_clamped`
        "gelu": lambda v: jax.nn.gelu(v, approximate=True),
        "relu": jax.nn.relu,
    }[name]


def choices(p, x, cfg):
    """(experts [b, s, k], keep [b, s, k]) from NumPy: top-k of the router's scores (plus the
    balancing bias for the sigmoid router), and the capacity's first-come slots."""
    x = np.asarray(x, np.float64)
    logits = x @ np.asarray(p["router.kernel"]) + np.asarray(p.get("router.logit_bias", 0.0))
    if cfg.moe.router == "softmax":
        score = np.exp(logits - logits.max(-1, keepdims=True))
        score /= score.sum(-1, keepdims=True)
    else:
        score = 1 / (1 + np.exp(-logits)) + np.asarray(p.get("router.bias", 0.0))
    k = cfg.moe.experts_per_token
    experts = np.argsort(-score, axis=-1, kind="stable")[..., :k]
    keep = np.ones(experts.shape, bool)
    if cfg.moe.capacity_factor is not None:
        b, s, _ = experts.shape
        slots = max(1, min(s, int(np.ceil(cfg.moe.capacity_factor * s * k / cfg.moe.num_experts))))
        for r in range(b):
            used = np.zeros(cfg.moe.num_experts, int)
            for j in range(k):  # every first choice, then every second one, ...
                for t in range(s):
                    e = experts[r, t, j]
                    keep[r, t, j] = used[e] < slots
                    used[e] += 1
    return experts, keep


def _mlp(p, prefix, xt, act, gated, e):
    """One MLP (expert ``e`` of a stack, or the shared one for ``e=None``) on one token."""

    def dense(name):
        kernel = p[f"{prefix}{name}.kernel"]
        bias = p.get(f"{prefix}{name}.bias")
        kernel = kernel if e is None else kernel[e]
        out = xt @ kernel
        if bias is not None:
            out = out + (bias if e is None else bias[e])
        return out

    h = dense("fc_in")
    if act is None:
        h = _clamped(dense("fc_gate"), h)
    else:
        h = act(dense("fc_gate")) * h if gated else act(h)
    return dense_out(p, prefix, h, e)


def dense_out(p, prefix, h, e):
    kernel = p[f"{prefix}fc_out.kernel"]
    bias = p.get(f"{prefix}fc_out.bias")
    out = h @ (kernel if e is None else kernel[e])
    if bias is not None:
        out = out + (bias if e is None else bias[e])
    return out


def moe_reference(p, x, cfg, experts, keep):
    """``(y [b, s, d], router penalty)`` token by token in float64 (``p``: flat params)."""
    act = _act(cfg.mlp.activation)
    gated = cfg.mlp.activation in ("swiglu", "geglu", "swiglu_clamped")
    b, s, _ = x.shape
    rows = []
    probs_all, lse_all = [], []
    for r in range(b):
        for t in range(s):
            xt = x[r, t]
            logits = xt @ p["router.kernel"]
            if "router.logit_bias" in p:
                logits = logits + p["router.logit_bias"]
            lse_all.append(jax.nn.logsumexp(logits))
            if cfg.moe.router == "softmax":
                score = jax.nn.softmax(logits)
                probs_all.append(score)
            else:
                score = jax.nn.sigmoid(logits)
                probs_all.append(score / jnp.sum(score))
            chosen = [int(e) for e in experts[r, t]]
            w = jnp.stack([score[e] for e in chosen])
            if cfg.moe.router_norm_topk:
                w = w / jnp.sum(w)
            y = jnp.zeros_like(xt)
            for j, e in enumerate(chosen):
                if keep[r, t, j]:
                    y = y + w[j] * _mlp(p, "experts.", xt, act, gated, e)
            if "shared.fc_in.kernel" in p:
                sh = _mlp(p, "shared.", xt, act, gated, None)
                if "shared_gate.kernel" in p:
                    sh = jax.nn.sigmoid(xt @ p["shared_gate.kernel"][:, 0]) * sh
                y = y + sh
            rows.append(y)
    y = jnp.stack(rows).reshape(b, s, -1)
    n = b * s
    counts = np.bincount(experts.reshape(-1), minlength=cfg.moe.num_experts)
    share = counts / (n * cfg.moe.experts_per_token)
    balance = cfg.moe.num_experts * jnp.sum(share * jnp.mean(jnp.stack(probs_all), axis=0))
    z = jnp.mean(jnp.square(jnp.stack(lse_all)))
    return y, cfg.moe.router_aux_loss * balance + cfg.moe.router_z_loss * z
