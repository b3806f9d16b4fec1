"""The layers a family folder adds to the shared decoder, built where the decoder and its blocks
ask for them (a config that does not switch them on gets None), so the shared modules name no
family; and the interfaces the shared layers call them through (`KeySelector`)."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

import jax
from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.families.deepseek_v32.indexer import Indexer
from tjx.nn.families.gemma4.layers import PerLayerEmbed, PerLayerInput

Array = jax.Array
#: A layer's KV cache (`tjx.nn.kv_cache.LayerCache`).
Cache = dict[str, Array]


class Selected(Protocol):
    """A prefill's key selection, as the attention layer reads it."""

    @property
    def bias(self) -> Array:
        """float32 ``[b, 1, s, s]``: 0 at each query's kept keys, ``-inf`` elsewhere."""
        ...

    @property
    def cached(self) -> dict[str, Array]:
        """What a cache keeps of it: its entries ``[b, s, ...]`` (``mla.selection_cache``)."""
        ...


S = TypeVar("S", bound=Selected)


class KeySelector(Protocol[S]):
    """A part that picks the keys each query of an attention layer attends to (an additive
    ``-inf`` logit bias: tjx.kernels' XLA path), with its own cache entries and, optionally, a
    loss of its own; the layer calls it by this interface alone (DeepSeek Sparse Attention's
    indexer is one, `Indexer`)."""

    #: What it is, for the one-line refusals of what cannot hold a per-query key set.
    selection_name: str

    def prefill(self, attn: Any, x: Array, positions: Array, segment_ids: Any, local: Any) -> S:
        """A whole call's selection of the layer ``attn``'s inputs ``x`` ``[b, s, d_model]``
        (``segment_ids``: the call's, or None; ``local``: the layer's window switch)."""
        ...

    def step(
        self, attn: Any, x: Array, positions: Array, cache: Cache, cache_pos: Array, local: Any
    ) -> tuple[Array, Cache]:
        """A decode step's bias ``[b, 1, s, T]`` over the cache's slots, and the cache with the
        step's entries written."""
        ...

    def loss(self, selected: S, q: Array, k: Array, scale: float) -> tuple[Array, Array] | None:
        """Its loss as sums ``(loss_sum, queries)`` given the main attention's queries and keys
        (``scale``: its logit scale), or None where the config trains none."""
        ...


def per_layer_embed(config: TransformerConfig, *, rngs: nnx.Rngs) -> PerLayerEmbed | None:
    """The model's per-layer embeddings (``gemma4.per_layer_input_dim`` > 0), else None.

    Parameters
    ----------
    config : TransformerConfig
        The decoder's config.
    rngs : nnx.Rngs
        Its initialisers' keys.

    Returns
    -------
    PerLayerEmbed or None
    """
    return PerLayerEmbed(config, rngs=rngs) if config.gemma4.per_layer_input_dim else None


def layer_input(
    config: TransformerConfig, *, rngs: nnx.Rngs, out_std: float
) -> PerLayerInput | None:
    """A block's use of its per-layer input (``gemma4.per_layer_input_dim`` > 0), else None.

    Parameters
    ----------
    config : TransformerConfig
        The block's config.
    rngs : nnx.Rngs
        Its initialisers' keys.
    out_std : float
        The init std of its output projection (the block's residual one).

    Returns
    -------
    PerLayerInput or None
    """
    return (
        PerLayerInput(config, rngs=rngs, out_std=out_std)
        if config.gemma4.per_layer_input_dim
        else None
    )


def key_selector(config: TransformerConfig, *, rngs: nnx.Rngs) -> KeySelector[Any] | None:
    """A DeepSeek MLA layer's key selection: DeepSeek-V3.2's lightning indexer (DeepSeek Sparse
    Attention: ``mla.index_topk`` set), else None.

    Parameters
    ----------
    config : TransformerConfig
        The layer's config.
    rngs : nnx.Rngs
        Its initialisers' keys.

    Returns
    -------
    KeySelector or None
    """
    return Indexer(config, rngs=rngs) if config.mla.index_topk else None
