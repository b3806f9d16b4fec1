"""The jitted train and eval steps (pure functions of a state dict and a batch).

The state is ``{"params": pure dict, "opt_state": optax state, "step": int32}``; the model's graph
(``graphdef``) and its non-parameter state (RNG streams, ``rest``) are closed over. Dropout keys are
``fold_in(rest key, step)`` each step, so the RNG needs no saving and a resumed run draws the same
masks as an uninterrupted one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from tjx import nn
from trainer import dpo
from trainer.config import Config

Batch = dict[str, jax.Array]
State = dict[str, Any]


def make_loss_fn(
    graphdef: Any, rest: Any, cfg: Config, split: Any = None, experts: Any = None
) -> Callable[..., Any]:
    """``loss_fn(params, batch, step) -> (mean loss, aux sums)``: tjx.nn's ``objective_loss``;
    aux holds the summed loss, scored units, top-1 correct count and an MoE model's router sums
    (``"moe"``, rows = MoE layers). ``split`` (tjx.parallel's ContextParallel): sequences split
    over the context devices; ``experts`` (tjx.parallel's ``expert_parallel``): how MoE layers
    run on the mesh (None: as XLA shards them)."""
    if cfg.mesh.pipeline > 1:  # the layer stack as a pipeline over the `pipeline` mesh axis
        return pipeline_loss_fn(graphdef, rest, cfg)
    # Adapter dropout draws from the model's dropout stream too (tjx.nn.add_lora installs one).
    deterministic = cfg.model.dropout == 0.0 and not (cfg.use_lora and cfg.lora.dropout > 0)
    if dpo.is_dpo(cfg):  # preference pairs: the DPO loss (its reference bound per step)
        head = dpo.head_settings(cfg)
        return nn.preference_loss_fn(
            graphdef, rest, cfg.preference, deterministic=deterministic, **head
        )
    base_key = jax.random.key(cfg.train.seed)

    def loss_fn(params: Any, batch: Batch, step: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        model = nnx.merge(graphdef, params, nn.reseed(rest, step))
        # Under a split, attention crosses the context devices (ring or all-gather) and the loss
        # keeps each device's tokens; the batch came in the split's order (place_batch).
        with nn.sequence_parallel(split), nn.expert_parallel_scope(experts):
            out = nn.objective_loss(
                model,
                batch,
                key=jax.random.fold_in(base_key, step),  # the objective's own draws (BERT's)
                deterministic=deterministic,
                mask_prob=cfg.train.mlm_probability,
                **cfg.train.head_settings,
            )
        aux = {k: getattr(out, k) for k in ("sum_loss", "num_tokens", "num_correct")}
        if out.moe is not None:  # sums: they add over micro-batches (aux_reduce="sum")
            aux["moe"] = out.moe._asdict()
        return out.loss, aux

    return loss_fn


def make_train_step(
    graphdef: Any,
    rest: Any,
    tx: optax.GradientTransformation,
    cfg: Config,
    split: Any = None,
    experts: Any = None,
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
    """``train_step(state, batch) -> (state, metrics)``: accumulation, update, step report; an MoE
    model adds ``metrics["moe"]`` (summed router statistics) and moves a sigmoid router's bias by
    them (DeepSeek-V3's auxiliary-loss-free balancing)."""
    from tjx import optim
    from tjx.optim import loss_scale_value, scale_loss, step_report

    loss_fn = make_loss_fn(graphdef, rest, cfg, split, experts)
    balance_bias = cfg.model.num_experts > 0 and cfg.model.router == "sigmoid"
    micro = cfg.optimizer.accumulation_steps
    scaled = cfg.optimizer.loss_scale is not None

    def train_step(state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
        params, opt_state, step = state["params"], state["opt_state"], state["step"]
        step_loss = dpo.bind_reference(loss_fn, state)  # DPO's frozen reference, if it has one

        def scaled_loss(p: Any, b: Batch) -> tuple[jax.Array, dict[str, Any]]:
            loss, aux = step_loss(p, b, step)
            # fp16: differentiate loss × scale; the optimizer chain unscales (and skips on inf).
            return (scale_loss(loss, opt_state) if scaled else loss), aux

        # Each micro-batch's loss is a mean over its own valid targets (num_tokens: non-ignored
        # labels, MLM-masked tokens, images, or DPO's real pairs). Weighting by that count makes
        # the step the gradient of the whole batch's mean; equal weights would over-count the
        # tokens of micro-batches with more padding / ignored targets. Counts in aux are summed.
        # With LoRA only the adapters are differentiated: the frozen base's weight gradients
        # are never computed, and its zero "gradients" are constants only_trainable drops.
        loss, aux, grads = optim.trainable_gradients(
            scaled_loss,
            params,
            batch,
            trainable=optim.adapter_mask(params) if cfg.use_lora else None,
            num_micro_batches=micro,
            aux_reduce="sum",
            weight="num_tokens",
        )
        if scaled:  # report the unscaled loss (exact for the power-of-two dynamic scale)
            loss = loss / loss_scale_value(opt_state).astype(loss.dtype)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        if balance_bias:  # the bias has no gradient; it follows the step's expert loads
            model = nnx.merge(graphdef, params, rest)
            model.update_router_bias(aux["moe"]["expert_tokens"])  # type: ignore[operator]
            params = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        metrics = {"loss": loss, **step_report(opt_state, grads, updates, params)}
        if "preference" in aux:  # rewards, margins, accuracy: means over the batch's pairs
            metrics |= nn.preference_step_metrics(aux)
        else:
            metrics["num_tokens"] = aux["num_tokens"]
        if "moe" in aux:
            metrics["moe"] = aux["moe"]
        new_state = {**state, "params": params, "opt_state": opt_state, "step": step + 1}
        return new_state, metrics

    return train_step


def jit_train_step(setup: Any, cfg: Config, **jit_options: Any) -> Any:
    """`make_train_step` of a built ``trainer.state.Setup``, jitted with the state donated (one copy
    of the params and optimizer state, not two); ``jit_options`` go to ``jax.jit``."""
    experts = experts_of(setup.mesh, setup.rules, cfg)
    step = make_train_step(setup.graphdef, setup.rest, setup.tx, cfg, setup.split, experts)
    return jax.jit(step, donate_argnums=(0,), **jit_options)


def experts_of(mesh: Any, rules: Any, cfg: Config) -> Any:
    """tjx.parallel's ``expert_parallel`` of the mesh (each device routes its own tokens; with
    ``mesh.expert > 1`` tokens travel by all-to-all); None for a model without MoE layers."""
    if not cfg.model.num_experts:
        return None
    from tjx import parallel

    return parallel.expert_parallel(mesh, rules)


def make_eval_step(
    graphdef: Any, rest: Any, cfg: Config, split: Any = None
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """``eval_step(params, batch) -> sums``: tjx-metrics' ``heldout_step`` of tjx-nn's
    ``objective_logits_fn``, as the evaluator builds it (a masked LM with the fixed
    ``eval_mask_key`` of the run's seed); ``split`` as for `make_loss_fn`. Preference data:
    tjx.nn's `preference_sums_fn` (``eval_step(params, batch, reference)``)."""
    from tjx import metrics

    if dpo.is_dpo(cfg):
        return nn.preference_sums_fn(graphdef, rest, cfg.preference, **dpo.head_settings(cfg))

    logits_fn = nn.objective_logits_fn(
        graphdef, rest, key=nn.eval_mask_key(cfg.train.seed), mask_prob=cfg.train.mlm_probability
    )
    step = metrics.heldout_step(logits_fn, top_k=cfg.eval.top_k)
    if split is None:
        return step

    def split_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        with nn.sequence_parallel(split):
            return step(params, batch)  # type: ignore[no-any-return]

    return split_step


# tjx.parallel's `pipeline_loss` is generic (stacked layer params, a layer function, a last-stage
# head); tjx.nn's `pipelined_loss_fn` cuts the decoder into those pieces (`decoder_stages`: the
# embedding before the pipeline, one `Block` per layer, the final norm, unembedding and loss on
# the last stage) and runs them through it.
def pipeline_loss_fn(graphdef: Any, rest: Any, cfg: Config) -> Any:
    """`make_loss_fn` of a decoder whose layer stack runs as a ``mesh.pipeline``-stage pipeline
    (the token-weighted mean of the microbatches: the unpipelined loss)."""
    from tjx import parallel
    from trainer.state import make_mesh

    mesh, _ = make_mesh(cfg)  # the same devices and sizes as build(): the same mesh
    mc = cfg.mesh
    pipeline = functools.partial(
        parallel.pipeline_loss, mesh=mesh, microbatches=mc.microbatches, schedule=mc.schedule
    )
    return nn.pipelined_loss_fn(graphdef, rest, pipeline, **cfg.train.head_settings)
