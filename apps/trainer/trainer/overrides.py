"""``--set a.b=c`` overrides: the text is parsed as the type of the field it names."""

from __future__ import annotations

import dataclasses
from typing import Any

from trainer.config import Config
from trainer.schema import ConfigError, choices, field_map, hints, parse_scalar


def field_type(path: str) -> Any:
    """The declared type of the config field at dotted ``path`` (errors name allowed keys)."""
    cls: Any = Config
    parts = path.split(".")
    walked: list[str] = []
    for i, part in enumerate(parts):
        fields = field_map(cls)
        if part not in fields:
            where = ".".join([*walked, part])
            raise ConfigError(
                f"{where}: unknown key; allowed keys here: {', '.join(sorted(fields))}"
            )
        tp = hints(cls)[part]
        walked.append(part)
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(tp):
                sub = ", ".join(sorted(field_map(tp)))  # type: ignore[arg-type]
                raise ConfigError(f"{path}: is a section; set one of its keys: {sub}")
            return tp
        if not dataclasses.is_dataclass(tp):
            raise ConfigError(f"{'.'.join(walked)}: is a value, not a section (in {path!r})")
        cls = tp
    raise ConfigError(f"{path}: empty key")  # pragma: no cover - split never yields []


def parse_override(text: str) -> tuple[str, Any]:
    """``"optimizer.lr=3e-4"`` → ``("optimizer.lr", 0.0003)`` typed by the field."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set optimizer.lr=3e-4")
    key, value = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    tp = field_type(key)
    # "none" is a value where a field's own choices hold it (model.position: no positions).
    none_is_value = value.strip().lower() == "none" and "none" in (_choices_of(key) or ())
    return key, parse_scalar(value, tp, key, none_is_value=none_is_value)


def _choices_of(path: str) -> tuple[Any, ...] | None:
    *parents, name = path.split(".")
    cls: Any = Config
    for part in parents:
        cls = hints(cls)[part]
    return choices(field_map(cls)[name])


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of config ``data`` with every ``--set`` applied in order."""
    out: dict[str, Any] = _copy(data)
    for text in overrides:
        key, value = parse_override(text)
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[parts[-1]] = value
    return out


def _copy(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _copy(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_copy(v) for v in data]
    return data
