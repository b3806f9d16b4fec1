"""``--set a.b=c`` overrides: the text is read as the type of the field it names."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from trainer.config import Config, read_config
from trainer.migrate import renamed
from trainer.presets import load_config_data
from trainer.schema import ConfigError, choices, convert
from trainer.sections import PACKAGE_SECTIONS, lookup, optional


def field_at(key: str, data: dict[str, Any] | None = None) -> tuple[dataclasses.Field[Any], Any]:
    """The field at dotted ``key`` and the type ``--set`` reads (errors name the allowed keys);
    the model's keys are those of ``data``'s kind. In a package's section ``null`` is the
    class's own default, as in a file, so every key there takes it."""
    model = (data or {}).get("model")
    kind = model.get("kind", "gpt2") if isinstance(model, dict) else "gpt2"
    tp, field = lookup(Config, key, kind)[-1]
    package = key.split(".")[0] in PACKAGE_SECTIONS
    return field, (tp | None if package and not optional(tp) else tp)


def parse_override(text: str, data: dict[str, Any] | None = None) -> tuple[str, Any]:
    """``"train.steps=1_000"`` → ``("train.steps", 1000)`` typed by the field (an old key name is
    read as today's: ``optimizer.lr`` → ``optimizer.schedule.peak_lr``)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
    key, value = text.split("=", 1)
    key = renamed(key.strip())
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    field, tp = field_at(key, data)
    # "none" is a value where a field's own choices hold it (model.position: no positions).
    none_is_value = value.strip().lower() == "none" and "none" in (choices(field) or ())
    return key, convert(tp, value, key, from_text=True, none_is_value=none_is_value)


def apply_overrides(
    data: dict[str, Any], overrides: list[str], say: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """A copy of config ``data`` with every ``--set`` applied in order (a key set twice: the last
    wins). A setting given under its old and its new name is refused, as in a file: neither may
    silently win; an old name alone works, and ``say`` hears its new name once."""
    out: dict[str, Any] = dict(data)
    named: dict[str, str] = {}  # today's key → the name the command line gave it
    for text in overrides:
        key, value = parse_override(text, out)
        given = text.split("=", 1)[0].strip()
        first, before = key not in named, named.setdefault(key, given)
        if before != given:  # one setting under its old and its new name
            old = given if given != key else before
            raise ConfigError(f"--set {old}: is {key} now, which is set too; keep only {key}")
        if first and given != key and say is not None:
            say(f"trainer: note: --set {given} is {key} now (the old name still works)")
        node = out
        *parents, name = key.split(".")
        for part in parents:
            child = node.get(part)
            node[part] = node = dict(child) if isinstance(child, dict) else {}
        node[name] = value
    return out


def load_config(preset: str, overrides: list[str]) -> Config:
    """The validated config of a preset (or YAML file) with ``--set`` overrides applied.

    The command line's path minus its flags (``--data``, checks of the run directory): the
    config other code builds to compile or run the trainer's step.

    Parameters
    ----------
    preset : str
        A preset name (``tiny``, ``gpt2_small``, ...) or a YAML file's path, as ``--config``.
    overrides : list[str]
        ``a.b=c`` overrides, as ``--set`` takes them.

    Returns
    -------
    Config
        The typed, validated config. Raises `ConfigError` if any part of it is invalid.
    """
    return read_config(apply_overrides(load_config_data(preset), overrides))
