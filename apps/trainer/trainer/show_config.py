"""A config on screen: ``--show-config``'s table of every key (type, value, allowed values, help,
read from the fields themselves, so it cannot drift from what the trainer accepts; the trainer
README's key table is this output, ``tests/test_show_config.py`` keeps them equal), and the first
screen's one line: the preset's name and only the keys that differ from it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from tjx.ckpt import flatten_config
from trainer.config import Config
from trainer.schema import choices, type_name
from trainer.sections import leaves

Row = tuple[str, str, str, str, str]
#: Bound metadata → how the table words it.
_BOUNDS = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))


def value_text(value: Any) -> str:
    """A value as it would be written in YAML or ``--set`` (``null``, ``true``, ``[1, 5]``)."""
    text = json.dumps(value, ensure_ascii=False)
    return text[1:-1] if isinstance(value, str) and text[1:-1] == value and value else text


def _allowed(f: dataclasses.Field[Any]) -> str:
    listed, each = choices(f), choices(f, "each_choices")
    if listed is not None:
        return ", ".join(map(str, listed))
    if each is not None:
        return "each of " + ", ".join(map(str, each))
    return ", ".join(f"{word} {f.metadata[key]}" for key, word in _BOUNDS if key in f.metadata)


def rows(cfg: Config) -> Iterator[Row]:
    """(key, type, value in ``cfg``, allowed, help) of every key of ``cfg``."""
    flat = flatten_config(cfg.to_dict())
    for key, tp, f in leaves(Config, "", cfg.kind):
        help_text = str(f.metadata.get("help", ""))
        yield key, type_name(tp), value_text(flat[key]), _allowed(f), help_text


def render(cfg: Config, preset: str | None = None) -> str:
    """The Markdown table of every key; values are ``cfg``'s (``preset`` names where from)."""
    source = f"preset {preset}" if preset else "the built-in defaults"
    lines = [
        f"Every config key (`--set KEY=VALUE`); the value column holds {source}.",
        "",
        "| key | type | value | allowed | help |",
        "|---|---|---|---|---|",
    ]
    for key, tp, value, allowed, help_text in rows(cfg):
        cells = [f"`{key}`", tp, f"`{value}`", allowed, help_text]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def changed_line(cfg: Config, before: dict[str, Any], after: dict[str, Any], source: str) -> str:
    """``config: preset tiny; changed: train.steps=30, ...``: the keys the command line changes
    (the ``--config`` source's data ``before`` and ``after`` its overrides), with ``cfg``'s
    values, as ``--set`` would write them."""
    ours, theirs, values = (
        flatten_config(after),
        flatten_config(before),
        flatten_config(cfg.to_dict()),
    )
    changed = [k for k, v in ours.items() if k not in theirs or theirs[k] != v]
    said = ", ".join(f"{k}={value_text(values.get(k, ours[k]))}" for k in changed)
    return f"config: {source}" + (f"; changed: {said}" if said else "")
