"""Token embedding that can also unembed (the tied output head), lookup-only tables (learned
positions, token types), and adding absolute positions to embedded tokens."""

from __future__ import annotations

import functools
import math
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
        return take_rows(self.embedding[...], ids, self.precision.compute_dtype)

    def attend(self, hidden: Array) -> Array:
        """Logits ``hidden · tableᵀ`` [..., vocab] accumulated and returned in float32."""
        dt = self.precision.compute_dtype
        return jnp.einsum(
            "...d,vd->...v",
            hidden.astype(dt),
            self.embedding[...].astype(dt),
            preferred_element_type=jnp.promote_types(dt, jnp.float32),
        )

    def unembedding(self, dtype: Any = None) -> Array:
        """The table transposed, ``[embed, vocab]``; cast to ``dtype`` first when given.

        Cast before the transpose, so that a tied head and the lookup (`take_rows`) read one
        cast of the table: XLA merges the two casts, folds the transpose into the head's
        products, and no transposed copy of the table is written."""
        table = self.embedding[...]
        return (table if dtype is None else table.astype(dtype)).T


def take_rows(table: Array, ids: Array, dtype: Any) -> Array:
    """``jnp.take(table, ids, axis=0).astype(dtype)``, the rows gathered from the table cast
    to ``dtype`` (the same values: a cast is elementwise), its gradient autodiff's.

    Why: a tied table is read by the lookup and, cast and transposed, by the output head. A
    lookup of the float32 table made XLA write a transposed float32 copy of it for the gather
    (GPT-2 small on an H100: 154 MB read and written, 0.13 ms a step, beside the head's cast);
    gathering from the cast table shares the head's cast. The gradient is the float32
    scatter-add of the original (a bfloat16 table's would sum repeated tokens in bfloat16).

    Parameters
    ----------
    table : Array
        ``[rows, dim]`` in the parameter dtype.
    ids : Array
        Integer row indices ``[...]``.
    dtype : dtype
        The dtype of the result (the compute dtype).

    Returns
    -------
    Array
        ``[..., dim]`` in ``dtype``.
    """
    if jnp.dtype(dtype) == table.dtype:
        return jnp.take(table, ids, axis=0)
    return _take_cast(table, ids, jnp.dtype(dtype))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _take_cast(table: Array, ids: Array, dtype: Any) -> Array:
    return jnp.take(table.astype(dtype), ids, axis=0)


def _take_cast_fwd(table: Array, ids: Array, dtype: Any) -> tuple[Array, tuple[Array, Array]]:
    # The table is a parameter, alive anyway: keeping it costs no memory.
    return _take_cast(table, ids, dtype), (table, ids)


def _take_cast_bwd(dtype: Any, res: tuple[Array, Array], g: Array) -> tuple[Array, None]:
    table, ids = res
    _, pull = jax.vjp(lambda t: jnp.take(t, ids, axis=0).astype(dtype), table)
    (dtable,) = pull(g)
    return dtable, None


_take_cast.defvjp(_take_cast_fwd, _take_cast_bwd)


def lookup_table(
    rows: int, dim: int, *, rngs: nnx.Rngs, init_std: float, precision: Precision
) -> Embed:
    """A lookup-only ``[rows, dim]`` table (positions, token types).

    Its rows are not a logical axis (``None``: replicated), unlike the token table's ``vocab``.
    """
    names = (None, "embed")
    return Embed(rows, dim, rngs=rngs, init_std=init_std, names=names, precision=precision)


def learned_positions(
    kind: str | None, rows: int, dim: int, *, rngs: nnx.Rngs, init_std: float, precision: Precision
) -> Embed | None:
    """The ``rows``-row (``max_seq_len``) position table when ``kind`` (``position.kind``) is
    ``"learned"``, else None: it takes the model's width, init and precision, not its config."""
    if kind != "learned":
        return None
    return lookup_table(rows, dim, rngs=rngs, init_std=init_std, precision=precision)


#: The sinusoids' root-mean-square relative to the token embeddings' at initialisation (see
#: `sinusoid_amplitude`): one half, GPT-2's ratio of its learned position table's init (0.01) to
#: its token table's (0.02). Measured at the positions study's CPU config, 150 steps, 3 seeds
#: (2026-11-23): ratio 0.5 → 2.561 ± 0.004 nats, 1 → 2.609 ± 0.033, the original Transformer's
#: form (init d**-0.5, tokens × sqrt(d), amplitude 1) 2.82 ± 0.15, tokens × sqrt(d) at init 0.02
#: 3.153 ± 0.012, amplitude 1 unscaled 3.358 (1 seed); no positions 2.542 ± 0.006.
SINUSOID_RMS_RATIO = 0.5


def sinusoid_amplitude(init_std: float) -> float:
    """The amplitude that puts sinusoids on the scale of token embeddings drawn with ``init_std``.

    The original Transformer scales token embeddings (drawn with std ``d**-0.5``) by ``sqrt(d)``
    so that they and the amplitude-1 sinusoids (rms ``1/sqrt(2)``) have comparable sizes. tjx
    keeps its token init (0.02; the tied output head shares the table) and scales the sinusoids
    down instead: amplitude ``SINUSOID_RMS_RATIO * init_std * sqrt(2)`` gives them an rms of
    ``SINUSOID_RMS_RATIO * init_std``, the measured best of the forms tried (see the constant).
    Added at amplitude 1, they were ~35× the token signal at d 64 and the model trained worse
    than with no positions at all.
    """
    return SINUSOID_RMS_RATIO * init_std * math.sqrt(2.0)


def add_positions(
    x: Array, positions: Array, table: Embed | None, kind: str | None, *, amplitude: float = 1.0
) -> Array:
    """``x`` plus absolute positions: the learned ``table``'s rows, or sinusoids times
    ``amplitude`` when ``kind`` is ``"sinusoidal"`` (token models pass `sinusoid_amplitude`);
    unchanged otherwise (RoPE and ALiBi act inside attention)."""
    if table is not None:
        return x + table(positions)
    if kind == "sinusoidal":
        # float32 (or wider) whatever the compute dtype, like the norms' statistics.
        waves = sinusoidal(positions, x.shape[-1], dtype=jnp.promote_types(x.dtype, jnp.float32))
        return x + (amplitude * waves).astype(x.dtype)
    return x
