"""Learning-rate schedules: a schedule's config (`ScheduleConfig`), composable pieces on optax,
``build_schedule(config, total_steps)`` and ``schedule_over(config, total_steps)``, the rules of a
schedule over a run of that length.

Each piece is an ``optax.Schedule`` (``step -> lr``) starting at step 0, so pieces compose with
``join`` (optax.join_schedules, which shifts each piece to start at its boundary).
"""

# `setting()` returns dataclasses.field objects (with the metadata apps read).
# ruff: noqa: RUF009
from __future__ import annotations

import copy
import dataclasses
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from tjx.core.fields import setting
from tjx.optim.fields import choice, known_keys, number

#: The run's length a schedule built without one spans (tjx-optim 0.15's ``ScheduleConfig``
#: default), until 0.17.
OLD_TOTAL_STEPS = 10_000

__all__ = [
    "SCHEDULE_NAMES",
    "WSD_DECAY_SHAPES",
    "WSD_DEFAULTS",
    "ScheduleConfig",
    "build_schedule",
    "constant",
    "cosine_decay",
    "inverse_sqrt",
    "join",
    "linear_decay",
    "linear_warmup",
    "schedule_over",
    "sqrt_decay",
    "warmup_stable_decay",
    "with_warmup",
]

SCHEDULE_NAMES: tuple[str, ...] = (
    "constant",
    "linear_warmup",
    "cosine",
    "linear",
    "inverse_sqrt",
    "wsd",
)
WSD_DECAY_SHAPES: tuple[str, ...] = ("linear", "cosine", "sqrt")
#: What a ``wsd`` schedule's ``decay_fraction`` and ``decay_shape`` left ``None`` become.
WSD_DEFAULTS: Mapping[str, Any] = {"decay_fraction": 0.2, "decay_shape": "linear"}


@dataclasses.dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule, over a run of ``total_steps`` steps that `build_schedule` (or
    `build_optimizer`) is given: the run's length is the run's setting, not the schedule's.

    Every schedule starts with ``warmup_steps`` of linear warmup from ``init_lr_ratio * peak_lr`` to
    ``peak_lr`` (none when ``warmup_steps == 0``; a float below 1 is that fraction of
    ``total_steps``, rounded: `over` turns it into the steps it makes), then follows its body:

    * ``constant`` / ``linear_warmup``: hold ``peak_lr`` (``linear_warmup`` needs warmup steps).
    * ``cosine``: cosine decay to ``min_lr_ratio * peak_lr`` at ``total_steps``, then hold it.
    * ``linear``: linear decay to ``min_lr_ratio * peak_lr`` at ``total_steps``, then hold.
    * ``inverse_sqrt``: ``peak_lr * sqrt(warmup_steps / step)`` after warmup (Transformer paper);
      with ``warmup_steps=0``, ``peak_lr / sqrt(step + 1)``.
    * ``wsd``: warmup, hold ``peak_lr``, then decay over the last ``decay_fraction * total_steps``
      steps to ``min_lr_ratio * peak_lr`` with ``decay_shape`` (``linear``, ``cosine`` or ``sqrt``).
      Left ``None`` they are ``WSD_DEFAULTS`` (0.2, ``"linear"``), filled in at construction; the
      other schedules have no decay phase of their own and refuse a value (it would do nothing).

    The rules that need the run's length (warmup and decay fit in it) are `over`'s.
    """

    name: str = setting("cosine", choices=SCHEDULE_NAMES, help="learning-rate schedule")
    peak_lr: float | None = setting(
        None, help="the peak rate; None: the optimizer's DEFAULT_LEARNING_RATES entry"
    )
    warmup_steps: int | float = setting(
        0,
        help="linear warmup from init_lr_ratio x peak_lr: steps, or a float below 1: that fraction "
        "of total_steps",
    )
    #: Deprecated in 0.16 (removed in 0.17): the run's length, now `build_schedule`'s
    #: ``total_steps`` argument. Set, it warns and is the length `build_schedule` uses by default.
    total_steps: int | None = setting(
        None, key=False, help="deprecated: pass total_steps to build_schedule/build_optimizer"
    )
    min_lr_ratio: float = setting(0.1, help="final rate as a fraction of the peak")
    init_lr_ratio: float = setting(0.0, help="the warmup's first rate as a fraction of the peak")
    decay_fraction: float | None = setting(None, help="wsd: share of the steps decaying; None: 0.2")
    decay_shape: str | None = setting(
        None, choices=WSD_DECAY_SHAPES, help="wsd: the decay's shape; None: linear"
    )

    def __post_init__(self) -> None:
        choice("ScheduleConfig.name", self.name, SCHEDULE_NAMES)
        if self.peak_lr is not None:  # None: OptimizerConfig fills in its optimizer's rate
            number("ScheduleConfig.peak_lr", self.peak_lr, low=0.0, low_open=True)
        w = self.warmup_steps
        if isinstance(w, float) and not 0.0 <= w < 1.0:
            raise ValueError(
                f"ScheduleConfig.warmup_steps={w!r} must be an integer (steps) or a float in "
                "[0, 1) (that fraction of total_steps)"
            )
        if not isinstance(w, float):
            number("ScheduleConfig.warmup_steps", w, low=0, integer=True)
        if self.name == "linear_warmup" and w == 0:
            raise ValueError(
                "ScheduleConfig.warmup_steps=0 with name='linear_warmup'; allowed values: "
                "1 <= warmup_steps <= total_steps (or use name='constant')"
            )
        number("ScheduleConfig.min_lr_ratio", self.min_lr_ratio, low=0.0, high=1.0)
        number("ScheduleConfig.init_lr_ratio", self.init_lr_ratio, low=0.0, high=1.0)
        self._check_decay()
        if self.total_steps is not None:  # the 0.15 API: the length held here, checked at once
            warnings.warn(
                "ScheduleConfig.total_steps is deprecated (removed in tjx-optim 0.17); pass "
                "total_steps to build_schedule or build_optimizer",
                DeprecationWarning,
                stacklevel=3,
            )
            number("ScheduleConfig.total_steps", self.total_steps, low=1, integer=True)
            fitted = schedule_over(self, self.total_steps)
            object.__setattr__(self, "warmup_steps", fitted.warmup_steps)

    def over(self, total_steps: int) -> ScheduleConfig:
        """Deprecated (until tjx-optim 0.17): `tjx.optim.schedule_over(self, total_steps)`, the
        rules of a schedule over a run's length, which live beside `build_schedule`."""
        warnings.warn(
            "ScheduleConfig.over is deprecated (removed in tjx-optim 0.17); use "
            "tjx.optim.schedule_over(schedule, total_steps)",
            DeprecationWarning,
            stacklevel=2,
        )
        return schedule_over(self, total_steps)

    def _check_decay(self) -> None:
        """WSD's decay settings: checked, filled in for ``wsd``, refused elsewhere (whether the
        decay fits in the run is `over`'s)."""
        if self.decay_fraction is not None:
            number(
                "ScheduleConfig.decay_fraction",
                self.decay_fraction,
                low=0.0,
                high=1.0,
                low_open=True,
            )
        if self.decay_shape is not None:
            choice("ScheduleConfig.decay_shape", self.decay_shape, WSD_DECAY_SHAPES)
        if self.name != "wsd":
            for field in WSD_DEFAULTS:
                if getattr(self, field) is not None:
                    raise ValueError(
                        f"ScheduleConfig.{field}: only the 'wsd' schedule uses it "
                        f"(ScheduleConfig.name is {self.name!r}); set it to None"
                    )
            return
        for field, default in WSD_DEFAULTS.items():
            if getattr(self, field) is None:  # frozen: set through object.__setattr__
                object.__setattr__(self, field, default)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ScheduleConfig:
        """Build from a mapping (e.g. parsed YAML); unknown keys raise ``ValueError``."""
        return cls(**known_keys(cls, d))


def schedule_over(config: ScheduleConfig, total_steps: int) -> ScheduleConfig:
    """``config`` for a run of ``total_steps`` steps: a fractional ``warmup_steps`` as the steps
    it makes (rounded, so that a warmup written for a long run still fits a short one: levanter's
    ``warmup``), the warmup and a wsd decay checked to fit in the run. (`ScheduleConfig` alone
    checks the rest; this is the part that needs the run's length, as `build_schedule` does.)

    Parameters
    ----------
    config
        A validated ``ScheduleConfig``.
    total_steps
        The run's steps (at least 1).

    Returns
    -------
    ScheduleConfig
        ``config`` with ``warmup_steps`` in steps (``config`` when it already was).

    Raises
    ------
    ValueError
        Naming the setting that does not fit, and ``total_steps``.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps={total_steps!r}; allowed values: an integer >= 1")
    w = config.warmup_steps
    if isinstance(w, float):
        w = int(round(w * total_steps))
    if w > total_steps:
        raise ValueError(
            f"ScheduleConfig.warmup_steps={w} is longer than the run; allowed values: 0 <= "
            f"warmup_steps <= total_steps={total_steps}"
        )
    if config.name == "linear_warmup" and w == 0:  # a fraction may round to no step
        raise ValueError(
            f"ScheduleConfig.warmup_steps={config.warmup_steps!r} makes no warmup step of "
            f"total_steps={total_steps} with name='linear_warmup'; allowed values: 1 <= "
            "warmup_steps <= total_steps (or use name='constant')"
        )
    if config.name == "wsd":
        assert config.decay_fraction is not None  # filled in at construction
        if w + int(round(config.decay_fraction * total_steps)) > total_steps:
            raise ValueError(
                f"ScheduleConfig.decay_fraction={config.decay_fraction} with warmup_steps={w} "
                f"exceeds the run; allowed values: warmup_steps + round(decay_fraction * "
                f"total_steps) <= total_steps={total_steps}"
            )
    if not isinstance(config.warmup_steps, float):  # already steps
        return config
    # Through object.__setattr__ on a copy: dataclasses.replace would run __post_init__,
    # which warns about the deprecated field a 0.15 config still holds.
    out = copy.copy(config)
    object.__setattr__(out, "warmup_steps", w)
    return out


def constant(value: float) -> optax.Schedule:
    """A constant rate ``value``."""
    return optax.constant_schedule(value)


def linear_warmup(peak: float, steps: int, init: float = 0.0) -> optax.Schedule:
    """Linear ramp from ``init`` at step 0 to ``peak`` at ``steps``, then hold ``peak``."""
    return optax.linear_schedule(init, peak, max(int(steps), 1))


def cosine_decay(peak: float, steps: int, floor: float = 0.0) -> optax.Schedule:
    """Cosine from ``peak`` at step 0 to ``floor`` at ``steps``, then hold ``floor``."""
    alpha = floor / peak if peak else 0.0
    return optax.cosine_decay_schedule(peak, max(int(steps), 1), alpha=alpha)


def linear_decay(peak: float, steps: int, floor: float = 0.0) -> optax.Schedule:
    """Straight line from ``peak`` at step 0 to ``floor`` at ``steps``, then hold ``floor``."""
    return optax.linear_schedule(peak, floor, max(int(steps), 1))


def sqrt_decay(peak: float, steps: int, floor: float = 0.0) -> optax.Schedule:
    """``floor + (peak - floor) * (1 - sqrt(t / steps))``: the "1-sqrt" cooldown used with WSD."""
    n = max(int(steps), 1)

    # optax has no 1-sqrt decay; it is one line.
    def schedule(step: ArrayLike) -> jax.Array:
        frac = jnp.clip(jnp.asarray(step, jnp.float32) / n, 0.0, 1.0)
        return floor + (peak - floor) * (1.0 - jnp.sqrt(frac))

    return schedule


def inverse_sqrt(peak: float, timescale: int) -> optax.Schedule:
    """``peak * sqrt(w / (step + w))`` with ``w = max(timescale, 1)``: Vaswani et al.'s decay.

    Starts at step 0 with value ``peak``; ``step`` counts from the start of this piece. Put it
    after ``linear_warmup(peak, timescale)`` with ``join`` and the value at global step ``T >= w``
    is the Transformer paper's ``peak * sqrt(w / T)``. Without warmup (``timescale=0``) it is
    ``peak / sqrt(step + 1)``.
    """
    w = float(max(int(timescale), 1))

    # optax has no inverse-sqrt schedule. The argument is the step *after* warmup, so add w back.
    def schedule(step: ArrayLike) -> jax.Array:
        t = jnp.asarray(step, jnp.float32) + w
        return peak * jnp.sqrt(w / jnp.maximum(t, w))

    return schedule


def join(schedules: Sequence[optax.Schedule], boundaries: Sequence[int]) -> optax.Schedule:
    """Run ``schedules[i]`` from ``boundaries[i-1]``; each piece counts steps from its start."""
    if len(boundaries) != len(schedules) - 1:
        raise ValueError(
            f"boundaries has {len(boundaries)} entries; allowed: len(schedules) - 1 = "
            f"{len(schedules) - 1}"
        )
    return optax.join_schedules(list(schedules), [int(b) for b in boundaries])


def with_warmup(
    body: optax.Schedule, warmup_steps: int, peak: float, init: float = 0.0
) -> optax.Schedule:
    """Linear warmup from ``init`` to ``peak`` over ``warmup_steps``, then ``body`` (from its 0)."""
    if warmup_steps <= 0:
        return body
    return join([linear_warmup(peak, warmup_steps, init), body], [warmup_steps])


def warmup_stable_decay(
    peak: float,
    *,
    warmup_steps: int,
    total_steps: int,
    decay_steps: int,
    floor: float = 0.0,
    init: float = 0.0,
    decay_shape: str = "linear",
) -> optax.Schedule:
    """Warmup, hold ``peak``, then decay to ``floor`` over the last ``decay_steps`` of the run."""
    shapes = {"linear": linear_decay, "cosine": cosine_decay, "sqrt": sqrt_decay}
    if decay_shape not in shapes:
        raise ValueError(f"decay_shape={decay_shape!r}; allowed values: {sorted(shapes)}")
    stable = max(total_steps - warmup_steps - decay_steps, 0)
    decay = shapes[decay_shape](peak, decay_steps, floor)
    body = join([constant(peak), decay], [stable]) if decay_steps > 0 else constant(peak)
    return with_warmup(body, warmup_steps, peak, init)


def build_schedule(config: ScheduleConfig, total_steps: int | None = None) -> optax.Schedule:
    """The schedule ``config`` describes over a run of ``total_steps`` steps (see
    ``ScheduleConfig`` for each name's shape).

    Parameters
    ----------
    config
        A validated ``ScheduleConfig``.
    total_steps
        The run's steps: where ``cosine``/``linear`` reach their floor, a fractional warmup's
        and ``wsd``'s decay's base. None (deprecated, until 0.17): the config's deprecated
        ``total_steps``, else 10,000, with a ``DeprecationWarning``.

    Returns
    -------
    optax.Schedule
        ``step -> learning rate``, jit-friendly (``step`` may be a traced int32).

    Raises
    ------
    ValueError
        A warmup or decay longer than the run (`schedule_over`), or no peak rate.
    """
    if config.peak_lr is None:
        raise ValueError(
            "ScheduleConfig.peak_lr is None: give the peak rate, or build the schedule through "
            "OptimizerConfig(schedule=...), which fills in its optimizer's default rate"
        )
    peak = float(config.peak_lr)
    total = run_length(config, total_steps)
    config = schedule_over(config, total)
    floor = peak * config.min_lr_ratio
    init = peak * config.init_lr_ratio
    w = int(config.warmup_steps)  # a fraction is steps by now (`schedule_over`)
    rest = max(total - w, 1)
    if config.name in ("constant", "linear_warmup"):
        body = constant(peak)
    elif config.name == "cosine":
        body = cosine_decay(peak, rest, floor)
    elif config.name == "linear":
        body = linear_decay(peak, rest, floor)
    elif config.name == "inverse_sqrt":
        body = inverse_sqrt(peak, w)
    else:  # "wsd"; ScheduleConfig already rejected any other name
        # ScheduleConfig fills a wsd schedule's decay settings left None with WSD_DEFAULTS.
        assert config.decay_fraction is not None and config.decay_shape is not None
        decay_steps = int(round(config.decay_fraction * total))
        return warmup_stable_decay(
            peak,
            warmup_steps=w,
            total_steps=total,
            decay_steps=decay_steps,
            floor=floor,
            init=init,
            decay_shape=config.decay_shape,
        )
    return with_warmup(body, w, peak, init)


def run_length(config: ScheduleConfig, total_steps: int | None) -> int:
    """``total_steps``; None (the 0.15 call, deprecated until 0.17): the config's deprecated
    ``total_steps``, else 10,000, with a ``DeprecationWarning``."""
    if total_steps is not None:
        return total_steps
    if config.total_steps is not None:  # ScheduleConfig warned when it was made
        return config.total_steps
    warnings.warn(
        f"a schedule built without total_steps spans {OLD_TOTAL_STEPS} steps; pass total_steps "
        "(the run's steps) to build_schedule or build_optimizer (required from tjx-optim 0.17)",
        DeprecationWarning,
        stacklevel=3,
    )
    return OLD_TOTAL_STEPS
