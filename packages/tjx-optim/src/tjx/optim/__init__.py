"""tjx.optim: optimizers, schedules and the gradient-processing chain for transformer training.

Built on optax; see README.md for the API table and defaults.
"""

from tjx.optim.accumulate import accumulate_gradients
from tjx.optim.config import OPTIMIZER_NAMES, OptimizerConfig, users_of
from tjx.optim.defaults import (
    RENAMED_KEYS,
    OwnDefault,
    migrate_section,
    own_defaults,
    with_own_defaults,
    with_schedule_defaults,
)
from tjx.optim.flat import (
    FLAT_OPTIMIZERS,
    FlatLayout,
    FlatParams,
    FlatState,
    flat_groups,
    to_flat_state,
    to_per_leaf_state,
)
from tjx.optim.freeze import (
    ADAPTER_NAMES,
    adapter_mask,
    join_trainable,
    only_trainable,
    path_mask,
    split_trainable,
    trainable_gradients,
)
from tjx.optim.loss_scale import (
    DynamicLossScaleState,
    all_finite,
    check_precision,
    dynamic_loss_scale,
    loss_scale_value,
    scale_loss,
    unscale_grads,
)
from tjx.optim.masks import decay_mask
from tjx.optim.muon import muon_dimension_numbers, muon_mask
from tjx.optim.optimizers import (
    DEFAULT_LEARNING_RATES,
    build_optimizer,
    flat_layout,
    learning_rate_schedule,
    optimizer_core,
    relayout_state,
    uses_flat_update,
)
from tjx.optim.plot import plot_schedule, schedule_values
from tjx.optim.report import step_report
from tjx.optim.schedules import (
    SCHEDULE_NAMES,
    ScheduleConfig,
    build_schedule,
    constant,
    cosine_decay,
    inverse_sqrt,
    join,
    linear_decay,
    linear_warmup,
    schedule_over,
    sqrt_decay,
    warmup_stable_decay,
    with_warmup,
)
from tjx.optim.transforms import (
    ClipStatsState,
    ScheduleStatsState,
    clip_by_global_norm_with_stats,
    find_state,
    scale_by_schedule_with_stats,
    skip_nonfinite,
)

__version__ = "0.16.6"

__all__ = [
    "ADAPTER_NAMES",
    "DEFAULT_LEARNING_RATES",
    "FLAT_OPTIMIZERS",
    "OPTIMIZER_NAMES",
    "RENAMED_KEYS",
    "SCHEDULE_NAMES",
    "ClipStatsState",
    "DynamicLossScaleState",
    "FlatLayout",
    "FlatParams",
    "FlatState",
    "OptimizerConfig",
    "OwnDefault",
    "ScheduleConfig",
    "ScheduleStatsState",
    "__version__",
    "accumulate_gradients",
    "adapter_mask",
    "all_finite",
    "build_optimizer",
    "build_schedule",
    "schedule_over",
    "check_precision",
    "clip_by_global_norm_with_stats",
    "constant",
    "cosine_decay",
    "decay_mask",
    "dynamic_loss_scale",
    "find_state",
    "flat_groups",
    "flat_layout",
    "inverse_sqrt",
    "join",
    "learning_rate_schedule",
    "linear_decay",
    "linear_warmup",
    "loss_scale_value",
    "migrate_section",
    "muon_dimension_numbers",
    "muon_mask",
    "join_trainable",
    "only_trainable",
    "split_trainable",
    "optimizer_core",
    "own_defaults",
    "path_mask",
    "plot_schedule",
    "scale_by_schedule_with_stats",
    "scale_loss",
    "schedule_values",
    "skip_nonfinite",
    "sqrt_decay",
    "step_report",
    "trainable_gradients",
    "unscale_grads",
    "relayout_state",
    "to_flat_state",
    "to_per_leaf_state",
    "uses_flat_update",
    "users_of",
    "warmup_stable_decay",
    "with_own_defaults",
    "with_schedule_defaults",
    "with_warmup",
]
