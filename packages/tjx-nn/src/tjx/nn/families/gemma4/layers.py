"""Gemma 4's per-layer embeddings (PLE, ``per_layer_input_dim``): the model's second token table
and projection (`PerLayerEmbed`), one ``P``-vector per layer and token, and what each layer adds
from its vector (`PerLayerInput`). The decoder and its blocks build them through
:mod:`tjx.nn.families.parts`."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.embeddings import Embed
from tjx.nn.linear import Dense
from tjx.nn.norms import make_norm
from tjx.nn.params import normal

Array = jax.Array


class PerLayerEmbed(nnx.Module):
    """The per-layer embeddings (PLE): one ``P``-vector per layer and token.

    ``(norm(reshape(x · W / sqrt(d))) + table[ids] · sqrt(P)) / sqrt(2)`` with ``x`` the scaled
    token embeddings ``[b, s, d]``, ``W`` ``[d, L·P]``, ``table`` ``[per_layer_vocab_size, L·P]``
    and the norm over each layer's ``P`` (the factors rounded to float32 first, as transformers').
    """

    def __init__(self, config: Any, *, rngs: nnx.Rngs) -> None:
        c = config
        self.layers, self.dim = c.num_layers, c.gemma4.per_layer_input_dim
        width = self.layers * self.dim
        self.table = Embed(
            c.gemma4.per_layer_vocab_size or c.vocab_size,
            width,
            rngs=rngs,
            init_std=c.init.std,
            names=(None, None),
            precision=c.precision,
        )
        self.proj = Dense(
            (c.d_model,), (width,), ("embed",), (None,), rngs=rngs, use_bias=False,
            init=normal(c.init.std), precision=c.precision,
        )  # fmt: skip
        self.norm = make_norm(
            c.norm.kind, self.dim, rngs=rngs, eps=c.norm.eps, use_bias=c.use_bias,
            precision=c.precision, plus_one=c.norm.plus_one,
        )  # fmt: skip
        self.d_model = c.d_model

    def __call__(self, ids: Array, x: Array) -> Array:
        """Every layer's input ``[b, s, layers, P]`` for tokens ``ids`` [b, s] embedded as ``x``."""
        shape = (*ids.shape, self.layers, self.dim)
        token = self.table(ids) * jnp.asarray(np.float32(math.sqrt(self.dim)), x.dtype)
        scale = jnp.asarray(np.float32(self.d_model**-0.5), x.dtype)
        context = self.norm((self.proj(x) * scale).reshape(shape))
        return (context + token.reshape(shape)) * jnp.asarray(np.float32(2.0**-0.5), x.dtype)


class PerLayerInput(nnx.Module):
    """The per-layer input (PLE) of one layer: ``x + norm(W_up(gelu_tanh(W_gate x) ·
    ple))``, ``ple`` this layer's ``[b, s, P]`` slice of the model's `PerLayerEmbed`."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, out_std: float) -> None:
        c, p = config, config.gemma4.per_layer_input_dim
        common: dict[str, Any] = dict(rngs=rngs, use_bias=False, precision=c.precision)
        self.gate = Dense(
            (c.d_model,), (p,), ("embed",), (None,), init=normal(c.init.std), **common
        )
        self.proj = Dense((p,), (c.d_model,), (None,), ("embed",), init=normal(out_std), **common)
        self.norm = make_norm(
            c.norm.kind, c.d_model, rngs=rngs, eps=c.norm.eps, use_bias=c.use_bias,
            precision=c.precision, plus_one=c.norm.plus_one,
        )  # fmt: skip

    def __call__(self, x: Array, ple: Array) -> Array:
        """``x`` [b, s, d] plus this layer's per-layer input ``ple`` [b, s, P]."""
        h = jax.nn.gelu(self.gate(x), approximate=True) * ple.astype(x.dtype)
        return x + self.norm(self.proj(h))
