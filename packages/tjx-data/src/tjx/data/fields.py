"""How a tjx-data config field is declared (`setting`: its default and the metadata apps read;
the trainer's ``data:`` section is `DataConfig`)."""

from __future__ import annotations

import dataclasses
from typing import Any


def setting(default: Any, *, factory: bool = False, **meta: Any) -> Any:
    """A config field: its default (with ``factory``, a callable that makes it: a list, a nested
    config) and the metadata apps read to list, document and check it: ``help`` (one line),
    ``choices`` (the allowed values), ``resumable`` (a resumed run may change it) and bounds
    (``min``, ``max``, ``gt``, ``lt``). The same helper in every package (a test keeps them so)."""
    if factory:
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
