"""Loggers behind one interface: console, JSONL, W&B and TensorBoard, fanned out by
:func:`make_logger`. W&B and TensorBoard are imported only when used (optional extras)."""

from tjx.core.standard_json import (
    NONFINITE_KEY,
    dumps_json,
    from_standard_json,
    loads_json,
    to_standard_json,
)
from tjx.metrics.loggers.base import Logger, MultiLogger, select_weights
from tjx.metrics.loggers.console import ConsoleLogger
from tjx.metrics.loggers.factory import LOGGER_NAMES, check_logger_packages, make_logger
from tjx.metrics.loggers.histograms import HISTOGRAM_BINS, histogram_summary, weights_to_host
from tjx.metrics.loggers.jsonl import (
    JSONL_NAME,
    JsonlLogger,
    read_jsonl,
    rewind_jsonl,
    rewound_path,
)
from tjx.metrics.loggers.tensorboard import TensorBoardLogger
from tjx.metrics.loggers.wandb_logger import WandbLogger, resolve_wandb_mode

__all__ = [
    "HISTOGRAM_BINS",
    "JSONL_NAME",
    "LOGGER_NAMES",
    "NONFINITE_KEY",
    "ConsoleLogger",
    "JsonlLogger",
    "Logger",
    "MultiLogger",
    "TensorBoardLogger",
    "WandbLogger",
    "check_logger_packages",
    "dumps_json",
    "from_standard_json",
    "histogram_summary",
    "loads_json",
    "make_logger",
    "read_jsonl",
    "resolve_wandb_mode",
    "rewind_jsonl",
    "rewound_path",
    "select_weights",
    "to_standard_json",
    "weights_to_host",
]
