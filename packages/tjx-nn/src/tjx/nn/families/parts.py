"""The layers a family folder adds to the shared decoder, built where the decoder and its blocks
ask for them (a config that does not switch them on gets None), so the shared modules name no
family."""

from __future__ import annotations

from flax import nnx

from tjx.nn.configs import TransformerConfig
from tjx.nn.families.deepseek_v32.indexer import Indexer
from tjx.nn.families.deepseek_v32.indexer import index_loss as index_loss  # the layer's hook
from tjx.nn.families.gemma4.layers import PerLayerEmbed, PerLayerInput


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


def sparse_indexer(config: TransformerConfig, *, rngs: nnx.Rngs) -> Indexer | None:
    """A DeepSeek MLA layer's lightning indexer (DeepSeek Sparse Attention: ``mla.index_topk``
    set), else None.

    Parameters
    ----------
    config : TransformerConfig
        The layer's config.
    rngs : nnx.Rngs
        Its initialisers' keys.

    Returns
    -------
    Indexer or None
    """
    return Indexer(config, rngs=rngs) if config.mla.index_topk else None
