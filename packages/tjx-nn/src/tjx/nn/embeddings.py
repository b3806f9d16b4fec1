"""Token embedding that can also unembed (the tied output head), lookup-only tables (learned
positions, token types) and adding absolute positions to embedded tokens."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.nn.params import make_param, normal
from tjx.nn.positions import sinusoidal
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


def lookup_table(rows: int, config: Any, *, rngs: nnx.Rngs, init_std: float | None = None) -> Embed:
    """A lookup-only ``[rows, d_model]`` table (positions, token types).

    Its rows are not a logical axis (``None``: replicated), unlike the token table's ``vocab``.
    ``config`` supplies ``d_model``, ``init_std`` (unless ``init_std`` is given) and
    ``precision``.
    """
    return Embed(
        rows,
        config.d_model,
        rngs=rngs,
        init_std=config.init_std if init_std is None else init_std,
        names=(None, "embed"),
        precision=config.precision,
    )


def learned_positions(
    config: Any, *, rngs: nnx.Rngs, init_std: float | None = None
) -> Embed | None:
    """The ``max_seq_len``-row position table when ``config.position == "learned"``, else None."""
    if config.position != "learned":
        return None
    return lookup_table(config.max_seq_len, config, rngs=rngs, init_std=init_std)


def add_positions(x: Array, positions: Array, table: Embed | None, kind: str) -> Array:
    """``x`` plus absolute positions: the learned ``table``'s rows, or sinusoids when ``kind`` is
    ``"sinusoidal"``; unchanged otherwise (RoPE and ALiBi act inside attention)."""
    if table is not None:
        return x + table(positions)
    if kind == "sinusoidal":
        return x + sinusoidal(positions, x.shape[-1]).astype(x.dtype)
    return x
