"""tjx.metrics: LM metrics, FLOPs/MFU/throughput, and loggers (console, JSONL, W&B, TensorBoard).

* :func:`lm_stats` (jit-friendly sums and counts), :func:`lm_metrics`, :func:`loss_metrics` and the
  exact streaming :class:`MetricAccumulator`; :func:`classification_metrics` names a classifier's
  (accuracy, num_images, top-k below the class count).
* The one held-out evaluation a trainer and an evaluator share: :func:`heldout_step` (a model's
  logits function → the per-batch sums) and :func:`evaluate_heldout` (the host loop:
  :func:`accumulate_heldout`, then :func:`heldout_metrics` with bits/byte or a classifier's names;
  :func:`evaluate_heldout_sources`: a mixture's per source and pooled).
* :func:`transformer_flops_per_token` (6·N + 12·L·d·s, PaLM appendix B), :func:`peak_flops` /
  :func:`device_peak_flops` by ``device_kind`` (:func:`compute_peak_flops` for a model's compute
  dtype at JAX's default precision), :func:`mfu` and :class:`ThroughputMeter`.
* :func:`make_logger` fanning out to console / JSONL / W&B / TensorBoard (the JSONL log is standard
  JSON: :func:`dumps_json` / :func:`loads_json` write and read NaN and infinities as ``null`` named
  in a ``"nonfinite"`` entry); :func:`weights_to_host`
  (a params pytree as ``{path: host array}``; ``Logger.log_weights`` logs their histograms);
  :func:`plot_curves`, and :func:`plot_run` at the end of a run (never raises).
* Before a device is rented: :func:`roofline` (an estimated step time from a compiled program's
  optimized HLO: per kernel FLOPs, bytes read and written, loops times their trip counts) over
  :func:`parse_hlo`, against the device table (:data:`ACCELERATORS`, :func:`accelerator`,
  :func:`parse_target`: peaks per dtype, HBM, bandwidth, links; :func:`gpu_target_config`, XLA's
  own GPU spec for a deviceless compile). A plan for a device that is not here: :class:`Target`,
  :func:`check_packages`, :func:`use_cpu_platform`, :func:`quiet_native_stderr`; each step's
  :func:`compile_lowered` (a :class:`Compiled` finding, never raised) fitted by
  :func:`fit_compiled` to :func:`budget_bytes` (a target's :class:`CompileFindings`, keyed with
  :func:`target_key`, keeps what each deviceless compile found for the next plan);
  :func:`estimate` says the roofline in a plan's lines (:func:`f32_dots`, :func:`grouped_notes`).
  Where a GPU was measured, the estimate is calibrated: :func:`calibrated_seconds` adds to each
  kernel a launch floor and its class's achieved bandwidth and FLOP rate (:func:`calibration_for`:
  the fitted :class:`Calibration` of a device, shipped as ``calibrations.json``), over a step's
  kernel rows (:class:`KernelRow`, :func:`summarize`); :func:`refit` fits them on a profile
  (:func:`read_profile`; ``tools/calibrate.py``).
* Before and during a run: :func:`peak_bytes` (XLA's memory analysis of a compiled step),
  :func:`available_bytes` (what a device can use) and :func:`first_fit` (the first candidate step
  whose peak fits); :class:`DivergenceGuard` (stop after too many non-finite or skipped steps in a
  row); :class:`SpikeDetector` (mark a step whose loss lies ``sigma`` deviations above the
  rolling mean).
* Mixture of experts: :func:`moe_metrics` (balance and z-losses, dropped fraction, expert load)
  and :func:`expert_load` (``[layers, experts]`` shares) of the router's summed statistics.

A run's plan report, step log, device notes and progress bar (``plan_report``, ``StepLog``,
``ProfileWindow``, ``device_notes``, ``progress_bar``...) moved to the trainer app in 0.18
(the trainer's rooms): reading one here is an ImportError naming its new import.
"""

from tjx.core.deprecation import moved_out, moved_to_trainer
from tjx.metrics.accelerators import (
    ACCELERATORS,
    Accelerator,
    accelerator,
    accelerator_of,
    gpu_target_config,
    parse_target,
)
from tjx.metrics.accumulate import (
    MetricAccumulator,
    bits_per_byte,
    finalize_metrics,
    with_bits_per_byte,
)
from tjx.metrics.calibration import (
    Calibration,
    KernelRow,
    calibrated_seconds,
    calibration_for,
    summarize,
)
from tjx.metrics.calibration_fit import read_profile, refit
from tjx.metrics.classification import classification_metrics
from tjx.metrics.compile_findings import CompileFindings, target_key
from tjx.metrics.compiled import (
    CUBLAS_NOTE,
    UNTUNED_GEMM,
    Compiled,
    compile_lowered,
    first_line,
    fit_compiled,
)
from tjx.metrics.deviceless import Target, check_packages, quiet_native_stderr, use_cpu_platform
from tjx.metrics.devices import (
    DEVICE_PEAKS,
    DevicePeak,
    compute_peak_flops,
    device_peak_flops,
    device_summary,
    peak_flops,
)
from tjx.metrics.divergence import DivergenceGuard
from tjx.metrics.flops import flops_per_token_from_config, transformer_flops_per_token
from tjx.metrics.heldout import (
    DEFAULT_TOP_K,
    PER_SOURCE,
    accumulate_heldout,
    evaluate_heldout,
    evaluate_heldout_sources,
    heldout_metrics,
    heldout_step,
)
from tjx.metrics.hlo import HloModule, parse_hlo
from tjx.metrics.kernel_cost import CustomCall, Kernel
from tjx.metrics.lm import lm_metrics, lm_stats, loss_metrics
from tjx.metrics.loggers import (
    HISTOGRAM_BINS,
    JSONL_NAME,
    LOGGER_NAMES,
    NONFINITE_KEY,
    ConsoleLogger,
    JsonlLogger,
    Logger,
    MultiLogger,
    TensorBoardLogger,
    WandbLogger,
    check_logger_packages,
    dumps_json,
    from_standard_json,
    histogram_summary,
    loads_json,
    make_logger,
    read_jsonl,
    resolve_wandb_mode,
    rewind_jsonl,
    rewound_path,
    select_weights,
    to_standard_json,
    weights_to_host,
)
from tjx.metrics.memory import (
    GIB,
    MemoryCheck,
    MemoryFit,
    available_bytes,
    budget_bytes,
    devices_for_bytes,
    first_fit,
    peak_bytes,
    refused_bytes,
    refused_text,
)
from tjx.metrics.moe import MOE_FIELDS, expert_load, moe_metrics
from tjx.metrics.plots import load_curves, plot_curves, plot_run
from tjx.metrics.roofline import LIKELY_BRANCH, Roofline, roofline
from tjx.metrics.roofline_report import (
    LAUNCH_BOUND_S,
    TOP,
    ProgramCost,
    estimate,
    f32_dots,
    gemm_operands,
    grouped_notes,
    program_cost,
)
from tjx.metrics.spikes import Spike, SpikeDetector
from tjx.metrics.throughput import ThroughputMeter, mfu

__version__ = "0.25.0"

#: Names that moved to the trainer app in 0.18 (a package never imports an app, so no shim).
__getattr__ = moved_out(
    __name__,
    moved_to_trainer(
        "plan report",
        "trainer.plan.plan_report",
        ("PlanResult", "does_not_fit", "local_target", "open_target", "plan_report"),
    )
    | moved_to_trainer("step log", "trainer.loop.step_log", ("ProfileWindow", "StepLog"))
    | moved_to_trainer("device notes", "trainer.start.device_notes", ("device_notes",))
    | moved_to_trainer("progress bar", "trainer", ("progress_bar",))
    | moved_to_trainer("progress bar", "trainer.loop.progress", ("ProgressBar",)),
    since="tjx-metrics 0.18",
)

__all__ = [
    "LIKELY_BRANCH",
    "ACCELERATORS",
    "Accelerator",
    "ConsoleLogger",
    "CustomCall",
    "DEFAULT_TOP_K",
    "DEVICE_PEAKS",
    "DevicePeak",
    "DivergenceGuard",
    "Spike",
    "SpikeDetector",
    "GIB",
    "HISTOGRAM_BINS",
    "JSONL_NAME",
    "HloModule",
    "JsonlLogger",
    "Kernel",
    "LOGGER_NAMES",
    "Logger",
    "MOE_FIELDS",
    "MemoryCheck",
    "MemoryFit",
    "MetricAccumulator",
    "MultiLogger",
    "NONFINITE_KEY",
    "PER_SOURCE",
    "Roofline",
    "TensorBoardLogger",
    "ThroughputMeter",
    "WandbLogger",
    "__version__",
    "accelerator",
    "accelerator_of",
    "accumulate_heldout",
    "available_bytes",
    "bits_per_byte",
    "check_logger_packages",
    "classification_metrics",
    "compute_peak_flops",
    "device_peak_flops",
    "device_summary",
    "dumps_json",
    "evaluate_heldout",
    "evaluate_heldout_sources",
    "expert_load",
    "finalize_metrics",
    "first_fit",
    "heldout_metrics",
    "heldout_step",
    "flops_per_token_from_config",
    "from_standard_json",
    "gpu_target_config",
    "histogram_summary",
    "lm_metrics",
    "lm_stats",
    "load_curves",
    "loads_json",
    "loss_metrics",
    "make_logger",
    "mfu",
    "moe_metrics",
    "parse_hlo",
    "parse_target",
    "peak_bytes",
    "peak_flops",
    "plot_curves",
    "plot_run",
    "refused_bytes",
    "roofline",
    "read_jsonl",
    "resolve_wandb_mode",
    "rewind_jsonl",
    "rewound_path",
    "select_weights",
    "target_key",
    "to_standard_json",
    "transformer_flops_per_token",
    "weights_to_host",
    "with_bits_per_byte",
    "CUBLAS_NOTE",
    "UNTUNED_GEMM",
    "CompileFindings",
    "Compiled",
    "compile_lowered",
    "first_line",
    "fit_compiled",
    "Target",
    "check_packages",
    "quiet_native_stderr",
    "use_cpu_platform",
    "budget_bytes",
    "devices_for_bytes",
    "refused_text",
    "LAUNCH_BOUND_S",
    "TOP",
    "ProgramCost",
    "estimate",
    "program_cost",
    "f32_dots",
    "gemm_operands",
    "grouped_notes",
    "Calibration",
    "KernelRow",
    "calibrated_seconds",
    "calibration_for",
    "summarize",
    "read_profile",
    "refit",
]
