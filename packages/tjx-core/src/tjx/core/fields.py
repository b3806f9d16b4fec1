"""How a config field of any tjx package is declared: `setting`, its default and the metadata apps
read (tjx-nn's model configs, tjx-optim's optimizer, tjx-parallel's mesh, tjx-data's sources,
tjx-ckpt's checkpoint section and the trainer's own sections all use this one helper)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["setting"]


def setting(default: Any, *, factory: bool = False, **meta: Any) -> Any:
    """A config field: its default and the metadata apps read to list, document and check it.

    Parameters
    ----------
    default : Any
        The field's default; with ``factory``, a callable that makes it (a list), so that no two
        instances share one mutable default. A nested section of a frozen class is given as one
        instance (``MoEConfig()``): built once with the outer class, shared by every config that
        leaves the section out, which then builds and checks none of it.
    factory : bool
        Whether ``default`` is a factory.
    **meta : Any
        ``help`` (one line), ``choices`` (the allowed values), ``resumable`` (a resumed run may
        change it) and bounds (``min``, ``max``, ``gt``, ``lt``).

    Returns
    -------
    dataclasses.Field
        For a dataclass body: ``lr: float = setting(3e-4, gt=0, help="peak learning rate")``.
    """
    if factory:
        return dataclasses.field(default_factory=default, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)
