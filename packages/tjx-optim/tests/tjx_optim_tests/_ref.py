"""Hand-written float64 numpy versions of each optimizer's update rule, and a GPT-like tree."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Var:
    """Stands in for a Flax NNX variable: a pytree node whose child is the attribute ``value``."""

    value: Any


def gpt_tree(rng: np.random.Generator, *, d: int = 8, vocab: int = 16, layers: int = 2) -> dict:
    """A GPT-2-like parameter tree with Flax NNX-style paths (leaves wrapped in ``Var``)."""

    def p(*shape: int) -> Var:
        return Var(jnp.asarray(rng.normal(size=shape) * 0.5, jnp.float32))

    def block() -> dict:
        return {
            "ln_1": {"scale": p(d), "bias": p(d)},
            "attn": {"qkv": {"kernel": p(d, 3 * d), "bias": p(3 * d)}, "proj": {"kernel": p(d, d)}},
            "ln_2": {"scale": p(d), "bias": p(d)},
            "mlp": {
                "fc": {"kernel": p(d, 4 * d), "bias": p(4 * d)},
                "out": {"kernel": p(4 * d, d)},
            },
        }

    return {
        "embed": {"embedding": p(vocab, d)},
        "pos_embed": {"embedding": p(12, d)},
        "blocks": {i: block() for i in range(layers)},
        "ln_f": {"scale": p(d), "bias": p(d)},
        "lm_head": {"kernel": p(d, vocab)},
    }


def small_tree(rng: np.random.Generator) -> dict:
    """A few leaves of every kind (embedding, wide and tall kernels, bias, norm scale, head)."""

    def p(*shape: int) -> Var:
        return Var(jnp.asarray(rng.normal(size=shape) * 0.5, jnp.float32))

    block = {"attn": {"qkv": {"kernel": p(6, 8), "bias": p(8)}}, "mlp": {"fc": {"kernel": p(8, 6)}}}
    block["ln"] = {"scale": p(6)}
    return {"embed": {"embedding": p(10, 6)}, "blocks": {0: block}, "lm_head": {"kernel": p(6, 10)}}


def leaves(tree: Any) -> list[np.ndarray]:
    return [np.asarray(x, np.float64) for x in jax.tree.leaves(tree)]


def mask_leaves(mask: Any) -> list[bool]:
    return [bool(m) for m in jax.tree.leaves(mask)]


# Each reference: step(p, g, state, t) -> (new_p, state); t counts from 1. All per leaf.


def adam_dir(g: np.ndarray, st: dict, t: int, b1: float, b2: float, eps: float, nesterov=False):
    m = st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    v = st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    if nesterov:
        m_hat = b1 * m / (1 - b1 ** (t + 1)) + (1 - b1) * g / (1 - b1**t)
    else:
        m_hat = m / (1 - b1**t)
    return m_hat / (np.sqrt(v / (1 - b2**t)) + eps)


def adamw(p, g, st, t, *, lr, b1, b2, eps, wd, decay):
    u = adam_dir(g, st, t, b1, b2, eps) + (wd * p if decay else 0.0)
    return p - lr * u


def adam_l2(p, g, st, t, *, lr, b1, b2, eps, wd, decay):
    g = g + (wd * p if decay else 0.0)
    return p - lr * adam_dir(g, st, t, b1, b2, eps)


def sgd(p, g, st, t, *, lr, momentum, nesterov, wd, decay):
    g = g + (wd * p if decay else 0.0)
    buf = st["buf"] = momentum * st.get("buf", 0.0) + g
    u = g + momentum * buf if nesterov else buf
    return p - lr * u


def lamb(p, g, st, t, *, lr, b1, b2, eps, wd, decay):
    u = adam_dir(g, st, t, b1, b2, eps) + (wd * p if decay else 0.0)
    pn, un = np.linalg.norm(p), np.linalg.norm(u)
    trust = 1.0 if pn == 0 or un == 0 else pn / un
    return p - lr * trust * u


def lion(p, g, st, t, *, lr, b1, b2, wd, decay):
    m = st.get("m", 0.0)
    u = np.sign(b1 * m + (1 - b1) * g) + (wd * p if decay else 0.0)
    st["m"] = b2 * m + (1 - b2) * g
    return p - lr * u


def adafactor(p, g, st, t, *, lr, eps, min_dim, wd, decay):
    beta = 1.0 - float(t) ** -0.8
    g2 = g * g + eps
    if p.ndim == 2 and min(p.shape) >= min_dim:
        d1, d0 = (0, 1) if p.shape[0] <= p.shape[1] else (1, 0)  # d0: the larger dim
        r = st["r"] = beta * st.get("r", 0.0) + (1 - beta) * g2.mean(axis=d0)
        c = st["c"] = beta * st.get("c", 0.0) + (1 - beta) * g2.mean(axis=d1)
        u = g * np.expand_dims((r / r.mean()) ** -0.5, d0) * np.expand_dims(c**-0.5, d1)
    else:
        v = st["v"] = beta * st.get("v", 0.0) + (1 - beta) * g2
        u = g / np.sqrt(v)
    u = u / max(1.0, np.sqrt(np.mean(u * u)))  # clip by block rms 1.0
    u = u * max(np.sqrt(np.mean(p * p)), 1e-3)  # multiply by parameter scale
    u = u + (wd * p if decay else 0.0)
    return p - lr * u


NS = (3.4445, -4.7750, 2.0315)


def newton_schulz(x: np.ndarray, steps: int = 5, eps: float = 1e-8) -> np.ndarray:
    transposed = x.shape[0] > x.shape[1]
    if transposed:
        x = x.T
    x = x / (np.linalg.norm(x) + eps)
    a, b, c = NS
    for _ in range(steps):
        A = x @ x.T
        x = a * x + (b * A + c * A @ A) @ x
    return x.T if transposed else x


def muon_matrix(p, g, st, t, *, lr, beta, wd, decay):
    m = st["m"] = beta * st.get("m", 0.0) + (1 - beta) * g
    m_hat = beta * m / (1 - beta ** (t + 1)) + (1 - beta) * g / (1 - beta**t)
    u = newton_schulz(m_hat) * np.sqrt(max(1.0, p.shape[1] / p.shape[0]))
    u = u + (wd * p if decay else 0.0)
    return p - lr * u


def nadam(p, g, st, t, *, lr, b1, b2, eps):
    return p - lr * adam_dir(g, st, t, b1, b2, eps, nesterov=True)
