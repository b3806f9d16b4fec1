"""From the trainer's model and optimizer sections to tjx.nn's and tjx.optim's configs: the
packages build them by their own rules (``config_from_settings``), naming the trainer's keys."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from trainer.schema import ConfigError

if TYPE_CHECKING:  # types only: `config` asks `nn_config` to validate the model section
    from trainer.config import Config, ModelConfig

#: The other sections' keys that tjx.optim's messages name by their argument names.
OPTIMIZER_NAMES = {
    "settings": "optimizer",
    "total_steps": "train.steps",
    "param_dtype": "model.param_dtype",
    "compute_dtype": "model.compute_dtype",
}


def _null(err: ValueError) -> ConfigError:
    """A package's message in YAML's words (its ``None`` is the config's ``null``)."""
    return ConfigError(str(err).replace("to None", "to null"))


def nn_config(m: ModelConfig, vocab_size: int) -> Any:
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
    optimizer's own default, so the values printed or compared are the ones the run uses;
    errors name the trainer's keys (``optimizer.lr``, ``train.steps``)."""
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
