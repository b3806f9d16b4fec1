"""Typed, validated configuration for optimizers (a schedule's, `ScheduleConfig`, is
`tjx.optim.schedules`', beside the schedules it builds).

Every field is checked in ``__post_init__`` so a bad YAML value fails when the config is built,
with a ``ValueError`` naming the field and what it may be, not deep inside a jitted step.
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tjx.core.fields import setting
from tjx.optim.fields import choice, known_keys, number, regex
from tjx.optim.schedules import ScheduleConfig

__all__ = [
    "ACCUMULATION_MODES",
    "DEFAULT_LEARNING_RATES",
    "LOSS_SCALES",
    "OPTIMIZER_NAMES",
    "OptimizerConfig",
    "users_of",
]

OPTIMIZER_NAMES: tuple[str, ...] = ("adamw", "adam", "sgd", "lamb", "lion", "adafactor", "muon")
LOSS_SCALES: tuple[str | None, ...] = (None, "dynamic")
ACCUMULATION_MODES: tuple[str, ...] = ("scan", "multi_steps")
FLAT_UPDATES: tuple[str, ...] = ("auto", "on", "off")
#: Optimizers whose update of an element reads only that element (``tjx.optim.flat``).
ELEMENTWISE_OPTIMIZERS: tuple[str, ...] = ("adamw", "adam", "sgd", "lion")


#: The peak rate each optimizer gets when none is given (a schedule's ``peak_lr`` left None, or no
#: rate and no schedule at all): one rate for all would be far off for most of them.
DEFAULT_LEARNING_RATES: Mapping[str, float] = {
    "adamw": 3e-4,
    "adam": 3e-4,
    "sgd": 1e-2,
    "lamb": 1e-3,
    "lion": 1e-4,
    "adafactor": 1e-2,
    "muon": 2e-2,
}


# Per-optimizer defaults for the fields left as None (see README's defaults table).
_DEFAULTS: dict[str, dict[str, float | bool]] = {
    "adamw": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.1},
    "adam": {"b1": 0.9, "b2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
    "sgd": {"momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
    "lamb": {"b1": 0.9, "b2": 0.999, "eps": 1e-6, "weight_decay": 0.01},
    "lion": {"b1": 0.9, "b2": 0.99, "weight_decay": 0.1},
    "adafactor": {"eps": 1e-30, "weight_decay": 0.0},
    "muon": {
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
        "momentum": 0.95,
        "nesterov": True,
        "weight_decay": 0.0,
    },
}


def users_of(field: str) -> tuple[str, ...]:
    """The optimizers that take hyper-parameter ``field`` (those with a default for it)."""
    return tuple(n for n in OPTIMIZER_NAMES if field in _DEFAULTS[n])


def _used_by_name(field: str, value: object, name: str) -> None:
    # A setting the optimizer has no use for would be ignored without a word (adamw's momentum):
    # refused, so that what the user set is what runs.
    if value is not None and field not in _DEFAULTS[name]:
        raise ValueError(
            f"OptimizerConfig.{field}: only {', '.join(users_of(field))} use it "
            f"(OptimizerConfig.name is {name!r}, {field}={value!r}); set it to None"
        )


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """The whole gradient-processing chain (see ``build_optimizer``).

    Fields left as ``None`` take the per-optimizer default (``resolved()`` fills them in; the
    README has the table). Set either ``learning_rate`` (a constant) or ``schedule``; with neither,
    the rate is a constant ``3e-4``.

    * ``b1``/``b2``/``eps``: Adam-family moments (Lion uses ``b1``/``b2``; Muon uses them for the
      AdamW half). ``momentum``/``nesterov``: SGD and Muon momentum; set for another optimizer,
      they raise ``ValueError`` (it would ignore them).
    * ``weight_decay``: decoupled (times the learning rate) for adamw, lamb, lion, adafactor, muon;
      L2 added to the gradient for adam and sgd. Masked by ``decay_mask_regex``/``no_decay_regex``.
    * ``clip_norm``: global-norm clipping threshold (None: no clipping).
    * ``skip_nonfinite``: skip steps whose gradients hold NaN/Inf (counted in the state).
    * ``loss_scale``: None or ``"dynamic"`` (fp16): ``loss_scale_init``, halve on overflow, double
      after ``loss_scale_growth_interval`` good steps, within ``[loss_scale_min,
      loss_scale_max]`` (the cap keeps the float32 scale from reaching ``inf``).
    * ``accumulation_steps`` with ``accumulation_mode``: ``"scan"`` (the trainer calls
      ``accumulate_gradients``) or ``"multi_steps"`` (``optax.MultiSteps`` wraps the chain).
    * ``flat_update``: ``"auto"`` runs an elementwise optimizer's chain over one flat buffer per
      group (decay or not × dtype) instead of leaf by leaf (``tjx.optim.flat``: a few kernels a
      step instead of several per leaf) when the params are whole on each device; ``"on"`` /
      ``"off"`` force it (``"on"`` is refused for LAMB, Adafactor and Muon).
    * ``muon_adam_lr_ratio``: AdamW's learning rate on non-Muon params as a ratio of Muon's;
      ``muon_stacked_layers`` (None: detect from paths) and ``muon_exclude_regex``: see
      ``muon_dimension_numbers``.
    """

    name: str = setting("adamw", choices=OPTIMIZER_NAMES, help="the optimizer")
    learning_rate: float | None = setting(
        None, help="a constant rate instead of a schedule (not with schedule)"
    )
    schedule: ScheduleConfig | None = setting(
        None, resumable=True, help="the learning-rate schedule (ScheduleConfig)"
    )
    b1: float | None = setting(
        None, resumable=True, help="first-moment decay; None: the optimizer's own default"
    )
    b2: float | None = setting(
        None, resumable=True, help="second-moment decay; None: the optimizer's own default"
    )
    eps: float | None = setting(
        None, resumable=True, help="denominator epsilon; None: the optimizer's own default"
    )
    weight_decay: float | None = setting(
        None,
        resumable=True,
        help="decoupled (adam, sgd: L2) weight decay; None: the optimizer's own default",
    )
    momentum: float | None = setting(
        None, help="sgd and muon only: momentum; None: the optimizer's own default"
    )
    nesterov: bool | None = setting(
        None,
        resumable=True,
        help="sgd and muon only: Nesterov momentum; None: the optimizer's own default",
    )
    clip_norm: float | None = setting(
        1.0, resumable=True, help="global gradient-norm clipping; None: none"
    )
    skip_nonfinite: bool = setting(True, help="skip an update whose gradients are not finite")
    loss_scale: str | None = setting(
        None, choices=LOSS_SCALES, help="dynamic loss scaling (float16); None: none"
    )
    loss_scale_init: float = setting(2.0**15, help="dynamic loss scaling: the first scale")
    loss_scale_growth_interval: int = setting(
        2000, help="dynamic loss scaling: good steps before doubling"
    )
    loss_scale_min: float = setting(1.0, help="dynamic loss scaling: the smallest scale")
    loss_scale_max: float = setting(2.0**24, help="dynamic loss scaling: the largest scale")
    accumulation_steps: int = setting(
        1, resumable=True, help="micro-batches per step (gradient accumulation)"
    )
    accumulation_mode: str = setting(
        "scan",
        choices=ACCUMULATION_MODES,
        help="scan: one step sums micro-batches; multi_steps: optax.MultiSteps",
    )
    flat_update: str = setting(
        "auto",
        choices=FLAT_UPDATES,
        help="run the chain over a few flat buffers, not per leaf (auto: elementwise "
        "optimizers, params whole on each device)",
        resumable=True,  # the same numbers either way: `relayout_state` moves a state across
    )
    decay_mask_regex: str | None = setting(
        None, help="decay only parameters whose path matches; None: by logical axis"
    )
    no_decay_regex: str | None = setting(None, help="never decay parameters whose path matches")
    adafactor_factored: bool = setting(True, help="adafactor: factored second moments")
    adafactor_min_dim_size_to_factor: int = setting(
        128, help="adafactor: smallest dimension factored"
    )
    muon_ns_steps: int = setting(5, help="muon: Newton-Schulz iterations")
    muon_adam_lr_ratio: float = setting(
        1.0, help="muon: AdamW's rate on non-matrix parameters / muon's"
    )
    muon_stacked_layers: bool | None = setting(
        None, help="muon: weights stacked over layers; None: from the axes"
    )
    muon_exclude_regex: str | None = setting(None, help="muon: matrices left to AdamW (path regex)")

    def __post_init__(self) -> None:
        choice("OptimizerConfig.name", self.name, OPTIMIZER_NAMES)
        if isinstance(self.schedule, Mapping):
            # YAML gives a mapping; frozen dataclass, so set through object.__setattr__.
            object.__setattr__(self, "schedule", ScheduleConfig.from_dict(self.schedule))
        if isinstance(self.schedule, ScheduleConfig) and self.schedule.peak_lr is None:
            rate = DEFAULT_LEARNING_RATES.get(self.name)  # an unknown name is refused below
            object.__setattr__(self, "schedule", dataclasses.replace(self.schedule, peak_lr=rate))
        if self.schedule is not None and not isinstance(self.schedule, ScheduleConfig):
            raise ValueError(
                f"OptimizerConfig.schedule={self.schedule!r} must be a ScheduleConfig, a mapping "
                "or None"
            )
        if self.learning_rate is not None and self.schedule is not None:
            raise ValueError(
                "OptimizerConfig.learning_rate and OptimizerConfig.schedule are both set; allowed: "
                "one of them (schedule.peak_lr is the peak rate)"
            )
        if self.learning_rate is not None:
            number("OptimizerConfig.learning_rate", self.learning_rate, low=0.0, low_open=True)
        for field in ("b1", "b2", "momentum"):
            value = getattr(self, field)
            if value is not None:
                number(f"OptimizerConfig.{field}", value, low=0.0, high=1.0, high_open=True)
        if self.eps is not None:
            number("OptimizerConfig.eps", self.eps, low=0.0)
        if self.weight_decay is not None:
            number("OptimizerConfig.weight_decay", self.weight_decay, low=0.0)
        for field in ("nesterov", "skip_nonfinite", "adafactor_factored", "muon_stacked_layers"):
            value = getattr(self, field)
            if value is not None and not isinstance(value, bool):
                raise ValueError(
                    f"OptimizerConfig.{field}={value!r}; allowed values: [True, False]"
                )
        for field in ("momentum", "nesterov"):
            _used_by_name(field, getattr(self, field), self.name)
        if self.clip_norm is not None:
            number("OptimizerConfig.clip_norm", self.clip_norm, low=0.0, low_open=True)
        choice("OptimizerConfig.loss_scale", self.loss_scale, LOSS_SCALES)
        number("OptimizerConfig.loss_scale_init", self.loss_scale_init, low=1.0)
        number("OptimizerConfig.loss_scale_min", self.loss_scale_min, low=0.0, low_open=True)
        number("OptimizerConfig.loss_scale_max", self.loss_scale_max, low=1.0)
        if not self.loss_scale_min <= self.loss_scale_init <= self.loss_scale_max:
            raise ValueError(
                f"OptimizerConfig.loss_scale_init={self.loss_scale_init} with loss_scale_min="
                f"{self.loss_scale_min}, loss_scale_max={self.loss_scale_max}; allowed values: "
                "loss_scale_min <= loss_scale_init <= loss_scale_max"
            )
        if self.loss_scale == "dynamic" and not self.skip_nonfinite:
            raise ValueError(
                "OptimizerConfig.skip_nonfinite=False with loss_scale='dynamic'; allowed values: "
                "skip_nonfinite=True (an overflowed step must be skipped)"
            )
        choice("OptimizerConfig.accumulation_mode", self.accumulation_mode, ACCUMULATION_MODES)
        choice("OptimizerConfig.flat_update", self.flat_update, FLAT_UPDATES)
        if self.flat_update == "on" and self.name not in ELEMENTWISE_OPTIMIZERS:
            raise ValueError(
                f"OptimizerConfig.flat_update='on' with name={self.name!r}: its update reads each "
                f"matrix's shape; allowed: flat_update 'auto' or 'off', or an elementwise "
                f"optimizer ({', '.join(ELEMENTWISE_OPTIMIZERS)})"
            )
        regex("OptimizerConfig.decay_mask_regex", self.decay_mask_regex)
        regex("OptimizerConfig.no_decay_regex", self.no_decay_regex)
        regex("OptimizerConfig.muon_exclude_regex", self.muon_exclude_regex)
        for field in (
            "loss_scale_growth_interval",
            "accumulation_steps",
            "adafactor_min_dim_size_to_factor",
            "muon_ns_steps",
        ):
            number(f"OptimizerConfig.{field}", getattr(self, field), low=1, integer=True)
        number(
            "OptimizerConfig.muon_adam_lr_ratio", self.muon_adam_lr_ratio, low=0.0, low_open=True
        )

    def resolved(self) -> OptimizerConfig:
        """A copy with every ``None`` hyper-parameter replaced by this optimizer's default."""
        fill = {k: v for k, v in _DEFAULTS[self.name].items() if getattr(self, k) is None}
        # Only the fields that apply to this optimizer are filled; the rest stay None.
        return dataclasses.replace(self, **fill)  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OptimizerConfig:
        """Build from a mapping (e.g. parsed YAML); ``schedule`` may itself be a mapping."""
        return cls(**known_keys(cls, d))
