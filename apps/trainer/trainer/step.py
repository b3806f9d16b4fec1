"""The jitted train and eval steps (pure functions of a state dict and a batch).

The state is ``{"params": pure dict, "opt_state": optax state, "step": int32}``; the model's graph
(``graphdef``) and its non-parameter state (RNG streams, ``rest``) are closed over. Dropout keys are
``fold_in(rest key, step)`` each step, so the RNG needs no saving and a resumed run draws the same
masks as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from trainer.config import Config

Batch = dict[str, jax.Array]
State = dict[str, Any]


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def reseed(rest: Any, step: jax.Array) -> Any:
    """Every RNG key of the model's non-parameter state folded with ``step``."""
    return jax.tree.map(lambda x: jax.random.fold_in(x, step) if _is_key(x) else x, rest)


def lm_forward(model: Any, batch: Batch, *, deterministic: bool) -> jax.Array:
    """Final hidden states [b, s, d] of a decoder (or encoder) LM."""
    return model(
        batch["inputs"],
        positions=batch.get("positions"),
        segment_ids=batch.get("segment_ids"),
        deterministic=deterministic,
        return_hidden=True,
    )


def token_loss(model: Any, hidden: jax.Array, targets: jax.Array, cfg: Config) -> dict[str, Any]:
    """Mean loss (z-loss included) and exact sums, chunked (no [b,s,V] logits) or plain."""
    from tjx.kernels import chunked_cross_entropy

    if cfg.train.chunked_ce:
        out = chunked_cross_entropy(
            hidden,
            model.unembedding(),
            targets,
            chunk_size=cfg.train.ce_chunk_size,
            z_loss=cfg.train.z_loss,
        )
        return {
            "loss": out.loss,
            "sum_loss": out.sum_loss,
            "num_tokens": out.num_tokens,
            "num_correct": out.num_correct,
        }
    # Plain path: the model's own float32 logits, tjx-nn's loss and tjx-metrics' sums.
    from tjx import metrics, nn

    logits = model.logits(hidden)
    stats = metrics.lm_stats(logits, targets, top_k=(1,))
    return {
        "loss": nn.cross_entropy_loss(logits, targets, z_loss=cfg.train.z_loss),
        "sum_loss": stats["sum_loss"],
        "num_tokens": stats["num_tokens"],
        "num_correct": stats["correct_top1"],
    }


def mlm_forward(
    model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
) -> tuple[jax.Array, jax.Array]:
    """BERT masked-LM on a packed batch (tjx-nn's ``BERT.masked_lm``): (logits, labels)."""
    logits, labels = model.masked_lm(
        batch["inputs"],
        key,
        segment_ids=batch["segment_ids"],
        positions=batch.get("positions"),
        mask_prob=cfg.train.mlm_probability,
        deterministic=deterministic,
    )
    return logits, labels


def make_loss_fn(graphdef: Any, rest: Any, cfg: Config) -> Callable[..., Any]:
    """``loss_fn(params, batch, step) -> (loss, aux)`` for the config's task."""
    from tjx import metrics

    deterministic = cfg.model.dropout == 0.0
    base_key = jax.random.key(cfg.train.seed)

    def loss_fn(params: Any, batch: Batch, step: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        model = nnx.merge(graphdef, params, reseed(rest, step))
        if cfg.task == "mlm":
            key = jax.random.fold_in(base_key, step)
            logits, labels = mlm_forward(model, batch, key, cfg, deterministic=deterministic)
            sums = metrics.lm_stats(logits, labels, top_k=(1,))
            n = jnp.maximum(sums["num_tokens"], 1)
            aux = {
                "sum_loss": sums["sum_loss"],
                "num_tokens": sums["num_tokens"],
                "num_correct": sums["correct_top1"],
            }
            return sums["sum_loss"] / n, aux
        if cfg.task == "classify":
            logits = model(batch["images"], deterministic=deterministic).astype(jnp.float32)
            labels = batch["labels"]
            per = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
            aux = {
                "sum_loss": per.sum(),
                "num_tokens": jnp.asarray(labels.shape[0], jnp.int32),
                "num_correct": (jnp.argmax(logits, -1) == labels).sum(),
            }
            return per.mean(), aux
        hidden = lm_forward(model, batch, deterministic=deterministic)
        out = token_loss(model, hidden, batch["targets"], cfg)
        loss = out.pop("loss")
        return loss, out

    return loss_fn


def make_train_step(
    graphdef: Any, rest: Any, tx: optax.GradientTransformation, cfg: Config
) -> Callable[[State, Batch], tuple[State, dict[str, jax.Array]]]:
    """``train_step(state, batch) -> (state, metrics)``: accumulation, update, step report."""
    from tjx.optim import accumulate_gradients, loss_scale_value, scale_loss, step_report

    loss_fn = make_loss_fn(graphdef, rest, cfg)
    micro = cfg.optimizer.accumulation_steps
    scaled = cfg.optimizer.loss_scale is not None

    def train_step(state: State, batch: Batch) -> tuple[State, dict[str, jax.Array]]:
        params, opt_state, step = state["params"], state["opt_state"], state["step"]

        def scaled_loss(p: Any, b: Batch) -> tuple[jax.Array, dict[str, Any]]:
            loss, aux = loss_fn(p, b, step)
            # fp16: differentiate loss × scale; the optimizer chain unscales (and skips on inf).
            return (scale_loss(loss, opt_state) if scaled else loss), aux

        def grad_fn(p: Any, b: Batch) -> Any:
            return jax.value_and_grad(scaled_loss, has_aux=True)(p, b)

        # Each micro-batch's loss is a mean over its own valid targets (num_tokens: non-ignored
        # labels, MLM-masked tokens, or images). Weighting by that count makes the step the
        # gradient of the whole batch's mean; equal weights would over-count the tokens of
        # micro-batches with more padding / ignored targets. Counts in aux are summed.
        loss, aux, grads = accumulate_gradients(
            grad_fn, params, batch, num_micro_batches=micro, aux_reduce="sum", weight="num_tokens"
        )
        if scaled:  # report the unscaled loss (exact for the power-of-two dynamic scale)
            loss = loss / loss_scale_value(opt_state).astype(loss.dtype)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        metrics = {"loss": loss, **step_report(opt_state, grads, updates, params)}
        metrics["num_tokens"] = aux["num_tokens"]
        new_state = {"params": params, "opt_state": opt_state, "step": step + 1}
        return new_state, metrics

    return train_step


def make_eval_step(
    graphdef: Any, rest: Any, cfg: Config
) -> Callable[[Any, Batch], dict[str, jax.Array]]:
    """``eval_step(params, batch) -> sums``: tjx-metrics' ``lm_stats`` (loss sum, token count,
    top-k correct counts) of the config's task."""
    from tjx import metrics

    top_k = tuple(sorted(set(cfg.eval.top_k)))

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, params, rest)
        if cfg.task == "classify":
            logits = model(batch["images"], deterministic=True).astype(jnp.float32)
            labels = batch["labels"]
        elif cfg.task == "mlm":
            # A fixed masking key: every evaluation masks the same positions (and the
            # evaluator, apps/eval, uses the same one).
            key = jax.random.key(cfg.train.seed + 1)
            logits, labels = mlm_forward(model, batch, key, cfg, deterministic=True)
        else:
            logits = model.logits(lm_forward(model, batch, deterministic=True))
            labels = batch["targets"]
        return metrics.lm_stats(logits, labels, top_k=top_k)

    return eval_step
