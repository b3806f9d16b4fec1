"""The trainer's public face: what other apps and tools may use (`from trainer import name`).

The names are loaded lazily (PEP 562): ``python -m trainer --help`` and a bad command line import
this package first and must not load JAX, so each name's module is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the same names, eagerly, for the type checker
    from trainer.cli import plan_argv
    from trainer.config import Config
    from trainer.data_setup import make_tokenizer, train_loader, val_batches
    from trainer.data_setup import prepare as prepare_data
    from trainer.loop import run
    from trainer.memory_fit import abstract_step, step_peak
    from trainer.overrides import load_config
    from trainer.plan import RunPlan
    from trainer.resolved import Resolved, resolve
    from trainer.schema import ConfigError
    from trainer.state import Setup
    from trainer.state import build as build_state
    from trainer.step import jit_train_step, make_eval_step, make_train_step
    from trainer.target_plan import plan_here

#: Each public name: (its module, its name there).
_EXPORTS: dict[str, tuple[str, str]] = {
    "Config": ("trainer.config", "Config"),
    "ConfigError": ("trainer.schema", "ConfigError"),
    "Resolved": ("trainer.resolved", "Resolved"),
    "RunPlan": ("trainer.plan", "RunPlan"),
    "Setup": ("trainer.state", "Setup"),
    "abstract_step": ("trainer.memory_fit", "abstract_step"),
    "build_state": ("trainer.state", "build"),
    "jit_train_step": ("trainer.step", "jit_train_step"),
    "load_config": ("trainer.overrides", "load_config"),
    "make_eval_step": ("trainer.step", "make_eval_step"),
    "make_tokenizer": ("trainer.data_setup", "make_tokenizer"),
    "make_train_step": ("trainer.step", "make_train_step"),
    "plan_argv": ("trainer.cli", "plan_argv"),
    "plan_here": ("trainer.target_plan", "plan_here"),
    "prepare_data": ("trainer.data_setup", "prepare"),
    "resolve": ("trainer.resolved", "resolve"),
    "run": ("trainer.loop", "run"),
    "step_peak": ("trainer.memory_fit", "step_peak"),
    "train_loader": ("trainer.data_setup", "train_loader"),
    "val_batches": ("trainer.data_setup", "val_batches"),
}

__all__ = [
    "Config",
    "ConfigError",
    "Resolved",
    "RunPlan",
    "Setup",
    "abstract_step",
    "build_state",
    "jit_train_step",
    "load_config",
    "make_eval_step",
    "make_tokenizer",
    "make_train_step",
    "plan_argv",
    "plan_here",
    "prepare_data",
    "resolve",
    "run",
    "step_peak",
    "train_loader",
    "val_batches",
]


def __getattr__(name: str) -> Any:
    """Import the module that owns ``name`` on first access (PEP 562), and keep the value."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
