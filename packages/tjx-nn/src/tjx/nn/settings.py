"""An app's model section, as plain data, to the tjx.nn config of its kind.

An app's config file holds one flat model section for every kind (``kind: llama``, ``d_model``,
``position``, ``param_dtype`` ...). `config_from_settings` maps it onto the kind's config class
in `MODEL_KINDS` by that class's own fields and ``unused_fields``, so the app keeps no copy of
which kind reads what, and words the class's errors in the app's key names (``prefix``).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from tjx.nn.configs import TransformerConfig
from tjx.nn.precision import Precision
from tjx.nn.registry import MODEL_KINDS

__all__ = ["config_from_settings"]

_DTYPE_KEYS = ("param_dtype", "compute_dtype")


def config_from_settings(
    kind: str,
    settings: Mapping[str, Any],
    *,
    vocab_size: int,
    app_defaults: Mapping[str, Any] | None = None,
    prefix: str | None = None,
) -> TransformerConfig:
    """The config of model kind ``kind`` that an app's model section describes.

    The kind's config class decides what it takes: each of its fields that ``settings`` has
    passes on, except a ``None`` (the kind's own default: LLaMA's rope and no biases, ...) and
    a field the kind never reads (its ``unused_fields``: BERT's always-tied head, ViT's tokens)
    whose value is the app's default for it; a value the user did change reaches the class,
    which refuses it rather than ignore it. Keys that are no field of the class (``kind``,
    ``param_dtype``, ViT's ``image_size`` under ``gpt2``) are ignored.

    Parameters
    ----------
    kind : str
        A key of `MODEL_KINDS` (``"gpt2"``, ``"llama"``, ``"bert"``, ``"vit"``, ``"encdec"``).
    settings : Mapping[str, Any]
        The model section as plain data (e.g. parsed YAML). ``param_dtype``/``compute_dtype``
        (dtype names or dtypes; one left out or ``None`` is float32) make the config's
        ``precision``; a ``precision`` key may be given instead, not with them.
    vocab_size : int
        The tokenizer's vocabulary: the config's unless ``settings["vocab_size"]`` is set. A kind
        that lists ``vocab_size`` in its ``unused_fields`` (ViT) ignores it, and refuses a
        ``settings["vocab_size"]`` other than ``None`` or the app's default.
    app_defaults : Mapping[str, Any], optional
        The app's default of each setting (its config schema's). Only the kind's
        ``unused_fields`` are compared with it; without it, every value given passes on.
    prefix : str, optional
        The section's name in the app's messages. With ``"model"``, ``GPT2Config.d_model`` (any
        class of `MODEL_KINDS`, `TransformerConfig` or `Precision`) becomes ``model.d_model``
        and a message naming no field starts with ``"model: "``. Without it, the class's
        message is raised as it is.

    Returns
    -------
    TransformerConfig
        An instance of ``MODEL_KINDS[kind]`` (``GPT2Config``, ``LlamaConfig``, ``BertConfig``,
        ``ViTConfig`` or ``EncoderDecoderConfig``); `build_model` builds its model.

    Raises
    ------
    ValueError
        An unknown ``kind``; the class's rules (e.g. which ``position`` a kind takes, an unused
        field changed: ``... set it to None``); a dtype that is not a floating one; ``precision``
        given together with a dtype key.
    """
    if kind not in MODEL_KINDS:
        where = f"{prefix}.kind" if prefix else "kind"
        raise ValueError(f"{where} must be one of {tuple(MODEL_KINDS)}; got {kind!r}")
    cls = MODEL_KINDS[kind]
    try:
        return cls(**_fields(cls, settings, vocab_size, app_defaults or {}))
    except ValueError as err:  # tjx.nn's rules speak of its own classes
        if not prefix:
            raise
        raise ValueError(_reword(str(err), prefix)) from None


def _fields(
    cls: type[TransformerConfig],
    settings: Mapping[str, Any],
    vocab_size: int,
    app_defaults: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of ``cls`` that ``settings`` sets (see `config_from_settings`)."""
    fields: dict[str, Any] = {}
    for name in (f.name for f in dataclasses.fields(cls)):
        value = settings.get(name)
        if name == "vocab_size" or value is None:
            continue  # the vocabulary below; None keeps the kind's own default
        if name in cls.unused_fields and name in app_defaults and value == app_defaults[name]:
            continue  # the app's default (tie_embeddings: true) for what the kind never reads
        fields[name] = value
    if any(key in settings for key in _DTYPE_KEYS):
        if "precision" in fields:  # two sources for one field: neither may silently win
            raise ValueError(
                f"{cls.__name__}.precision: set either it or param_dtype/compute_dtype, not both"
            )
        fields["precision"] = _precision(settings)
    given = settings.get("vocab_size")
    if "vocab_size" not in cls.unused_fields:
        fields["vocab_size"] = given or vocab_size
    elif given is not None and given != app_defaults.get("vocab_size"):
        # The class fills its own (ViT: 0) and cannot tell a vocabulary the user set from it.
        why = cls.unused_fields["vocab_size"]
        raise ValueError(f"{cls.__name__}.vocab_size: {why}; got {given!r}, set it to None")
    return fields


def _precision(settings: Mapping[str, Any]) -> Precision:
    """``Precision`` of the dtype names; a name that is no dtype is a ValueError like the rest."""
    dtypes = []
    for key in _DTYPE_KEYS:
        value = settings.get(key)
        try:
            dtypes.append(jnp.dtype("float32" if value is None else value))
        except TypeError:  # jnp.dtype's word for an unknown name
            raise ValueError(f"Precision.{key} must be a floating dtype; got {value!r}") from None
    return Precision(*dtypes)


def _reword(message: str, prefix: str) -> str:
    """A tjx.nn message in the app's words (``GPT2Config.d_model`` → ``model.d_model``)."""
    classes = "|".join(c.__name__ for c in (*MODEL_KINDS.values(), TransformerConfig, Precision))
    ours = re.sub(rf"\b(?:{classes})\.", lambda _: f"{prefix}.", message)
    # A message naming no field of a config class (none known today) still names the section.
    return ours if ours.startswith(f"{prefix}.") else f"{prefix}: {ours}"
