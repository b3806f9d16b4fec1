"""The trainer's decoder LM run as a pipeline over the ``pipeline`` mesh axis (tjx.parallel).

tjx.parallel's `pipeline_loss` is generic (stacked layer params, a layer function, a last-stage
head); tjx.nn's `decoder_stages` cuts the decoder into those pieces (the embedding before the
pipeline, one `Block` per layer, the final norm, unembedding and loss on the last stage). This
module hands the one to the other.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from trainer.config import Config
from trainer.state import make_mesh


def pipeline_loss_fn(graphdef: Any, rest: Any, cfg: Config) -> Any:
    """``loss_fn(params, batch, step) -> (loss, aux)`` of a decoder LM with its layer stack run
    as a ``mesh.pipeline``-stage pipeline (tjx.parallel.pipeline_loss).

    The embedding runs before the pipeline and the final norm + unembedding + loss on its last
    stage; the loss is the token-weighted mean of the microbatches' means, so it equals the
    unpipelined loss. Needs ``model.scan_layers`` and no dropout (``state.make_mesh`` checks).
    """
    from tjx import nn, parallel

    mesh, _ = make_mesh(cfg)  # the same devices and sizes as build(): the same mesh
    mc = cfg.mesh

    def loss_fn(params: Any, batch: dict[str, jax.Array], step: jax.Array) -> Any:
        del step  # no dropout under the pipeline: nothing is drawn per step
        model = nnx.merge(graphdef, params, rest)
        stages = nn.decoder_stages(model, **cfg.train.head_settings)
        pipelined = parallel.pipeline_loss(
            stages.layer, stages.head, mesh, microbatches=mc.microbatches, schedule=mc.schedule
        )
        x, side, head_side = stages.inputs(batch)
        total, aux = pipelined(*stages.split_params(params), x, side, head_side)
        count = jnp.maximum(aux["num_tokens"], 1).astype(total.dtype)
        return total / count, aux

    return loss_fn
