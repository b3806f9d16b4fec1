"""A model config as JSON data and back: ``{"class": "GPT2Config", "fields": {...}}``.

A trainer writes it next to its checkpoints; an evaluator rebuilds the exact model from it without
the trainer's config code. Dtypes are written by name (``"bfloat16"``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from tjx.nn.configs import TransformerConfig
from tjx.nn.old_layout import nest_section_keys
from tjx.nn.precision import FP8_SETTINGS, Precision, idle_fp8_settings
from tjx.nn.registry import MODEL_KINDS
from tjx.nn.rope_scaling import RopeScaling

_FP8_KEYS = ("matmul", *FP8_SETTINGS)


def config_to_dict(config: TransformerConfig) -> dict[str, Any]:
    """``config`` as JSON-ready data: its class name and every field (dtypes by name).

    Parameters
    ----------
    config : TransformerConfig
        Any tjx.nn model config.

    Returns
    -------
    dict
        ``{"class": name, "fields": {field: value}}``; ``precision`` is
        ``{"param_dtype": name, "compute_dtype": name, "logits_dtype": name}`` (and the float8
        settings ``matmul``, ``fp8_*`` where ``matmul="fp8"``), the component sections
        (``attention``, ``position``, ``moe`` ...) mappings of their fields
        (``position.rope_scaling`` its set fields, ``RopeScaling.as_dict``), tuples lists.
    """
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if isinstance(value, Precision):
            p = value
            value = {
                "param_dtype": jnp.dtype(value.param_dtype).name,
                "compute_dtype": jnp.dtype(value.compute_dtype).name,
                "logits_dtype": jnp.dtype(value.logits_dtype).name,
            }
            # The float8 settings only where set: a default config's file is as before.
            if p.fp8:
                value.update({k: getattr(p, k) for k in _FP8_KEYS})
        elif isinstance(value, RopeScaling):
            value = value.as_dict()
        elif isinstance(value, tuple):
            value = list(value)
        elif dataclasses.is_dataclass(value):  # a component section: its fields, plain values
            value = _section_dict(value)
        fields[f.name] = value
    return {"class": type(config).__name__, "fields": fields}


def _section_dict(section: Any) -> dict[str, Any]:
    """A component section's fields as plain data: a `RopeScaling` its set fields (as the model
    file always held it), tuples lists."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, RopeScaling):
            value = value.as_dict()
        elif isinstance(value, tuple):
            value = list(value)
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)  # type: ignore[arg-type]
        out[f.name] = value
    return out


def config_from_dict(data: Mapping[str, Any]) -> TransformerConfig:
    """The config ``config_to_dict`` described (a field it leaves out keeps its default).

    Parameters
    ----------
    data : Mapping
        ``{"class": name, "fields": {...}}``, e.g. parsed from JSON; a file written before the
        component sections (their settings flat fields) reads the same.

    Returns
    -------
    TransformerConfig
        The config, validated by its class.

    Raises
    ------
    ValueError
        An unknown class or field, a missing ``fields`` mapping, or a value the class rejects.
    """
    known_classes: list[type[TransformerConfig]] = [TransformerConfig, *MODEL_KINDS.values()]
    classes = {c.__name__: c for c in known_classes}
    name, fields = data.get("class"), data.get("fields")
    if name not in classes:
        raise ValueError(f"config_from_dict: class must be one of {tuple(classes)}; got {name!r}")
    if not isinstance(fields, Mapping):
        raise ValueError(f"config_from_dict: 'fields' must be a mapping; got {fields!r}")
    cls = classes[name]
    values = nest_section_keys(dict(fields), name)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"config_from_dict: {name} has no field(s) {', '.join(unknown)}")
    for key, value in values.items():
        default = known[key].default  # a component section's: its class's instance (MoEConfig)
        if isinstance(value, Mapping) and dataclasses.is_dataclass(default):
            values[key] = _section(type(default), value, f"{name}.{key}")
    precision = values.get("precision")
    if isinstance(precision, Mapping):  # dtype names; a preset name passes through as it is
        # A float8 setting its run never read (an amax history under current scaling, saved
        # before tjx-nn refused it) did nothing: read at its default.
        idle = idle_fp8_settings(
            precision.get("matmul", "default"), precision.get("fp8_recipe", "current")
        )
        try:
            values["precision"] = Precision(
                precision["param_dtype"],
                precision["compute_dtype"],
                # saved before logits_dtype existed: the float32 logits those runs had
                precision.get("logits_dtype", "float32"),
                **{k: precision[k] for k in _FP8_KEYS if k in precision and k not in idle},
            )
        except (KeyError, TypeError):
            raise ValueError(
                "config_from_dict: precision must hold the dtype names param_dtype and "
                f"compute_dtype; got {precision!r}"
            ) from None
    return cls(**values)


def _section(cls: type, value: Mapping[str, Any], key: str) -> Any:
    """Component section ``cls`` (``MoEConfig`` ...) of its fields ``value`` (an unknown one
    named, as the model's own)."""
    unknown = sorted(set(value) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(f"config_from_dict: {key} has no field(s) {', '.join(unknown)}")
    return cls(**value)
