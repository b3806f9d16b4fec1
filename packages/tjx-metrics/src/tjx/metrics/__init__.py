"""tjx.metrics: LM metrics, FLOPs/MFU/throughput, and loggers (console, JSONL, W&B, TensorBoard).

* :func:`lm_stats` (jit-friendly sums and counts), :func:`lm_metrics`, :func:`loss_metrics` and the
  exact streaming :class:`MetricAccumulator`.
* :func:`transformer_flops_per_token` (6·N + 12·L·d·s, PaLM appendix B), :func:`peak_flops` /
  :func:`device_peak_flops` by ``device_kind``, :func:`mfu` and :class:`ThroughputMeter`.
* :func:`make_logger` fanning out to console / JSONL / W&B / TensorBoard; :func:`weights_to_host`
  (a params pytree as ``{path: host array}`` for ``log_histograms``); :func:`plot_curves`.
"""

from tjx.metrics.accumulate import MetricAccumulator, finalize_metrics
from tjx.metrics.devices import DEVICE_PEAKS, DevicePeak, device_peak_flops, peak_flops
from tjx.metrics.flops import flops_per_token_from_config, transformer_flops_per_token
from tjx.metrics.lm import lm_metrics, lm_stats, loss_metrics
from tjx.metrics.loggers import (
    HISTOGRAM_BINS,
    LOGGER_NAMES,
    ConsoleLogger,
    JsonlLogger,
    Logger,
    MultiLogger,
    TensorBoardLogger,
    WandbLogger,
    check_logger_packages,
    histogram_summary,
    make_logger,
    read_jsonl,
    resolve_wandb_mode,
    select_weights,
    weights_to_host,
)
from tjx.metrics.plots import load_curves, plot_curves
from tjx.metrics.throughput import ThroughputMeter, mfu

__version__ = "0.1.0"

__all__ = [
    "DEVICE_PEAKS",
    "HISTOGRAM_BINS",
    "LOGGER_NAMES",
    "ConsoleLogger",
    "DevicePeak",
    "JsonlLogger",
    "Logger",
    "MetricAccumulator",
    "MultiLogger",
    "TensorBoardLogger",
    "ThroughputMeter",
    "WandbLogger",
    "__version__",
    "check_logger_packages",
    "device_peak_flops",
    "finalize_metrics",
    "flops_per_token_from_config",
    "histogram_summary",
    "lm_metrics",
    "lm_stats",
    "load_curves",
    "loss_metrics",
    "make_logger",
    "mfu",
    "peak_flops",
    "plot_curves",
    "read_jsonl",
    "resolve_wandb_mode",
    "select_weights",
    "transformer_flops_per_token",
    "weights_to_host",
]
