"""The jitted train and eval steps: pure functions of a `TrainState` (params, optimizer state, step)
and a batch, closing over the model's graph (``graphdef``) and RNG streams (``rest``). Dropout keys
are ``fold_in(rest key, step)``, so the RNG needs no saving and a resumed run draws the same masks.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, TypeAlias

import chex
import jax
import optax
from flax import nnx

from tjx import metrics, nn, optim, parallel
from tjx.optim import loss_scale_value, scale_loss, step_report
from trainer.config import grpo_settings
from trainer.config.typed import StepConfig
from trainer.step import dpo, grpo
from trainer.step.state import Setup, make_mesh
from trainer.step.train_state import TrainState

Batch = dict[str, jax.Array]
#: A loss's auxiliary sums: arrays by name, and an MoE model's router sums under ``"moe"``.
Aux: TypeAlias = dict[str, Any]
#: ``loss_fn(params, batch, step) -> (mean loss, aux sums)``.
LossFn = Callable[[chex.ArrayTree, Batch, jax.Array], tuple[jax.Array, Aux]]
#: ``train_step(state, batch) -> (state, metrics)``.
TrainStep = Callable[[TrainState, Batch], tuple[TrainState, dict[str, jax.Array]]]
#: ``probe(params, grads, updates) -> {name: array}``: what a replay asks of a step's values (the
#: parameters before the step, their gradients and the optimizer's updates; trainer.start.replay),
#: returned in the step's metrics as ``probes/<name>``.
Probe = Callable[[chex.ArrayTree, chex.ArrayTree, chex.ArrayTree], dict[str, jax.Array]]
#: The prefix of a probe's values in a step's metrics.
PROBED = "probes/"


def make_loss_fn(
    graphdef: nnx.GraphDef[nnx.Module],
    rest: nnx.State,
    cfg: StepConfig,
    split: parallel.ContextParallel | None = None,
    experts: parallel.ExpertParallel | None = None,
) -> LossFn:
    """``loss_fn(params, batch, step) -> (mean loss, aux sums)``: tjx.nn's ``objective_loss``;
    aux holds the summed loss, scored units, top-1 correct count and an MoE model's router sums
    (``"moe"``, rows = MoE layers). ``split`` (tjx.parallel's ContextParallel): sequences split
    over the context devices; ``experts`` (tjx.parallel's ``expert_parallel``): how MoE layers
    run on the mesh (None: as XLA shards them)."""
    mc = cfg.mesh
    if mc.pipeline > 1:  # the layer stack as a pipeline over the `pipeline` mesh axis
        # the same devices and sizes as build(): the same mesh
        mesh, _ = make_mesh(mc, cfg.mesh_needs())
        pipeline = functools.partial(
            parallel.pipeline_loss, mesh=mesh, microbatches=mc.microbatches, schedule=mc.schedule
        )
        # tjx.nn cuts the decoder into tjx.parallel's pieces: the token-weighted mean of the
        # microbatches, i.e. the unpipelined loss.
        return nn.pipelined_loss_fn(graphdef, rest, pipeline, **cfg.head_settings)
    # Adapter dropout draws from the model's dropout stream too (tjx.nn.add_lora installs one).
    deterministic = cfg.model.dropout == 0.0 and not (cfg.use_lora and cfg.lora.dropout > 0)
    if grpo_settings.is_grpo(cfg.data):  # prompts: GRPO's loss of the loop's rollout batch
        return grpo.loss_fn(graphdef, rest, cfg)
    if dpo.is_dpo(cfg.data):  # preference pairs: the DPO loss (its reference bound per step)
        head = {"deterministic": deterministic, **dpo.head_settings(cfg)}
        return nn.preference_loss_fn(graphdef, rest, cfg.preference, **head)
    base_key = jax.random.key(cfg.seed)

    def loss_fn(params: chex.ArrayTree, batch: Batch, step: jax.Array) -> tuple[jax.Array, Aux]:
        model = nnx.merge(graphdef, params, nn.reseed(rest, step))
        # Under a split, attention crosses the context devices (ring or all-gather) and the loss
        # keeps each device's tokens; the batch came in the split's order (place_batch).
        with nn.sequence_parallel(split), nn.expert_parallel_scope(experts):
            out = nn.objective_loss(
                model,
                batch,
                key=jax.random.fold_in(base_key, step),  # the objective's own draws (BERT's)
                deterministic=deterministic,
                mask_prob=cfg.mlm_probability,
                **cfg.head_settings,
            )
        aux = {k: getattr(out, k) for k in ("sum_loss", "num_tokens", "num_correct")}
        if out.moe is not None:  # sums: they add over micro-batches (aux_reduce="sum")
            aux["moe"] = out.moe._asdict()
        if out.mtp is not None:  # multi-token prediction: each depth's sums, as the router's
            aux["mtp"] = {"sum_loss": out.mtp.sum_loss, "num_tokens": out.mtp.num_tokens}
        return out.loss, aux

    return loss_fn


def make_train_step(
    graphdef: nnx.GraphDef[nnx.Module],
    rest: nnx.State,
    tx: optax.GradientTransformation,
    cfg: StepConfig,
    split: parallel.ContextParallel | None = None,
    experts: parallel.ExpertParallel | None = None,
    probe: Probe | None = None,
) -> TrainStep:
    """``train_step(state, batch) -> (state, metrics)``: accumulation, update, step report; an MoE
    model adds ``metrics["moe"]`` (summed router statistics) and moves a sigmoid router's bias by
    them (DeepSeek-V3's auxiliary-loss-free balancing); a multi-token-prediction model
    (``model.mtp.depths``) adds ``metrics["mtp_loss"]``. ``probe`` (a replay's): its arrays of
    the step's parameters, gradients and updates in ``metrics["probes/<name>"]``; None (a run's
    own step) traces nothing more."""

    # Delayed float8 scaling: the scales and histories come from the state, not from ``rest``;
    # the loss is differentiated with respect to them too, their cotangents being the step's
    # amaxes (tjx.nn.fp8's delayed_dot), from which the step advances them.
    rest, fp8_meta = nn.split_fp8_meta(rest)
    loss_fn = make_loss_fn(graphdef, rest, cfg, split, experts)
    balance_bias = cfg.model.moe.num_experts > 0 and cfg.model.moe.router == "sigmoid"
    micro = cfg.optimizer.accumulation_steps
    scaled = cfg.optimizer.loss_scale is not None
    # GRPO in micro-batches: each one's loss is its share of the whole batch's (divided by the
    # batch's counts), so the micro-batches sum, where tokens-weighted means would not (bnpo's,
    # dapo's token means over each micro-batch's own tokens).
    grpo_parts = grpo_settings.is_grpo(cfg.data) and micro > 1

    def train_step(state: TrainState, batch: Batch) -> tuple[TrainState, dict[str, jax.Array]]:
        params, opt_state, step = state.param_tree(), state.opt_state, state.step
        before = params
        trainable = optim.adapter_mask(params) if cfg.use_lora else None
        if fp8_meta is not None:  # the float8 state beside the params, always differentiated
            assert state.fp8 is not None  # train_state holds it whenever the model has it
            if trainable is not None:
                trainable = nn.join_fp8_meta(trainable, jax.tree.map(lambda _: True, state.fp8))
        step_loss = dpo.bind_reference(loss_fn, state)  # DPO's frozen reference, if it has one
        if grpo_parts:  # the whole batch's counts, taken before it is split
            step_loss = functools.partial(step_loss, totals=grpo.micro_totals(batch))

        def scaled_loss(p: chex.ArrayTree, b: Batch) -> tuple[jax.Array, Aux]:
            loss, aux = step_loss(p, b, step)
            if grpo_parts:  # the accumulation's equal-weight mean of k shares: their sum
                loss = loss * micro
            # fp16: differentiate loss × scale; the optimizer chain unscales (and skips on inf).
            return (scale_loss(loss, opt_state) if scaled else loss), aux

        # Micro-batches weighted by their valid targets (num_tokens: labels, MLM-masked tokens,
        # images or DPO pairs): the whole batch's mean, where equal weights would over-count the
        # tokens of padded ones. With LoRA only the adapters are differentiated (no base grads).
        loss, aux, grads = optim.trainable_gradients(
            scaled_loss,
            nn.join_fp8_meta(params, state.fp8),
            batch,
            trainable=trainable,
            num_micro_batches=micro,
            aux_reduce="stack" if grpo_parts else "sum",
            weight=None if grpo_parts else "num_tokens",
            # tjx.nn's losses divide by max(count, 1): an empty batch has zero gradients
            # already, and a NaN from any other cause is skipped by the optimizer. Not masking
            # saves one select kernel per parameter leaf every step (128 of gpt2_small's).
            zero_empty_grads=not cfg.optimizer.skip_nonfinite,
            # Micro-batch i is examples i, i + k, ... (a preference pair's two rows together): with
            # the batch sharded by rows over the mesh, every micro-batch stays on every device
            # (contiguous ones would sit on a sub-axis of it: repeated work, and a sharding
            # jax's cuDNN attention cannot partition).
            interleave_rows=cfg.data.batch_rows(1),
        )
        if grpo_parts:
            aux = grpo.micro_aux(aux)
        fp8 = state.fp8
        if fp8 is not None:  # each product's amaxes (its meta's cotangent) into its history
            grads, amaxes = nn.part_fp8_meta(grads)
            fp8 = jax.tree.map(nn.advance_meta, fp8, amaxes)
        if scaled:  # report the unscaled loss (exact for the power-of-two dynamic scale)
            loss = loss / loss_scale_value(opt_state).astype(loss.dtype)
        updates, opt_state = tx.update(grads, opt_state, params)
        if isinstance(state.params, optim.FlatParams):  # one p + u a buffer, not one a leaf
            stored: chex.ArrayTree | optim.FlatParams = state.params.apply(updates)
            params = stored.tree()
        else:
            params = stored = optax.apply_updates(params, updates)
        if balance_bias:  # the bias has no gradient; it follows the step's expert loads
            model = nnx.merge(graphdef, params, rest)
            model.update_router_bias(aux["moe"]["expert_tokens"])  # type: ignore[attr-defined]
            params = stored = nnx.to_pure_dict(nnx.state(model, nnx.Param))
        metrics = {"loss": loss, **step_report(opt_state, grads, updates, params)}
        if probe is not None:
            metrics |= {PROBED + k: v for k, v in probe(before, grads, updates).items()}
        if "preference" in aux:  # rewards, margins, accuracy: means over the batch's pairs
            metrics |= nn.preference_step_metrics(aux)
        else:
            metrics["num_tokens"] = aux["num_tokens"]
        metrics |= aux.get("grpo", {})  # GRPO: kl and the clip ratios (TRL's names)
        metrics |= {"moe": aux["moe"]} if "moe" in aux else {}
        if "mtp" in aux:  # the depths' mean cross-entropy (unweighted: the loss holds λ times it)
            metrics["mtp_loss"] = nn.mtp_metric(aux["mtp"]["sum_loss"], aux["mtp"]["num_tokens"])
        new_state = dataclasses.replace(
            state, params=stored, opt_state=opt_state, step=step + 1, fp8=fp8
        )
        return new_state, metrics

    return train_step


def jit_train_step(setup: Setup, **jit_options: Any) -> jax.stages.Wrapped:
    """`make_train_step` of a built ``trainer.step.state.Setup`` (of its `StepConfig`), jitted with
    the state donated (one copy of the params and optimizer state, not two); ``jit_options`` go to
    ``jax.jit``."""
    cfg, split, experts = setup.step_config, setup.split, setup.experts
    step = make_train_step(setup.graphdef, setup.rest, setup.tx, cfg, split, experts)
    return jax.jit(step, donate_argnums=(0,), **jit_options)


def make_eval_step(
    graphdef: nnx.GraphDef[nnx.Module],
    rest: nnx.State,
    cfg: StepConfig,
    split: parallel.ContextParallel | None = None,
) -> Callable[..., dict[str, jax.Array]]:
    """``eval_step(params, batch) -> sums``: tjx-metrics' ``heldout_step`` of tjx-nn's
    ``objective_logits_fn``, as the evaluator builds it (a masked LM with the fixed
    ``eval_mask_key`` of the run's seed); ``split`` as for `make_loss_fn`. Preference data:
    tjx.nn's `preference_sums_fn` (``eval_step(params, batch, reference)``). ``params`` is the
    state's `TrainState.model_tree` (delayed float8 scaling's state beside the params: held-out
    products cast with the scales the train step reached, not ``rest``'s first ones)."""

    if dpo.is_dpo(cfg.data):
        return nn.preference_sums_fn(graphdef, rest, cfg.preference, **dpo.head_settings(cfg))
    rest, _ = nn.split_fp8_meta(rest)  # the float8 state comes with the params
    logits_fn = nn.objective_logits_fn(
        graphdef, rest, key=nn.eval_mask_key(cfg.seed), mask_prob=cfg.mlm_probability
    )
    step = metrics.heldout_step(logits_fn, top_k=cfg.eval.top_k)
    if split is None:
        return step

    def split_step(params: chex.ArrayTree, batch: Batch) -> dict[str, jax.Array]:
        with nn.sequence_parallel(split):
            return step(params, batch)  # type: ignore[no-any-return]

    return split_step
