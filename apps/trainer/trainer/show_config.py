"""``python -m trainer --show-config [--config X]``: every config key with its type, value, allowed
values and help, read from the fields themselves (their types and `setting` metadata), so the table
cannot drift from what the trainer accepts. The trainer README's key table is this output
(``tests/test_show_config.py`` keeps them equal)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

from tjx.ckpt import flatten_config
from trainer.config import Config
from trainer.schema import choices, leaves, type_name
from trainer.settings import value_text

Row = tuple[str, str, str, str, str]
#: Bound metadata → how the table words it.
_BOUNDS = (("min", ">="), ("gt", ">"), ("max", "<="), ("lt", "<"))


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
