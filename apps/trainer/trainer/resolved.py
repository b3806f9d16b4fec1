"""A run's config resolved once: the trainer's sections and the tjx-nn, tjx-optim and
tjx-parallel configs they hold, built from the sections one time and then carried (`Resolved`).

The packages' classes build themselves by their own rules; their messages are reworded to name
the trainer's keys. Everything after the command line — the attention choice, the
memory fit, the state build, the loop — receives the one `Resolved`; what a stage changes (the
vocabulary once the tokenizer is known, the kernel that compiled, full remat) is a
``dataclasses.replace`` of both views, never a rebuild from text.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from trainer.schema import ConfigError

if TYPE_CHECKING:  # types only: `config.resolve_config` calls `resolve`
    from trainer.config import Config

#: The vocabulary the model config holds until the tokenizer's is known (`Resolved.with_vocab`):
#: no rule of tjx.nn depends on it.
_UNKNOWN_VOCAB = 2


def _reworded(err: ValueError, words: dict[str, str]) -> ConfigError:
    """A package's message in the config's words: its class names become the section's keys
    (``GPT2Config.d_model`` → ``model.d_model``), its ``None`` the config's ``null``; a message
    naming no key names the section (the first of ``words``' values)."""
    pattern = "|".join(re.escape(theirs) for theirs in words)
    text = re.sub(pattern, lambda match: words[match.group()], str(err)).replace(
        "to None", "to null"
    )
    keys = tuple(dict.fromkeys(v.split(".")[0].split("=")[0] for v in words.values()))
    return ConfigError(text if text.startswith(keys) else f"{keys[0]}: {text}")


def model_config(cfg: Config, vocab_size: int) -> Any:
    """The tjx.nn config of ``model.kind`` built from the model section (one not set keeps the
    kind's own default); ``vocab_size`` is the tokenizer's unless the section sets it; errors
    name ``model.<key>``."""
    from tjx import nn

    cls = nn.MODEL_KINDS[cfg.kind]
    fields = {k: v for k, v in cfg.model.items() if k not in ("kind", "vocab_size")}
    given = cfg.model.get("vocab_size")
    if "vocab_size" not in cls.unused_fields:
        fields["vocab_size"] = given or vocab_size
    elif given is not None:
        raise ConfigError(f"model.vocab_size: {cls.unused_fields['vocab_size']}; set it to null")
    words = {f"{c.__name__}.": "model." for c in (*nn.MODEL_KINDS.values(), nn.TransformerConfig)}
    words["Precision."] = "model.precision."
    try:
        fields["precision"] = nn.Precision(**fields.get("precision", {}))
        return cls(**fields)
    except ValueError as err:
        raise _reworded(err, words) from None


def optimizer_config(cfg: Config, precision: Any) -> Any:
    """tjx.optim's config of the optimizer section over ``train.steps``, every hyper-parameter
    left null filled with the named optimizer's own default (so the values printed or compared
    are the ones the run uses), checked against the model's ``precision``."""
    from tjx import optim

    fields = dict(cfg.optimizer)
    words = {
        "OptimizerConfig.": "optimizer.",
        "ScheduleConfig.total_steps": "train.steps",
        "ScheduleConfig.": "optimizer.schedule.",
        "param_dtype=": "model.precision.param_dtype=",
        "compute_dtype=": "model.precision.compute_dtype=",
    }
    try:
        schedule = optim.ScheduleConfig(total_steps=cfg.train.steps, **fields.pop("schedule", {}))
        config = optim.OptimizerConfig(schedule=schedule, **fields).resolved()
        optim.check_precision(
            config, param_dtype=precision.param_dtype, compute_dtype=precision.compute_dtype
        )
    except ValueError as err:
        raise _reworded(err, words) from None
    return config


def mesh_config(cfg: Config) -> Any:
    """tjx.parallel's `MeshConfig` of the mesh section."""
    from tjx import parallel

    try:
        return parallel.MeshConfig(**cfg.mesh)
    except ValueError as err:
        raise _reworded(err, {"MeshConfig.": "mesh.", "MeshConfig: ": "mesh: "}) from None


@dataclass(frozen=True)
class Resolved:
    """One run's settings, resolved: the trainer's config and the package configs it makes.

    Attributes
    ----------
    cfg : Config
        The trainer's sections, as read and validated (what ``config.yaml`` saves).
    model : tjx.nn config
        The model of ``model.kind`` (`tjx.nn.MODEL_KINDS`); its vocabulary is the
        tokenizer's once `with_vocab` has been called (BERT's [MASK] id added).
    optimizer : tjx.optim.OptimizerConfig
        The optimizer and schedule over ``train.steps``, every default filled in.
    mesh : tjx.parallel.MeshConfig
        The device mesh and how the model is laid on it.
    vocab_size : int or None
        The tokenizer's vocabulary (None until it is known).
    """

    cfg: Config
    model: Any
    optimizer: Any
    mesh: Any
    vocab_size: int | None = None

    def with_vocab(self, vocab_size: int) -> Resolved:
        """The run with the tokenizer's ``vocab_size`` (a ``model.vocab_size`` set in the config
        is kept; a kind that reads no tokens, ViT, keeps none)."""
        model = self.model
        if (
            self.cfg.model.get("vocab_size") is None
            and "vocab_size" not in type(model).unused_fields
        ):
            extra = int(self.cfg.objective.extra_vocab)  # BERT's [MASK] id
            model = dataclasses.replace(model, vocab_size=vocab_size + extra)
        return dataclasses.replace(self, model=model, vocab_size=vocab_size)

    def with_model(self, **changes: Any) -> Resolved:
        """The run with model settings ``changes`` (``remat="full"``, ``attention_impl=...``)
        applied to both the trainer's section and the tjx.nn config, so they never disagree."""
        if all(getattr(self.model, k) == v for k, v in changes.items()):
            return self
        cfg = dataclasses.replace(self.cfg, model={**self.cfg.model, **changes})
        try:
            model = dataclasses.replace(self.model, **changes)
        except ValueError as err:
            raise _reworded(err, {f"{type(self.model).__name__}.": "model."}) from None
        return dataclasses.replace(self, cfg=cfg, model=model)


def resolve(cfg: Config, vocab_size: int | None = None) -> Resolved:
    """Build the package configs of ``cfg`` (the one time a run does); with ``vocab_size``, the
    tokenizer's vocabulary too. Raises `ConfigError` naming the trainer's key at fault."""
    model = model_config(cfg, cfg.model.get("vocab_size") or _UNKNOWN_VOCAB)
    resolved = Resolved(cfg, model, optimizer_config(cfg, model.precision), mesh_config(cfg))
    return resolved if vocab_size is None else resolved.with_vocab(vocab_size)
