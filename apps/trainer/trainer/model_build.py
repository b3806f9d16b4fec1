"""From the trainer's `ModelConfig` to a tjx.nn config and optimizer config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax.numpy as jnp

from trainer.schema import ConfigError

if TYPE_CHECKING:  # types only: `config` asks `nn_config` to validate the model section
    from trainer.config import Config, ModelConfig

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


def nn_config(m: ModelConfig, vocab_size: int) -> Any:
    """The tjx.nn config for ``m`` (``vocab_size`` from the tokenizer unless the model sets it)."""
    from tjx import nn

    precision = nn.Precision(_DTYPES[m.param_dtype], _DTYPES[m.compute_dtype])
    common: dict[str, Any] = dict(
        d_model=m.d_model,
        num_layers=m.num_layers,
        num_heads=m.num_heads,
        mlp_dim=m.mlp_dim,
        dropout=m.dropout,
        attention_impl=m.attention_impl,
        scan_layers=m.scan_layers,
        remat=m.remat,
        precision=precision,
        relative_buckets=m.relative_buckets,
        relative_max_distance=m.relative_max_distance,
    )
    if m.position is not None:  # else each nn config keeps its family's default
        common["position"] = m.position
    vocab = m.vocab_size or vocab_size
    if m.kind == "vit":
        return nn.ViTConfig(
            image_size=m.image_size,
            patch_size=m.patch_size,
            num_channels=1,
            num_classes=m.num_classes,
            **common,
        )
    common.update(vocab_size=vocab, max_seq_len=m.max_seq_len)
    if m.kind == "gpt2":
        return nn.GPT2Config(tie_embeddings=m.tie_embeddings, **common)
    if m.kind == "llama":
        return nn.LlamaConfig(
            num_kv_heads=m.num_kv_heads, tie_embeddings=m.tie_embeddings, **common
        )
    return nn.BertConfig(**common)


def optimizer_config(cfg: Config) -> Any:
    """The tjx.optim config: the trainer's optimizer section plus the run length."""
    from tjx import optim

    o = cfg.optimizer
    try:
        schedule = optim.ScheduleConfig(
            name=o.schedule.name,
            peak_lr=o.lr,
            warmup_steps=o.schedule.warmup_steps,
            total_steps=cfg.train.steps,
            min_lr_ratio=o.schedule.min_lr_ratio,
        )
        return optim.OptimizerConfig(
            name=o.name,
            schedule=schedule,
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            clip_norm=o.clip_norm,
            skip_nonfinite=o.skip_nonfinite,
            loss_scale=o.loss_scale,
            accumulation_steps=o.accumulation_steps,
            # No decay mask: tjx.optim's default leaves biases, norm scales and embeddings alone.
        )
    except ValueError as err:  # tjx.optim's cross-field rules speak of its own classes
        raise ConfigError(_user_keys(str(err))) from None


# tjx.optim's names → the trainer config's keys (most specific first).
_KEYS = (
    ("ScheduleConfig.peak_lr", "optimizer.lr"),
    ("ScheduleConfig.total_steps", "train.steps"),
    ("ScheduleConfig.", "optimizer.schedule."),
    ("OptimizerConfig.", "optimizer."),
)


def _user_keys(message: str) -> str:
    for theirs, ours in _KEYS:
        message = message.replace(theirs, ours)
    return message


def describe_nn_config(config: Any) -> dict[str, Any]:
    """A tjx.nn config as JSON data (``{"class": name, "fields": {...}}``, dtypes by name).

    Written to ``RUN_DIR/model.json`` so the evaluator rebuilds the exact model without the
    trainer's config code.
    """
    import dataclasses

    fields: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name == "precision":
            value = {
                "param_dtype": jnp.dtype(value.param_dtype).name,
                "compute_dtype": jnp.dtype(value.compute_dtype).name,
            }
        fields[f.name] = value
    return {"class": type(config).__name__, "fields": fields}


def flops_per_unit(nn_cfg: Any, cfg: Config) -> float:
    """Training FLOPs per unit the trainer counts in ``tokens_per_step``, for MFU.

    Language models count tokens (``tjx.nn.flops_per_token`` at the data's ``seq_len``); the
    classifier counts images, each a fixed sequence of ``num_patches + 1`` positions.
    """
    from tjx import nn

    if cfg.task == "classify":
        positions = nn_cfg.max_seq_len
        return float(nn.flops_per_token(nn_cfg, positions)) * positions
    return float(nn.flops_per_token(nn_cfg, cfg.data.seq_len))
