"""A tiny GPT for the tests, its params annotated with tjx-nn's logical axis names."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


@dataclasses.dataclass(frozen=True)
class TinyConfig:
    vocab: int = 64
    seq: int = 8
    d_model: int = 16
    heads: int = 4
    kv_heads: int = 2
    head_dim: int = 4
    mlp: int = 32
    layers: int = 1


DEFAULT = TinyConfig()


def _param(rngs: nnx.Rngs, names: tuple, shape: tuple, scale: float = 0.2) -> nnx.Param:
    init = nnx.with_partitioning(nnx.initializers.normal(scale), names)
    return nnx.Param(init(rngs.params(), shape, jnp.float32))


def _ones(names: tuple, shape: tuple) -> nnx.Param:
    return nnx.Param(nnx.with_partitioning(nnx.initializers.ones, names)(None, shape))


class Block(nnx.Module):
    def __init__(self, c: TinyConfig, rngs: nnx.Rngs):
        self.c = c
        self.ln1 = _ones(("norm",), (c.d_model,))
        self.wq = _param(rngs, ("embed", "heads", "head_dim"), (c.d_model, c.heads, c.head_dim))
        self.wk = _param(
            rngs, ("embed", "kv_heads", "head_dim"), (c.d_model, c.kv_heads, c.head_dim)
        )
        self.wv = _param(
            rngs, ("embed", "kv_heads", "head_dim"), (c.d_model, c.kv_heads, c.head_dim)
        )
        self.wo = _param(rngs, ("heads", "head_dim", "embed"), (c.heads, c.head_dim, c.d_model))
        self.ln2 = _ones(("embed",), (c.d_model,))
        self.w1 = _param(rngs, ("embed", "mlp"), (c.d_model, c.mlp))
        self.b1 = _param(rngs, ("mlp",), (c.mlp,), 0.05)
        self.w2 = _param(rngs, ("mlp", "embed"), (c.mlp, c.d_model))

    def __call__(self, x: jax.Array) -> jax.Array:
        c = self.c
        h = _rms(x) * self.ln1[...]
        q = jnp.einsum("bsd,dhk->bshk", h, self.wq[...])
        rep = c.heads // c.kv_heads
        k = jnp.repeat(jnp.einsum("bsd,dhk->bshk", h, self.wk[...]), rep, axis=2)
        v = jnp.repeat(jnp.einsum("bsd,dhk->bshk", h, self.wv[...]), rep, axis=2)
        scores = jnp.einsum("bqhk,bshk->bhqs", q, k) / jnp.sqrt(c.head_dim)
        causal = jnp.tril(jnp.ones((x.shape[1], x.shape[1]), bool))
        probs = jax.nn.softmax(jnp.where(causal, scores, -1e9), axis=-1)
        att = jnp.einsum("bhqs,bshk->bqhk", probs, v)
        x = x + jnp.einsum("bqhk,hkd->bqd", att, self.wo[...])
        h = _rms(x) * self.ln2[...]
        return x + jax.nn.gelu(h @ self.w1[...] + self.b1[...]) @ self.w2[...]


def _rms(x: jax.Array) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + 1e-6)


class TinyGPT(nnx.Module):
    def __init__(self, c: TinyConfig, *, rngs: nnx.Rngs):
        self.wte = _param(rngs, ("vocab", "embed"), (c.vocab, c.d_model))
        self.wpe = _param(rngs, (None, "embed"), (c.seq, c.d_model))
        self.blocks = nnx.List([Block(c, rngs) for _ in range(c.layers)])
        self.lnf = _ones(("norm",), (c.d_model,))
        self.unembed = _param(rngs, ("embed", "vocab"), (c.d_model, c.vocab))

    def __call__(self, tokens: jax.Array) -> jax.Array:
        x = self.wte[...][tokens] + self.wpe[...][None, : tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return (_rms(x) * self.lnf[...]) @ self.unembed[...]


def make_model(seed: int = 0, c: TinyConfig = DEFAULT) -> TinyGPT:
    """Build without a mesh (flax's eager sharding off: tjx-parallel places the arrays)."""
    with nnx.use_eager_sharding(False):
        return TinyGPT(c, rngs=nnx.Rngs(seed))


def make_batch(seed: int, batch: int, c: TinyConfig = DEFAULT) -> dict:
    """Random tokens in numpy (no device op to compile), inputs and next-token targets."""
    tokens = np.random.default_rng(seed).integers(0, c.vocab, (batch, c.seq + 1), dtype=np.int32)
    return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}


# eps=1e-3, not 1e-8: Adam's first update is lr*g/(|g|+eps), which for a gradient entry that
# cancels to ~0 turns a last-ulp difference of summation order into an O(lr) change; a larger eps
# keeps the comparison with one device well-conditioned without changing what is tested.
TX = optax.adam(1e-2, eps=1e-3)


def make_step(graphdef: nnx.GraphDef):
    """(params, opt_state, batch) -> (params, opt_state, loss), pure; optax Adam."""

    def loss_fn(params, batch):
        logits = nnx.merge(graphdef, params)(batch["inputs"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"]).mean()

    def step(params, opt_state, batch):
        loss, grads = jax.value_and_grad(loss_fn)(params, batch)
        updates, opt_state = TX.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step
