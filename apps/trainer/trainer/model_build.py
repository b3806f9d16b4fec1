"""From the trainer's model and optimizer sections to tjx.nn's and tjx.optim's configs."""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING, Any

from trainer.schema import ConfigError

if TYPE_CHECKING:  # types only: `config` asks `nn_config` to validate the model section
    from trainer.config import Config, ModelConfig


def nn_config(m: ModelConfig, vocab_size: int) -> Any:
    """The tjx.nn config for ``m`` (``vocab_size`` from the tokenizer unless the model sets it).

    The kind's tjx.nn config class decides what it takes: each of its fields the model section
    has passes on, except a ``null`` (the kind's own default: LLaMA's rope and no biases, ...)
    and a field the kind never reads (its ``unused_fields``: BERT's always-tied head, ViT's
    tokens) that the user left at the trainer's default; one the user did set reaches tjx.nn,
    which refuses it rather than ignore it.

    Parameters
    ----------
    m : ModelConfig
        The trainer's model section.
    vocab_size : int
        The tokenizer's vocabulary (ignored by ViT and when ``m.vocab_size`` is set).

    Returns
    -------
    tjx.nn.TransformerConfig
        The config class of ``m.kind`` in ``tjx.nn.MODEL_KINDS`` (``GPT2Config``,
        ``LlamaConfig``, ``BertConfig``, ``ViTConfig`` or ``EncoderDecoderConfig``):
        ``tjx.nn.build_model`` builds the model of its class.

    Raises
    ------
    ConfigError
        tjx.nn's rules (e.g. which ``position`` a kind takes), with the trainer's key names
        (``model.d_model: ...``).
    """
    from tjx import nn

    kind = nn.MODEL_KINDS[m.kind]
    ours = {f.name: f.default for f in dataclasses.fields(m)}
    fields: dict[str, Any] = {}
    for name in (f.name for f in dataclasses.fields(kind)):
        value = getattr(m, name, None)
        if name == "vocab_size" or value is None:
            continue  # the vocabulary below; null keeps the kind's own default
        if name in kind.unused_fields and value == ours[name]:
            continue  # the trainer's default (tie_embeddings: true) for what the kind never reads
        fields[name] = value
    fields["precision"] = nn.Precision(m.param_dtype, m.compute_dtype)  # dtype names suffice
    if "vocab_size" not in kind.unused_fields:
        fields["vocab_size"] = m.vocab_size or vocab_size
    if m.kind == "vit":
        fields["num_channels"] = 1  # the trainer's images (digits) are grey
    try:
        return kind(**fields)
    except ValueError as err:  # tjx.nn's rules speak of its own classes
        raise ConfigError(_model_keys(str(err), nn)) from None


def _model_keys(message: str, nn: Any) -> str:
    """A tjx.nn message in the trainer's words (``GPT2Config.d_model`` → ``model.d_model``)."""
    classes = "|".join(c.__name__ for c in (*nn.MODEL_KINDS.values(), nn.TransformerConfig))
    ours = re.sub(rf"\b(?:{classes})\.", "model.", message).replace("to None", "to null")
    # A message naming no field of a config class (none known today) still names the section.
    return ours if ours.startswith("model.") else f"model: {ours}"


def optimizer_config(cfg: Config) -> Any:
    """The tjx.optim config: the trainer's optimizer section plus the run length.

    Parameters
    ----------
    cfg : Config
        The whole config (``train.steps`` is the schedule's length).

    Returns
    -------
    tjx.optim.OptimizerConfig
        Resolved: each of ``b1``/``b2``/``eps``/``weight_decay``/``momentum``/``nesterov`` the
        trainer's config left null holds the named optimizer's own default (tjx.optim's table), so
        the values printed or compared are the ones the run uses; likewise the WSD schedule's
        ``decay_fraction``/``decay_shape``.

    Raises
    ------
    ConfigError
        tjx.optim's rules, with the trainer's key names (``optimizer.lr``): cross-field ones
        (warmup within ``train.steps``, WSD-only decay settings, float16 needing dynamic loss
        scaling), and a ``momentum``/``nesterov`` given to an optimizer that has none.
    """
    from tjx import optim

    o, m = cfg.optimizer, cfg.model
    try:
        schedule = optim.ScheduleConfig(
            name=o.schedule.name,
            peak_lr=optim.DEFAULT_LEARNING_RATES[o.name] if o.lr is None else o.lr,
            warmup_steps=o.schedule.warmup_steps,
            total_steps=cfg.train.steps,
            min_lr_ratio=o.schedule.min_lr_ratio,
            decay_fraction=o.schedule.decay_fraction,  # null: tjx.optim's WSD_DEFAULTS
            decay_shape=o.schedule.decay_shape,
        )
        config = optim.OptimizerConfig(
            name=o.name,
            schedule=schedule,
            b1=o.b1,
            b2=o.b2,
            eps=o.eps,
            weight_decay=o.weight_decay,
            momentum=o.momentum,
            nesterov=o.nesterov,
            clip_norm=o.clip_norm,
            skip_nonfinite=o.skip_nonfinite,
            loss_scale=o.loss_scale,
            accumulation_steps=o.accumulation_steps,
            # No decay mask: tjx.optim's default leaves biases, norm scales and embeddings alone.
        ).resolved()
        optim.check_precision(config, param_dtype=m.param_dtype, compute_dtype=m.compute_dtype)
        return config
    except ValueError as err:  # tjx.optim's rules speak of its own classes
        raise ConfigError(_user_keys(str(err))) from None


# tjx.optim's words → the trainer config's (most specific first): its keys, and YAML's null.
_KEYS = (
    ("ScheduleConfig.peak_lr", "optimizer.lr"),
    ("ScheduleConfig.total_steps", "train.steps"),
    ("ScheduleConfig.", "optimizer.schedule."),
    ("OptimizerConfig.", "optimizer."),
    ("param_dtype=", "model.param_dtype="),  # check_precision's arguments
    ("compute_dtype=", "model.compute_dtype="),
    ("set it to None", "set it to null"),
)


def _user_keys(message: str) -> str:
    """A tjx.optim message as the trainer's user reads it (``optimizer.momentum: ...``)."""
    for theirs, ours in _KEYS:
        message = message.replace(theirs, ours)
    return message
