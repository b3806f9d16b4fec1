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
    logits = jnp.einsum(
        "...d,dv->...v", hidden.astype(jnp.float32), model.unembedding().astype(jnp.float32)
    )
    mask = targets != -100
    safe = jnp.where(mask, targets, 0)
    logz = jax.nn.logsumexp(logits, axis=-1)
    per_tok = logz - jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    n = jnp.maximum(mask.sum(), 1)
    sum_loss = jnp.where(mask, per_tok, 0.0).sum()
    z = cfg.train.z_loss * jnp.where(mask, logz**2, 0.0).sum()
    correct = jnp.where(mask, jnp.argmax(logits, -1) == safe, False).sum()
    return {
        "loss": (sum_loss + z) / n,
        "sum_loss": sum_loss,
        "num_tokens": mask.sum(),
        "num_correct": correct,
    }


def mlm_forward(
    model: Any, batch: Batch, key: jax.Array, cfg: Config, *, deterministic: bool
) -> tuple[jax.Array, jax.Array]:
    """BERT masked-LM: mask ``train.mlm_probability`` of the real tokens; (logits, labels).

    The mask token is the last id of the model's vocabulary (the trainer makes the model one id
    larger than the tokenizer for it).
    """
    from tjx.nn import mlm_mask

    mask_id = model.config.vocab_size - 1
    real = batch["segment_ids"] > 0
    inputs, labels = mlm_mask(
        batch["inputs"],
        key,
        mask_id=mask_id,
        vocab_size=mask_id,
        mask_prob=cfg.train.mlm_probability,
        special_mask=~real,
    )
    hidden = model(
        inputs,
        # The packed segment ids, not just real/padding: documents packed into one row must not
        # attend to each other (BERT's mask accepts segment ids; 0 = padding).
        attention_mask=batch["segment_ids"],
        positions=batch.get("positions"),
        deterministic=deterministic,
        return_hidden=True,
    )
    return model.mlm_logits(hidden).astype(jnp.float32), labels


def make_loss_fn(graphdef: Any, rest: Any, cfg: Config) -> Callable[..., Any]:
    """``loss_fn(params, batch, step) -> (loss, aux)`` for the config's task."""
    deterministic = cfg.model.dropout == 0.0
    base_key = jax.random.key(cfg.train.seed)

    def loss_fn(params: Any, batch: Batch, step: jax.Array) -> tuple[jax.Array, dict[str, Any]]:
        model = nnx.merge(graphdef, params, reseed(rest, step))
        if cfg.task == "mlm":
            key = jax.random.fold_in(base_key, step)
            logits, labels = mlm_forward(model, batch, key, cfg, deterministic=deterministic)
            sums = topk_sums(logits, labels, labels != -100, (1,))
            n = jnp.maximum(sums["num_tokens"], 1)
            aux = {
                "sum_loss": sums["sum_loss"],
                "num_tokens": sums["num_tokens"],
                "num_correct": sums["correct_1"],
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
    """``eval_step(params, batch) -> sums``: loss sum, token count, top-k correct counts."""
    top_k = tuple(sorted(set(cfg.eval.top_k)))

    def eval_step(params: Any, batch: Batch) -> dict[str, jax.Array]:
        model = nnx.merge(graphdef, params, rest)
        if cfg.task == "classify":
            logits = model(batch["images"], deterministic=True).astype(jnp.float32)
            labels = batch["labels"]
            mask = jnp.ones_like(labels, dtype=bool)
        elif cfg.task == "mlm":
            # A fixed masking key: every evaluation masks the same positions.
            key = jax.random.key(cfg.train.seed + 1)
            logits, labels = mlm_forward(model, batch, key, cfg, deterministic=True)
            mask = labels != -100
        else:
            hidden = lm_forward(model, batch, deterministic=True)
            logits = jnp.einsum(
                "...d,dv->...v",
                hidden.astype(jnp.float32),
                model.unembedding().astype(jnp.float32),
            )
            labels = batch["targets"]
            mask = labels != -100
        return topk_sums(logits, labels, mask, top_k)

    return eval_step


def topk_sums(
    logits: jax.Array, labels: jax.Array, mask: jax.Array, top_k: tuple[int, ...]
) -> dict[str, jax.Array]:
    """Sum of CE, number of tokens and top-k hits (exact; accumulate over batches)."""
    safe = jnp.where(mask, labels, 0)
    logz = jax.nn.logsumexp(logits, axis=-1)
    label_logit = jnp.take_along_axis(logits, safe[..., None], axis=-1)[..., 0]
    per_tok = logz - label_logit
    # Rank of the label = how many logits beat it; top-k hit ⇔ rank < k (ties count for the label).
    rank = (logits > label_logit[..., None]).sum(-1)
    out = {
        "sum_loss": jnp.where(mask, per_tok, 0.0).sum(),
        "num_tokens": mask.sum(),
    }
    for k in top_k:
        out[f"correct_{k}"] = jnp.where(mask, rank < k, False).sum()
    return out
