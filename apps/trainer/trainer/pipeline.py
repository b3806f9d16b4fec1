"""The trainer's decoder LM run as a pipeline over the ``pipeline`` mesh axis (tjx.parallel).

tjx.parallel's `pipeline_loss` is generic (stacked layer params, a layer function, a last-stage
head); this module gives it tjx-nn's decoder: the embedding before the pipeline, one `Block` per
layer, and the final norm, unembedding and the task's token loss on the last stage.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from trainer import tasks
from trainer.config import Config
from trainer.state import make_mesh


class _HeadView:
    """What ``tasks.token_loss`` reads from a decoder (``unembedding``, ``logits``), built from
    the head's own params: the last pipeline stage holds these, not the whole model."""

    def __init__(self, embed: Any, head: Any, precision: Any) -> None:
        self.embed, self.head, self.precision = embed, head, precision

    def unembedding(self) -> jax.Array:
        from tjx.nn.decoder import head_unembedding

        return head_unembedding(self.embed, self.head)

    def logits(self, hidden: jax.Array) -> jax.Array:
        from tjx.nn.decoder import head_logits

        return head_logits(self.embed, self.head, hidden, self.precision)


def pipeline_loss_fn(graphdef: Any, rest: Any, cfg: Config) -> Any:
    """``loss_fn(params, batch, step) -> (loss, aux)`` of a decoder LM with its layer stack run
    as a ``cfg.mesh.pipeline``-stage pipeline (tjx.parallel.pipeline_loss).

    The embedding runs before the pipeline and the final norm + unembedding + loss on its last
    stage; the loss is the token-weighted mean of the microbatches' means, so it equals the
    unpipelined loss. Needs ``model.scan_layers`` and no dropout (``config.validate`` checks).
    """
    from tjx import parallel
    from tjx.nn.stack import remat_policy

    mesh, _ = make_mesh(cfg)  # the same devices and sizes as build(): the same mesh
    mc = cfg.mesh

    def loss_fn(params: Any, batch: dict[str, jax.Array], step: jax.Array) -> Any:
        del step  # no dropout under the pipeline: nothing is drawn per step
        model = nnx.merge(graphdef, params, rest)
        block_def = nnx.graphdef(model.stack.layers)
        defs = {k: nnx.graphdef(getattr(model, k)) for k in ("embed", "final_norm", "head")}
        head_keys = [k for k in defs if k in params]

        def layer_fn(p: Any, h: jax.Array, side: dict[str, Any]) -> jax.Array:
            out, _ = nnx.merge(block_def, p)(h, **side, deterministic=True)
            return out  # type: ignore[no-any-return]

        if cfg.model.remat != "none":
            layer_fn = jax.checkpoint(layer_fn, policy=remat_policy(cfg.model.remat))

        def head_fn(hp: Any, h: jax.Array, hside: dict[str, jax.Array]) -> Any:
            part = {k: nnx.merge(defs[k], hp[k]) if k in hp else None for k in defs}
            if part["final_norm"] is not None:
                h = part["final_norm"](h)
            view = _HeadView(part["embed"], part["head"], model.config.precision)
            out = tasks.token_loss(view, h, hside["targets"], cfg)
            loss = out.pop("loss")
            return loss * out["num_tokens"].astype(loss.dtype), out  # the microbatch's sum

        tokens = batch["inputs"]
        b, s = tokens.shape
        positions = batch.get("positions")
        if positions is None:
            positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        side = {"positions": positions, "segment_ids": batch.get("segment_ids")}
        x = model.embed_tokens(tokens, positions)
        run = parallel.pipeline_loss(
            layer_fn, head_fn, mesh, microbatches=mc.microbatches, schedule=mc.schedule
        )
        hp = {k: params[k] for k in head_keys}
        total, aux = run(params["stack"]["layers"], hp, x, side, {"targets": batch["targets"]})
        count = jnp.maximum(aux["num_tokens"], 1).astype(total.dtype)
        return total / count, aux

    return loss_fn
