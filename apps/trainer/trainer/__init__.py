"""The trainer's public face: what other apps and tools may use (`from trainer import name`).

``python -m trainer --help`` and a bad command line import this package first and must not load
JAX, so each name's module is imported on first access (`tjx.core.lazy.lazy_api`).
"""

from __future__ import annotations

from tjx.core.lazy import lazy_api

with lazy_api(globals()):
    from trainer.cli import plan_argv
    from trainer.config.folder import RunDir
    from trainer.config.schema import ConfigError
    from trainer.config.settings import load_config
    from trainer.config.typed import Config, StepConfig, read_config, resolve, step_config
    from trainer.loop.progress import progress_bar
    from trainer.plan.memory_fit import abstract_step, step_peak
    from trainer.plan.plan_report import open_target
    from trainer.plan.run_plan import RunPlan
    from trainer.plan.step_plan import roofline_inputs
    from trainer.plan.target_plan import plan_here
    from trainer.start.startup import run
    from trainer.step.data_setup import make_tokenizer, train_loader, val_batches
    from trainer.step.data_setup import prepare as prepare_data
    from trainer.step.state import Setup
    from trainer.step.state import build as build_state
    from trainer.step.train_state import TrainState
    from trainer.step.train_step import jit_train_step, make_eval_step, make_train_step

__all__ = [
    "Config",
    "ConfigError",
    "RunDir",
    "RunPlan",
    "Setup",
    "StepConfig",
    "TrainState",
    "abstract_step",
    "build_state",
    "jit_train_step",
    "load_config",
    "make_eval_step",
    "make_tokenizer",
    "make_train_step",
    "open_target",
    "plan_argv",
    "plan_here",
    "prepare_data",
    "progress_bar",
    "read_config",
    "resolve",
    "roofline_inputs",
    "run",
    "step_config",
    "step_peak",
    "train_loader",
    "val_batches",
]
