"""Multi-token prediction (DeepSeek-V3's MTP, GLM-4.5's): ``mtp.depths`` modules after the decoder
stack, depth ``k`` predicting the token ``k + 1`` places after each position.

Depth ``k`` (1-based) at position ``i`` joins the previous depth's hidden state ``h^{k-1}_i``
(``h^0``: the stack's output before the final norm) with the embedding of token ``t_{i+k}``::

    h^k_i = Block_k(eh_proj([enorm(Emb(t_{i+k})), hnorm(h^{k-1}_i)]))   (embedding first)
    logits^k_i = head(norm_k(h^k_i))                                     (predicts t_{i+k+1})

``Block_k`` is a decoder layer as the stack's (a full-attention block at the same positions; an
MoE one where the layer ``num_layers + k - 1`` of the stack would be), ``norm_k`` DeepSeek's
``shared_head.norm``; ``Emb`` and ``head`` are the main model's own (DeepSeek's checkpoints
store copies of them per depth, the same values). The MTP loss is the mean over the depths of
each depth's mean cross-entropy; the training loss adds it times ``mtp.loss_weight`` (DeepSeek-V3
trained with 0.3, then 0.1). Serving, depth 1 drafts a token that the main model verifies
(``tjx.nn.speculative``).

vLLM's serving code zeroes the embedding at position 0 (``positions == 0``); tjx does not (nor do
DeepSeek's paper, SGLang or Megatron): the first position's draft of a prompt may differ.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.kernels import AttentionMask, CrossEntropyOutput
from tjx.nn.block import Block, LayerInputs, model_norm
from tjx.nn.configs import TransformerConfig
from tjx.nn.kv_cache import LayerCache
from tjx.nn.linear import Dense, split_key
from tjx.nn.moe.config import moe_layers
from tjx.nn.moe.layer import MoEStats, join_stats, router_penalty
from tjx.nn.params import normal
from tjx.nn.sequence import current_sequence_parallel

Array = jax.Array


def mtp_moe_layers(config: TransformerConfig) -> tuple[bool, ...]:
    """Per MTP depth: whether its block is MoE, as layer ``num_layers + k - 1`` of the stack
    would be (DeepSeek-V3's and GLM-4.5's are: their layer index is past the dense ones)."""
    n = config.num_layers
    return moe_layers(config, n + config.mtp.depths)[n:]


class MTPLayer(nnx.Module):
    """One depth: ``enorm``, ``hnorm``, ``eh_proj`` ``[2·d, d]``, a decoder ``block`` and the
    ``norm`` before the shared head."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs, moe: bool) -> None:
        c = config

        self.enorm, self.hnorm = model_norm(c, rngs=rngs), model_norm(c, rngs=rngs)
        self.eh_proj = Dense(
            (2 * c.d_model,),
            (c.d_model,),
            (None,),
            ("embed",),
            rngs=rngs,
            use_bias=False,
            init=normal(c.init.std),
            precision=c.precision,
        )
        self.block = Block(c, rngs=rngs, num_layers=c.num_layers, causal=True, moe=moe)
        self.norm = model_norm(c, rngs=rngs)

    def __call__(
        self,
        hidden: Array,
        embedded: Array,
        *,
        positions: Array,
        segment_ids: Any = None,
        deterministic: bool = True,
        rng: Array | None = None,
        cache: LayerCache | None = None,
        cache_pos: Array | None = None,
        lengths: Array | None = None,
        extend: bool = False,
    ) -> tuple[Array, LayerCache | None, MoEStats | None]:
        """``h^k`` ``[b, s, d]`` (before ``norm``) from ``h^{k-1}`` and ``Emb(t_{i+k})``; the
        block's cache (a prefill or decode step, as `Block`'s; ``extend``: of ``s`` tokens)
        and MoE statistics."""
        joined = jnp.concatenate([self.enorm(embedded), self.hnorm(hidden)], axis=-1)
        inputs = LayerInputs(
            positions=positions,
            mask=AttentionMask(segment_ids=segment_ids),
            deterministic=deterministic,
            cache_pos=cache_pos,
            lengths=lengths,
            extend=extend,
        )
        return self.block(  # type: ignore[no-any-return]
            self.eh_proj(joined), inputs=inputs, rng=rng, cache=cache, local=False
        )


class MTP(nnx.Module):
    """The ``mtp.depths`` `MTPLayer`s of a decoder (``DecoderLM.mtp``)."""

    def __init__(self, config: TransformerConfig, *, rngs: nnx.Rngs) -> None:
        self.layers = nnx.List([MTPLayer(config, rngs=rngs, moe=m) for m in mtp_moe_layers(config)])


class MTPLoss(NamedTuple):
    """`mtp_loss`'s result.

    Attributes
    ----------
    loss : Array
        float32 scalar: the mean over depths of each depth's mean cross-entropy (z-loss
        included), plus the MTP blocks' MoE router losses; the training loss adds it times
        ``mtp.loss_weight``.
    sum_loss, num_tokens : Array
        ``[depths]``: each depth's summed cross-entropy and scored labels (sums: they add over
        micro-batches; `mtp_metric` makes the logged value of them).
    """

    loss: Array
    sum_loss: Array
    num_tokens: Array


def shift_left(x: Array, k: int, fill: int) -> Array:
    """``x[:, k:]`` padded at the end with ``fill`` to ``x``'s length (``[b, s]``)."""
    pad = jnp.full((x.shape[0], min(k, x.shape[1])), fill, x.dtype)
    return jnp.concatenate([x[:, k:], pad], axis=1)


def mtp_labels(targets: Array, k: int, segment_ids: Array | None = None) -> Array:
    """Depth ``k``'s labels: ``targets`` ``k`` places on (``t_{i+k+1}``), ``-100`` past the end
    and where position ``i + k`` is in another packed document than ``i``."""
    labels = shift_left(targets, k, -100)
    if segment_ids is not None:
        labels = jnp.where(shift_left(segment_ids, k, -1) == segment_ids, labels, -100)
    return labels


def mtp_hidden(
    model: Any,
    prenorm: Array,
    batch: Mapping[str, Array],
    *,
    deterministic: bool = True,
    rng: Array | None = None,
) -> tuple[list[Array], MoEStats | None]:
    """Each depth's normed hidden states ``[b, s, d]`` (for the model's head) from the stack's
    output before the final norm, and the MTP blocks' MoE statistics (None without MoE).

    Parameters
    ----------
    model : DecoderLM
        A model with ``mtp`` (``mtp.depths > 0``).
    prenorm : Array
        ``[b, s, d]``: ``h^0``, the stack's output (``DecoderLM.trunk``).
    batch : Mapping
        The packed batch the stack read, as `mtp_loss` takes it: its ``inputs`` int ``[b, s]``
        (depth ``k`` embeds them ``k`` places on), and its ``positions`` and ``segment_ids``
        where it has them (default ``0..s-1``, one document); other keys are not read.
    deterministic : bool
        Disable dropout.
    rng : Array, optional
        Dropout key (split per depth).
    """
    if current_sequence_parallel() is not None:
        raise ValueError(
            "mtp.depths: multi-token prediction shifts tokens along the sequence, which a "
            "sequence_parallel split cuts; train it without the split (or set mtp.depths=0)"
        )
    tokens, positions = batch["inputs"], batch.get("positions")
    b, s = tokens.shape
    if positions is None:
        positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
    keys = split_key(rng, len(model.mtp.layers))
    h, outs, stats = prenorm, [], []
    for k, layer in enumerate(model.mtp.layers, start=1):
        embedded = model.embed_tokens(shift_left(tokens, k, 0), positions)
        h, _, st = layer(
            h,
            embedded,
            positions=positions,
            segment_ids=batch.get("segment_ids"),
            deterministic=deterministic,
            rng=keys[k - 1],
        )
        outs.append(layer.norm(h))
        if st is not None:
            stats.append(st)
    moe = None if not stats else join_stats(stats, jnp.stack)
    return outs, moe


def mtp_loss(
    model: Any,
    prenorm: Array,
    batch: dict[str, Array],
    score: Any,
    *,
    deterministic: bool = True,
    rng: Array | None = None,
) -> MTPLoss:
    """The MTP loss of ``model`` on ``batch`` (``inputs``, ``targets``, optional ``positions``
    and ``segment_ids``) from the stack's output ``prenorm``.

    ``score(hidden, labels) -> CrossEntropyOutput`` is the main head's loss (the objective's
    ``token_loss`` with its settings), so each depth is scored as the model's own next token.
    """
    hidden, stats = mtp_hidden(model, prenorm, batch, deterministic=deterministic, rng=rng)
    segment_ids = batch.get("segment_ids")
    outs: list[CrossEntropyOutput] = [
        score(h, mtp_labels(batch["targets"], k, segment_ids))
        for k, h in enumerate(hidden, start=1)
    ]
    loss = jnp.mean(jnp.stack([o.loss for o in outs]))
    if stats is not None:
        loss = loss + router_penalty(stats, model.config).astype(loss.dtype)
    return MTPLoss(
        loss,
        jnp.stack([o.sum_loss for o in outs]),
        jnp.stack([o.num_tokens for o in outs]),
    )


def mtp_metric(sum_loss: Array, num_tokens: Array) -> Array:
    """The logged ``mtp_loss``: the mean over depths of each depth's summed cross-entropy over
    its scored labels (``MTPLoss``'s sums, added over micro-batches)."""
    return jnp.mean(sum_loss / jnp.maximum(num_tokens, 1))
