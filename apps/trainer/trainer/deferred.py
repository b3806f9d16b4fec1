"""The trainer's one place of deferred imports.

``python -m trainer --help`` and a command line with a bad flag must answer at once, but tjx.nn,
tjx.optim and tjx.metrics load JAX on import (seconds). The modules the command line imports (the
config, its presets, the resume and ``--init-from`` checks, `trainer.cli` itself) therefore take
those packages, and the modules that load them, from here::

    from trainer.deferred import nn, optim

A type checker sees the real modules (the ``TYPE_CHECKING`` imports below); at run time each
name is a `Deferred` stand-in that imports its module on the first attribute read
(``nn.MODEL_KINDS``) and forwards every read to it, so the code reads as with a plain import and
nothing is loaded until a value is needed. ``tests/test_config_packages.py`` holds the command
line to this: importing `trainer.cli` loads neither JAX nor tjx.nn.

Every other trainer module imports at its top.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

__all__ = [
    "Deferred",
    "digest",
    "init_from",
    "metrics",
    "nn",
    "optim",
    "replay",
    "search",
    "startup",
    "target_plan",
]


class Deferred:
    """A module imported on the first read of one of its attributes.

    Parameters
    ----------
    name : str
        The module's dotted name (``"tjx.nn"``).
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        # Only names this object lacks get here; sys.modules is Python's own cache of imports.
        module = sys.modules.get(self._name) or importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<deferred module {self._name!r}>"


if TYPE_CHECKING:
    from tjx import metrics, nn, optim
    from tjx.ckpt import digest
    from trainer import init_from, replay, search, startup, target_plan
else:
    digest = Deferred("tjx.ckpt.digest")
    metrics = Deferred("tjx.metrics")
    nn = Deferred("tjx.nn")
    optim = Deferred("tjx.optim")
    # The trainer's own modules that load JAX: the run, the plan, the --init-from checks.
    init_from = Deferred("trainer.init_from")
    startup = Deferred("trainer.startup")
    target_plan = Deferred("trainer.target_plan")
    search = Deferred("trainer.search")
    replay = Deferred("trainer.replay")
