"""A scanned decoder LM cut into the plain functions a pipeline runs: the embedding before it,
one layer of the stacked ``Stack`` per step, and the final norm + LM head + loss after it.

The functions take parameters as pure dicts (``nnx.to_pure_dict`` of ``nnx.split(model,
nnx.Param, ...)``), so a pipeline runner (``tjx.parallel.pipeline_loss``) can slice the stacked
layer params over stages and hand the head's params to the last stage alone;
`pipelined_loss_fn` is the whole loss of such a run, as a trainer differentiates it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from tjx.kernels import AttentionMask
from tjx.nn.block import LayerInputs
from tjx.nn.decoder import DecoderLM, head_cross_entropy
from tjx.nn.stack import remat_policy

Array = jax.Array
Side = dict[str, Any]

#: ``pipeline(layer, head) -> run``: a pipeline runner of the stages (e.g. tjx.parallel's
#: ``pipeline_loss`` with its mesh bound); ``run(layer_params, head_params, x, side, head_side)
#: -> (summed loss, summed sums)``.
Pipeline = Callable[[Callable[..., Any], Callable[..., Any]], Callable[..., tuple[Array, Any]]]

#: The decoder's modules after the layer stack (a None module, e.g. a tied head, has no params).
HEAD_MODULES = ("embed", "final_norm", "head")


class DecoderStages(NamedTuple):
    """The pieces of one decoder LM (see `decoder_stages`)."""

    #: ``inputs(batch) -> (x, side, head_side)``: token (+ position) embeddings ``[b, s, d]``, the
    #: layers' side inputs (``positions``, ``segment_ids``) and the head's (``targets``).
    inputs: Callable[[dict[str, Array]], tuple[Array, Side, Side]]
    #: ``layer(layer_params, h, side) -> h``: one block, no dropout, rematerialised per the
    #: model's ``remat`` policy.
    layer: Callable[[Any, Array, Side], Array]
    #: ``head(head_params, h, head_side) -> (summed loss, sums)``: the final norm, LM head and
    #: loss of a microbatch; the loss is the mean times ``num_tokens`` (z-loss included) and the
    #: sums are ``sum_loss``, ``num_tokens``, ``num_correct``.
    head: Callable[[Any, Array, Side], tuple[Array, dict[str, Array]]]
    #: ``split_params(params) -> (stacked layer params, head params)``.
    split_params: Callable[[Any], tuple[Any, Any]]


def decoder_stages(
    model: DecoderLM, *, chunked: bool = True, chunk_size: int | None = None, z_loss: float = 0.0
) -> DecoderStages:
    """``model``'s embedding, layer and head as plain functions of pure-dict params.

    Parameters
    ----------
    model : DecoderLM
        With ``scan_layers=True`` (a stage is a run of the stacked layers) and no dropout: the
        stages run ``deterministic`` (no dropout keys per stage).
    chunked, chunk_size, z_loss
        The head's loss, as for ``head_cross_entropy``.

    Returns
    -------
    DecoderStages
        Run in order, ``head(hp, layer(...layer(x)...), head_side)`` summed over microbatches
        and divided by the summed ``num_tokens`` is the model's ``objective_loss``.

    Raises
    ------
    ValueError
        A model that is not a decoder LM, whose layers are not scanned, with dropout (the
        stages would leave it out without a word), or with MoE layers.
    """
    if not isinstance(model, DecoderLM) or not model.config.scan_layers:
        raise ValueError(
            "decoder_stages needs a DecoderLM with scan_layers=True (stacked layers); got "
            f"{type(model).__name__}"
        )
    c = model.config
    if c.moe.num_experts:
        raise ValueError(
            "decoder_stages: MoE layers are not pipelined (their router losses and statistics "
            f"would be lost between stages); got moe.num_experts={c.moe.num_experts} (set it to 0)"
        )
    if c.mtp.depths:
        raise ValueError(
            "decoder_stages: the multi-token-prediction modules are not pipelined (their loss "
            f"would be lost between stages); got mtp.depths={c.mtp.depths} (set it to 0)"
        )
    if c.attention.window_pattern is not None and len(set(c.layer_locals())) > 1:
        raise ValueError(
            "decoder_stages runs every layer alike; an attention.window_pattern that mixes local "
            "and global layers is not supported in a pipeline (one sliding_window for every layer "
            "is)"
        )
    if c.dropout or c.attention.dropout:
        raise ValueError(
            "decoder_stages runs the layers without dropout; got dropout="
            f"{c.dropout}, attention.dropout={c.attention.dropout} (set both to 0)"
        )
    block_def = nnx.graphdef(model.stack.layers)
    modules = {k: getattr(model, k) for k in HEAD_MODULES}
    defs = {k: nnx.graphdef(m) for k, m in modules.items() if m is not None}

    def inputs(batch: dict[str, Array]) -> tuple[Array, Side, Side]:
        tokens = batch["inputs"]
        b, s = tokens.shape
        positions = batch.get("positions")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        side = {"positions": positions, "segment_ids": batch.get("segment_ids")}
        return model.embed_tokens(tokens, positions), side, {"targets": batch["targets"]}

    def layer(p: Any, h: Array, side: Side) -> Array:
        # The side inputs stay arrays (a pipeline slices them into microbatches); the layer's
        # mask is built from this microbatch's segment ids, as `Stack.run` builds it.
        mask = AttentionMask(segment_ids=side["segment_ids"])
        block = nnx.merge(block_def, p)
        out, _, _ = block(h, inputs=LayerInputs(positions=side["positions"], mask=mask))
        return out  # type: ignore[no-any-return]

    if c.remat != "none":
        layer = jax.checkpoint(layer, policy=remat_policy(c.remat))

    def head(hp: Any, h: Array, head_side: Side) -> tuple[Array, dict[str, Array]]:
        part = {k: nnx.merge(defs[k], hp[k]) for k in hp}
        if "final_norm" in part:
            h = part["final_norm"](h)
        out = head_cross_entropy(
            part["embed"],
            part.get("head"),  # None: tied to the embedding
            h,
            head_side["targets"],
            c.precision,
            chunked=chunked,
            chunk_size=chunk_size,
            z_loss=z_loss,
            softcap=c.final_logit_softcap,
            implementation=c.cross_entropy_impl,
        )
        sums = {
            "sum_loss": out.sum_loss,
            "num_tokens": out.num_tokens,
            "num_correct": out.num_correct,
        }
        return out.loss * out.num_tokens.astype(out.loss.dtype), sums

    def split_params(params: Any) -> tuple[Any, Any]:
        return params["stack"]["layers"], {k: params[k] for k in defs if k in params}

    return DecoderStages(inputs, layer, head, split_params)


def pipelined_loss_fn(
    graphdef: Any,
    rest: Any,
    pipeline: Pipeline,
    *,
    chunked: bool = True,
    chunk_size: int | None = None,
    z_loss: float = 0.0,
) -> Callable[[Any, dict[str, Array], Array], tuple[Array, Any]]:
    """``loss_fn(params, batch, step) -> (loss, sums)`` of a decoder LM with its layers run by
    ``pipeline``: the embedding before it, the final norm, LM head and loss on its last stage.

    Parameters
    ----------
    graphdef, rest
        The model's graph and non-parameter state (``nnx.split(model, nnx.Param, ...)``).
    pipeline : Pipeline
        Runs `decoder_stages`' ``layer`` and ``head`` over microbatches and stages.
    chunked, chunk_size, z_loss
        The head's loss, as for `decoder_stages`.

    Returns
    -------
    Callable
        ``loss_fn``: the microbatches' summed loss over their summed ``num_tokens``, so it equals
        the unpipelined ``objective_loss`` (``step`` unused: the stages draw no dropout).
    """

    def loss_fn(params: Any, batch: dict[str, Array], step: Array) -> tuple[Array, Any]:
        del step  # no dropout in the stages: nothing is drawn per step
        model = nnx.merge(graphdef, params, rest)
        stages = decoder_stages(model, chunked=chunked, chunk_size=chunk_size, z_loss=z_loss)
        run = pipeline(stages.layer, stages.head)
        x, side, head_side = stages.inputs(batch)
        total, sums = run(*stages.split_params(params), x, side, head_side)
        count = jnp.maximum(sums["num_tokens"], 1).astype(total.dtype)
        return total / count, sums

    return loss_fn
