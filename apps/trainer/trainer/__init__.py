"""The trainer's public face: what other apps and tools may use (`from trainer import name`).

The names are loaded lazily (PEP 562): ``python -m trainer --help`` and a bad command line import
this package first and must not load JAX, so each name's module is imported on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

#: Each public name: (its module, its name there).
_EXPORTS: dict[str, tuple[str, str]] = {
    "Config": ("trainer.config", "Config"),
    "ConfigError": ("trainer.schema", "ConfigError"),
    "RunDir": ("trainer.job.folder", "RunDir"),
    "RunPlan": ("trainer.plan", "RunPlan"),
    "Setup": ("trainer.state", "Setup"),
    "StepConfig": ("trainer.config", "StepConfig"),
    "TrainState": ("trainer.train_state", "TrainState"),
    "abstract_step": ("trainer.memory_fit", "abstract_step"),
    "build_state": ("trainer.state", "build"),
    "jit_train_step": ("trainer.step", "jit_train_step"),
    "load_config": ("trainer.settings", "load_config"),
    "make_eval_step": ("trainer.step", "make_eval_step"),
    "make_tokenizer": ("trainer.data_setup", "make_tokenizer"),
    "make_train_step": ("trainer.step", "make_train_step"),
    "open_target": ("trainer.job.plan_report", "open_target"),
    "plan_argv": ("trainer.cli", "plan_argv"),
    "plan_here": ("trainer.target_plan", "plan_here"),
    "prepare_data": ("trainer.data_setup", "prepare"),
    "progress_bar": ("trainer.job.progress", "progress_bar"),
    "read_config": ("trainer.config", "read_config"),
    "resolve": ("trainer.config", "resolve"),
    "roofline_inputs": ("trainer.job.step_plan", "roofline_inputs"),
    "run": ("trainer.startup", "run"),
    "step_config": ("trainer.config", "step_config"),
    "step_peak": ("trainer.memory_fit", "step_peak"),
    "train_loader": ("trainer.data_setup", "train_loader"),
    "val_batches": ("trainer.data_setup", "val_batches"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import the module that owns ``name`` on first access (PEP 562), and keep the value."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
