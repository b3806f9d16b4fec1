"""From the trainer's model and optimizer sections to tjx.nn's and tjx.optim's configs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainer.schema import ConfigError

if TYPE_CHECKING:  # types only: `config` asks `nn_config` to validate the model section
    from trainer.config import Config, ModelConfig

# Every kind passes these model fields on to its tjx.nn config as they are.
_SHARED_FIELDS = (
    "d_model",
    "num_layers",
    "num_heads",
    "mlp_dim",
    "dropout",
    "attention_impl",
    "scan_layers",
    "remat",
    "relative_buckets",
    "relative_max_distance",
    "attention_type",
    "kv_latent_dim",
)
# What each kind passes on besides: a field a kind leaves out keeps its tjx.nn config's own default
# (BERT's tied head, ViT's untied one; only LLaMA groups its key/value heads; only decoders decode).
_KIND_FIELDS = {
    "gpt2": ("max_seq_len", "tie_embeddings", "decode_topk"),
    "llama": ("max_seq_len", "num_kv_heads", "tie_embeddings", "decode_topk"),
    "bert": ("max_seq_len",),
    "vit": ("image_size", "patch_size", "num_classes"),
    "encdec": ("max_seq_len", "tie_embeddings"),
}


def nn_config(m: ModelConfig, vocab_size: int) -> Any:
    """The tjx.nn config for ``m`` (``vocab_size`` from the tokenizer unless the model sets it).

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
    ValueError
        tjx.nn's own rules (e.g. which ``position`` a kind takes), naming its class and field.
    """
    from tjx import nn

    fields: dict[str, Any] = {f: getattr(m, f) for f in (*_SHARED_FIELDS, *_KIND_FIELDS[m.kind])}
    fields["precision"] = nn.Precision(m.param_dtype, m.compute_dtype)  # dtype names suffice
    # Null: each nn config keeps its family's default.
    for key in ("position", "use_bias", "norm_position", "init_std"):
        if getattr(m, key) is not None:
            fields[key] = getattr(m, key)
    if m.kind == "vit":
        fields["num_channels"] = 1  # the trainer's images (digits) are grey
    else:
        fields["vocab_size"] = m.vocab_size or vocab_size
    return nn.MODEL_KINDS[m.kind](**fields)


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
        tjx.optim's rules, with the trainer's key names (``optimizer.lr``): cross-field ones, and
        a ``momentum``/``nesterov`` given to an optimizer that has none.
    """
    from tjx import optim

    o = cfg.optimizer
    # Null WSD settings are left out, so tjx.optim's own defaults apply.
    wsd = {
        k: getattr(o.schedule, k)
        for k in ("decay_fraction", "decay_shape")
        if getattr(o.schedule, k) is not None
    }
    try:
        schedule = optim.ScheduleConfig(
            name=o.schedule.name,
            peak_lr=optim.DEFAULT_LEARNING_RATES[o.name] if o.lr is None else o.lr,
            warmup_steps=o.schedule.warmup_steps,
            total_steps=cfg.train.steps,
            min_lr_ratio=o.schedule.min_lr_ratio,
            **wsd,
        )
        return optim.OptimizerConfig(
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
    except ValueError as err:  # tjx.optim's rules speak of its own classes
        raise ConfigError(_user_keys(str(err))) from None


# tjx.optim's words → the trainer config's (most specific first): its keys, and YAML's null.
_KEYS = (
    ("ScheduleConfig.peak_lr", "optimizer.lr"),
    ("ScheduleConfig.total_steps", "train.steps"),
    ("ScheduleConfig.", "optimizer.schedule."),
    ("OptimizerConfig.", "optimizer."),
    ("set it to None", "set it to null"),
)


def _user_keys(message: str) -> str:
    """A tjx.optim message as the trainer's user reads it (``optimizer.momentum: ...``)."""
    for theirs, ours in _KEYS:
        message = message.replace(theirs, ours)
    return message
