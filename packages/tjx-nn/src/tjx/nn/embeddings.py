"""Token embedding that can also unembed (the tied output head), and learned positions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.params import make_param, normal
from tjx.nn.precision import Precision

Array = jax.Array


class Embed(nnx.Module):
    """A ``[vocab, embed]`` table: ``embed(ids)`` looks rows up, ``attend(h)`` gives logits."""

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        *,
        rngs: nnx.Rngs,
        init_std: float = 0.02,
        names: tuple[str | None, str | None] = ("vocab", "embed"),
        precision: Precision | None = None,
    ) -> None:
        self.precision = precision or Precision()
        self.num_embeddings = num_embeddings
        self.embedding = make_param(
            rngs, normal(init_std), (num_embeddings, dim), names, self.precision.param_dtype
        )

    def __call__(self, ids: Array) -> Array:
        """Rows of the table for integer ``ids`` [...] → [..., embed] in the compute dtype."""
        table = self.embedding[...]
        return jnp.take(table, ids, axis=0).astype(self.precision.compute_dtype)

    def attend(self, hidden: Array) -> Array:
        """Logits ``hidden · tableᵀ`` [..., vocab] accumulated and returned in float32."""
        dt = self.precision.compute_dtype
        return jnp.einsum(
            "...d,vd->...v",
            hidden.astype(dt),
            self.embedding[...].astype(dt),
            preferred_element_type=jnp.promote_types(dt, jnp.float32),
        )

    def unembedding(self) -> Array:
        """The table transposed, ``[embed, vocab]``."""
        return self.embedding[...].T
