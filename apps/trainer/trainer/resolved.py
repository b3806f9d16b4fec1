"""A run's config resolved once: the trainer's sections and the tjx-nn and tjx-optim configs they
make, built from the sections one time and then carried (`Resolved`).

The packages build their configs by their own rules (``config_from_settings``), naming the
trainer's keys in their errors. Everything after the command line — the attention choice, the
memory fit, the state build, the loop — receives the one `Resolved`; what a stage changes (the
vocabulary once the tokenizer is known, the kernel that compiled, full remat) is a
``dataclasses.replace`` of both views, never a rebuild from text.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.schema import ConfigError

if TYPE_CHECKING:  # types only: `config.resolve_config` calls `resolve`
    from trainer.config import Config, ModelConfig

#: The other sections' keys that tjx.optim's messages name by their argument names.
OPTIMIZER_NAMES = {
    "settings": "optimizer",
    "total_steps": "train.steps",
    "param_dtype": "model.param_dtype",
    "compute_dtype": "model.compute_dtype",
}
#: The vocabulary the model config holds until the tokenizer's is known (`Resolved.with_vocab`):
#: no rule of tjx.nn depends on it.
_UNKNOWN_VOCAB = 2


def _null(err: ValueError) -> ConfigError:
    """A package's message in YAML's words (its ``None`` is the config's ``null``)."""
    return ConfigError(str(err).replace("to None", "to null"))


def model_config(m: ModelConfig, vocab_size: int) -> Any:
    """The tjx.nn config of ``m.kind`` (`tjx.nn.config_from_settings`): a ``null`` keeps the
    kind's own default, ``vocab_size`` is the tokenizer's unless the section sets it, and a
    setting the kind never reads is dropped while it holds the trainer's default (one the user
    changed is refused); errors name ``model.<key>``."""
    from tjx import nn

    settings = dataclasses.asdict(m)
    if m.kind == "vit":
        settings["num_channels"] = 1  # the trainer's images (digits) are grey
    defaults = {f.name: f.default for f in dataclasses.fields(m)}
    try:
        return nn.config_from_settings(
            m.kind, settings, vocab_size=vocab_size, app_defaults=defaults, prefix="model"
        )
    except ValueError as err:
        raise _null(err) from None


def optimizer_config(cfg: Config) -> Any:
    """The resolved tjx.optim config of the optimizer section over ``train.steps``
    (`tjx.optim.config_from_settings`): every hyper-parameter left null holds the named
    optimizer's own default, so the values printed or compared are the ones the run uses."""
    from tjx import optim

    try:
        return optim.config_from_settings(
            dataclasses.asdict(cfg.optimizer),
            total_steps=cfg.train.steps,
            param_dtype=cfg.model.param_dtype,
            compute_dtype=cfg.model.compute_dtype,
            names=OPTIMIZER_NAMES,
        )
    except ValueError as err:
        raise _null(err) from None


@dataclass(frozen=True)
class Resolved:
    """One run's settings, resolved: the trainer's config and the package configs it makes.

    Attributes
    ----------
    cfg : Config
        The trainer's sections, as read and validated (what ``config.yaml`` saves).
    model : tjx.nn config
        The model of ``cfg.model.kind`` (`tjx.nn.MODEL_KINDS`); its vocabulary is the
        tokenizer's once `with_vocab` has been called (BERT's [MASK] id added).
    optimizer : tjx.optim.OptimizerConfig
        The optimizer and schedule over ``train.steps``, every default filled in.
    vocab_size : int or None
        The tokenizer's vocabulary (None until it is known).
    """

    cfg: Config
    model: Any
    optimizer: Any
    vocab_size: int | None = None

    def with_vocab(self, vocab_size: int) -> Resolved:
        """The run with the tokenizer's ``vocab_size`` (a ``model.vocab_size`` set in the config
        is kept; a kind that reads no tokens, ViT, keeps none)."""
        model = self.model
        if self.cfg.model.vocab_size is None and "vocab_size" not in type(model).unused_fields:
            extra = int(self.cfg.objective.extra_vocab)  # BERT's [MASK] id
            model = dataclasses.replace(model, vocab_size=vocab_size + extra)
        return dataclasses.replace(self, model=model, vocab_size=vocab_size)

    def with_model(self, **changes: Any) -> Resolved:
        """The run with model settings ``changes`` (``remat="full"``, ``attention_impl=...``)
        applied to both the trainer's section and the tjx.nn config, so they never disagree."""
        if all(getattr(self.cfg.model, k) == v for k, v in changes.items()):
            return self
        cfg = dataclasses.replace(self.cfg, model=dataclasses.replace(self.cfg.model, **changes))
        try:
            model = dataclasses.replace(self.model, **changes)
        except ValueError as err:
            raise _null(err) from None
        return dataclasses.replace(self, cfg=cfg, model=model)


def resolve(cfg: Config, vocab_size: int | None = None) -> Resolved:
    """Build the package configs of ``cfg`` (the one time a run does); with ``vocab_size``, the
    tokenizer's vocabulary too. Raises `ConfigError` naming the trainer's key at fault."""
    resolved = Resolved(
        cfg, model_config(cfg.model, cfg.model.vocab_size or _UNKNOWN_VOCAB), optimizer_config(cfg)
    )
    return resolved if vocab_size is None else resolved.with_vocab(vocab_size)
