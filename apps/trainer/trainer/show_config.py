"""``python -m trainer --show-config [--config X]``: every key's type, value, allowed values and
help, from the fields themselves (tjx.ckpt's `key_table`); the README's key table is this output.
"""

from __future__ import annotations

from collections.abc import Iterator

from tjx import ckpt
from trainer.config import SCHEMA, Config


def rows(cfg: Config) -> Iterator[tuple[str, str, str, str, str]]:
    """(key, type, value in ``cfg``, allowed, help) of every key of ``cfg``."""
    return ckpt.key_rows(SCHEMA, cfg.to_dict())


def render(cfg: Config, preset: str | None = None) -> str:
    """The Markdown table of every key; values are ``cfg``'s (``preset`` names where from)."""
    return ckpt.key_table(
        SCHEMA, cfg.to_dict(), f"preset {preset}" if preset else "the built-in defaults"
    )
