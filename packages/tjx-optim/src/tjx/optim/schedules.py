"""Learning-rate schedules: composable pieces on optax and ``build_schedule(config, total_steps)``
(the rules of a schedule over a run of that length, ``schedule_over``, are `tjx.optim.config`'s).

Each piece is an ``optax.Schedule`` (``step -> lr``) starting at step 0, so pieces compose with
``join`` (optax.join_schedules, which shifts each piece to start at its boundary).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from jax.typing import ArrayLike

from tjx.optim.config import ScheduleConfig, schedule_over

#: The run's length a schedule built without one spans (tjx-optim 0.15's ``ScheduleConfig``
#: default), until 0.17.
OLD_TOTAL_STEPS = 10_000

__all__ = [
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
