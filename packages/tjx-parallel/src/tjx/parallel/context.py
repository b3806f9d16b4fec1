"""Context parallelism: each sequence split over the ``context`` mesh axis, attention across it.

Everything but attention works on its own tokens: embeddings, norms, MLPs and the loss are per
token, so with the batch's sequence dimension split over ``context`` (:func:`place_batch` puts it
in the load-balanced layout of :mod:`tjx.parallel.context_layout` and splits it) XLA keeps them
split. Attention needs every earlier key: :meth:`ContextParallel.attention` runs it under
``shard_map`` as ring or all-gather attention (:mod:`tjx.parallel.ring`), with the block
computations of the caller's kernel (``tjx.kernels.attention_forward``/``attention_backward``;
this package imports no kernel and no model). A model reaches it through its own hook (tjx-nn's
``sequence_parallel``), which an app or test sets around the step::

    cp = ContextParallel(mesh, axis_rules, strategy="ring")
    with tjx.nn.sequence_parallel(cp):
        loss, grads = step(params, place_batch(batch, mesh))

Composes with data and FSDP parallelism (batch and parameters split as before) and with tensor
parallelism (heads stay split inside the ring; when ``kv_heads`` does not split like the query
heads, heads run whole on every tensor device). Pipeline parallelism is refused (`MeshConfig`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, PartitionSpec

from tjx.parallel.axis_rules import AxisRules
from tjx.parallel.context_layout import balanced_order, check_context_split, context_ways, restore
from tjx.parallel.mesh import CONTEXT_AXIS, CONTEXT_STRATEGIES, MeshConfig
from tjx.parallel.ring import BlockBackward, BlockForward, RingConfig, ring_attention

Array = jax.Array

__all__ = ["ContextParallel", "context_parallel"]


def _entry(axes: tuple[str, ...]) -> str | tuple[str, ...] | None:
    return None if not axes else axes[0] if len(axes) == 1 else axes


@dataclasses.dataclass(frozen=True)
class ContextParallel:
    """Attention and positions for a sequence split over ``mesh``'s ``context`` axis.

    Parameters
    ----------
    mesh : Mesh
        A mesh with a ``context`` axis (:func:`make_mesh`).
    rules : AxisRules
        The logical-axis rules of the run: which mesh axes hold the batch (``batch``) and the
        heads (``heads``, ``kv_heads``) inside attention.
    strategy : str
        One of `CONTEXT_STRATEGIES`: ``"ring"`` (default) or ``"all_gather"``.
    """

    mesh: Mesh
    rules: AxisRules
    strategy: str = "ring"

    def __post_init__(self) -> None:
        if self.strategy not in CONTEXT_STRATEGIES:
            raise ValueError(
                f"context strategy must be one of {CONTEXT_STRATEGIES}; got {self.strategy!r}"
            )
        if CONTEXT_AXIS not in self.mesh.axis_names:
            raise ValueError(
                f"ContextParallel needs a mesh with a {CONTEXT_AXIS!r} axis; got axes "
                f"{self.mesh.axis_names}"
            )

    @property
    def shards(self) -> int:
        """Into how many parts each sequence is split (the ``context`` axis' size)."""
        return context_ways(self.mesh)

    def check(self, seq_len: int, name: str = "sequence length") -> None:
        """``ValueError`` naming ``name`` unless ``seq_len`` splits into ``2 × context`` chunks."""
        check_context_split(seq_len, self.shards, name)

    def positions(self, batch: int, seq_len: int) -> Array:
        """int32 ``[batch, seq_len]``: each place's position ``0..seq_len-1`` in the balanced
        layout (what a model uses when a batch brings no positions of its own)."""
        order = jnp.asarray(balanced_order(seq_len, self.shards))
        return jnp.broadcast_to(order, (batch, seq_len))

    def restore(self, x: Any, *, axis: int = 1) -> Any:
        """``x`` (e.g. per-token logits) with its sequence ``axis`` back in the original order."""
        return restore(x, self.shards, axis=axis)

    def _specs(self, q: Array, k: Array) -> tuple[PartitionSpec, PartitionSpec, PartitionSpec]:
        """(q, k/v, ids) specs: batch as the rules split it, sequence over context, heads split
        only when query and key/value heads split alike (whole GQA groups per device)."""
        shape = dict(self.mesh.shape)

        def axes(name: str, size: int) -> tuple[str, ...]:
            found = tuple(a for a in self.rules.mesh_axes(name) if a in shape)
            found = tuple(a for a in found if a != CONTEXT_AXIS)
            return found if size % math.prod(shape[a] for a in found) == 0 else ()

        batch = axes("batch", q.shape[0])
        heads = tuple(a for a in axes("heads", q.shape[2]) if a not in batch)
        kv_heads = tuple(a for a in axes("kv_heads", k.shape[2]) if a not in batch)
        if heads != kv_heads:
            heads = ()
        b, h = _entry(batch), _entry(heads)
        return (
            PartitionSpec(b, CONTEXT_AXIS, h, None),
            PartitionSpec(b, CONTEXT_AXIS, h, None),
            PartitionSpec(b, CONTEXT_AXIS),
        )

    def attention(
        self,
        q: Array,
        k: Array,
        v: Array,
        *,
        forward: BlockForward,
        backward: BlockBackward,
        causal: bool = True,
        segment_ids: Array | None = None,
        scale: float | None = None,
        window: int | None = None,
    ) -> Array:
        """Self-attention of sequences in the balanced layout, split over ``context``.

        Parameters
        ----------
        q : Array
            ``[batch, seq, heads, head_dim]`` (global view, inside ``jit``).
        k, v : Array
            ``[batch, seq, kv_heads, head_dim]``.
        forward, backward
            One block's attention halves (``tjx.kernels.attention_forward`` and
            ``attention_backward``, their ``implementation`` chosen by the caller).
        causal : bool
            Causal by each token's place in the original sequence.
        segment_ids : Array, optional
            int ``[batch, seq]`` (0 = padding): attention stays within a segment.
        scale : float, optional
            Logit scale; default ``1/sqrt(head_dim)``.
        window : int, optional
            Sliding window by original positions (the block kernel must take ``token_index``).

        Returns
        -------
        Array
            ``[batch, seq, heads, head_dim]``, sequence-split like ``q``.
        """
        if isinstance(segment_ids, tuple | list):
            raise ValueError(
                "context-parallel attention is self-attention: `segment_ids` must be one "
                "[batch, seq] array, not a (q_ids, kv_ids) pair"
            )
        self.check(q.shape[1])
        cfg = RingConfig(
            axis=CONTEXT_AXIS,
            ways=self.shards,
            strategy=self.strategy,
            causal=causal,
            scale=1.0 / math.sqrt(q.shape[-1]) if scale is None else float(scale),
            window=window,
            forward=forward,
            backward=backward,
        )
        q_spec, kv_spec, ids_spec = self._specs(q, k)
        ids = None if segment_ids is None else jnp.asarray(segment_ids, jnp.int32)

        def local(q: Array, k: Array, v: Array, ids: Array | None) -> Array:
            return ring_attention(cfg, q, k, v, ids)  # type: ignore[no-any-return]

        fn = jax.shard_map(
            local,
            mesh=self.mesh,
            in_specs=(q_spec, kv_spec, kv_spec, None if ids is None else ids_spec),
            out_specs=q_spec,
        )
        return fn(q, k, v, ids)  # type: ignore[no-any-return]


def context_parallel(mesh: Mesh, rules: AxisRules, config: MeshConfig) -> ContextParallel | None:
    """The `ContextParallel` of a run whose mesh config asks for one (``context > 1``), else
    None.

    Parameters
    ----------
    mesh : Mesh
        The run's mesh (:func:`make_mesh` of ``config``).
    rules : AxisRules
        The run's logical-axis rules.
    config : MeshConfig
        Supplies ``context_strategy``.
    """
    if context_ways(mesh) == 1:
        return None
    return ContextParallel(mesh, rules, config.context_strategy)
