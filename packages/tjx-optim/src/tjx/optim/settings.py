"""An app's optimizer section, as plain data, to the resolved `OptimizerConfig` it stands for.

An app's config file holds a flat optimizer section (``name``, ``lr``, ``b1`` ... and a nested
``schedule``) and a run length kept elsewhere (the number of training steps). `config_from_settings`
builds tjx.optim's config from them by tjx.optim's rules, so the app keeps no copy of those rules,
and words every error in the app's own key names (``names``), as tjx-data's ``names=`` does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from jax.typing import DTypeLike

from tjx.optim.config import OPTIMIZER_NAMES, OptimizerConfig, ScheduleConfig, _choice
from tjx.optim.loss_scale import check_precision
from tjx.optim.optimizers import DEFAULT_LEARNING_RATES

__all__ = ["config_from_settings"]

# The keys of an app's optimizer section: `OptimizerConfig` fields, except that ``lr`` is the
# schedule's peak rate and ``schedule`` holds the schedule's own keys (below).
_KEYS = (
    "name",
    "lr",
    "b1",
    "b2",
    "eps",
    "weight_decay",
    "momentum",
    "nesterov",
    "clip_norm",
    "accumulation_steps",
    "loss_scale",
    "skip_nonfinite",
    "schedule",
)
# ``peak_lr`` and ``total_steps`` are not among them: they come from ``lr`` and the run length.
_SCHEDULE_KEYS = ("name", "warmup_steps", "min_lr_ratio", "decay_fraction", "decay_shape")


def config_from_settings(
    settings: Mapping[str, Any],
    *,
    total_steps: int,
    param_dtype: DTypeLike | None = None,
    compute_dtype: DTypeLike | None = None,
    names: Mapping[str, str] | None = None,
) -> OptimizerConfig:
    """The resolved `OptimizerConfig` of an app's optimizer section and run length.

    Parameters
    ----------
    settings : Mapping[str, Any]
        The section as plain data (e.g. parsed YAML): ``name``, ``lr``, ``b1``, ``b2``, ``eps``,
        ``weight_decay``, ``momentum``, ``nesterov``, ``clip_norm``, ``accumulation_steps``,
        ``loss_scale``, ``skip_nonfinite`` and ``schedule``, a mapping of ``name``,
        ``warmup_steps``, ``min_lr_ratio``, ``decay_fraction`` and ``decay_shape``. A key left
        out takes `OptimizerConfig`'s / `ScheduleConfig`'s default (a ``schedule`` left out or
        ``None``: all of `ScheduleConfig`'s); a value given, ``None`` included, is passed on as
        it is (``clip_norm: None`` is no clipping). ``lr: None`` is the optimizer's
        `DEFAULT_LEARNING_RATES` entry.
    total_steps : int
        The run's length: the schedule's ``total_steps``.
    param_dtype, compute_dtype : dtype or str, optional
        The model's precision (``"float32"``, ``"bfloat16"``, ``"float16"``, a dtype). When
        either is given, `check_precision` checks the chain against it, the other one taken as
        ``"float32"`` (so a float16 ``param_dtype`` given alone is still refused); with neither,
        no precision is checked.
    names : Mapping[str, str], optional
        The caller's names for ``settings``, ``total_steps``, ``param_dtype`` and
        ``compute_dtype``, used in messages; each one left out is its own name. A trainer whose
        section is ``optimizer:`` and run length ``train.steps`` passes ``{"settings":
        "optimizer", "total_steps": "train.steps", ...}``.

    Returns
    -------
    OptimizerConfig
        ``OptimizerConfig(name, schedule=ScheduleConfig(peak_lr=lr, total_steps=total_steps,
        ...), ...).resolved()``: each hyper-parameter left ``None`` holds the optimizer's own
        default, as do a ``wsd`` schedule's ``decay_fraction``/``decay_shape``, so the values
        printed or compared are the ones the run uses.

    Raises
    ------
    ValueError
        A key of ``settings`` (or of its ``schedule``) that is none of the above, naming it and
        the allowed keys; and every rule of `ScheduleConfig`, `OptimizerConfig` and
        `check_precision` (warmup within ``total_steps``, WSD-only decay settings, a
        ``momentum`` given to an optimizer that has none, float16 needing dynamic loss
        scaling, ...). Messages name the settings by their keys under the name of ``settings``:
        ``settings.lr``, ``settings.schedule.warmup_steps``, ``settings.momentum`` (the peak
        rate is ``lr``), the run length by the name of ``total_steps`` and the dtypes by theirs
        (``param_dtype=float16: ...``). ``"set it to None"`` stays as it is.
    """
    schedule = _checked_keys(settings, names)
    try:
        config = _build(settings, schedule, total_steps)
        if param_dtype is not None or compute_dtype is not None:
            check_precision(
                config,
                param_dtype="float32" if param_dtype is None else param_dtype,
                compute_dtype="float32" if compute_dtype is None else compute_dtype,
            )
    except ValueError as err:  # tjx.optim's rules speak of its own classes
        raise ValueError(_reword(str(err), names)) from None
    return config


def _build(
    settings: Mapping[str, Any], schedule: Mapping[str, Any], total_steps: int
) -> OptimizerConfig:
    name = settings.get("name", OptimizerConfig.name)
    # Checked before the rate table is read: an unknown name gets OptimizerConfig's own message.
    _choice("OptimizerConfig.name", name, OPTIMIZER_NAMES)
    lr = settings.get("lr")
    peak_lr = DEFAULT_LEARNING_RATES[name] if lr is None else lr
    # The schedule first, then the optimizer: the order (and so the first error) of the trainer.
    schedule_config = ScheduleConfig(peak_lr=peak_lr, total_steps=total_steps, **schedule)
    fields = {k: v for k, v in settings.items() if k not in ("lr", "schedule")}
    # No decay mask: tjx.optim's default leaves biases, norm scales and embeddings alone.
    return OptimizerConfig(schedule=schedule_config, **fields).resolved()


def _checked_keys(settings: Mapping[str, Any], names: Mapping[str, str] | None) -> dict[str, Any]:
    """Refuse unknown keys (a typo would otherwise be a silent default); the schedule's keys."""
    section = _name(names, "settings")
    _known(settings, _KEYS, section)
    schedule = settings.get("schedule")
    if schedule is None:
        return {}
    if not isinstance(schedule, Mapping):
        raise ValueError(
            f"{section}.schedule={schedule!r} must be a mapping of {list(_SCHEDULE_KEYS)} or None"
        )
    _known(schedule, _SCHEDULE_KEYS, f"{section}.schedule")
    return dict(schedule)


def _known(settings: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    unknown = sorted((key for key in settings if key not in allowed), key=str)
    if unknown:
        raise ValueError(f"{where} got unknown keys {unknown}; allowed keys: {list(allowed)}")


def _name(names: Mapping[str, str] | None, argument: str) -> str:
    return (names or {}).get(argument, argument)


def _reword(message: str, names: Mapping[str, str] | None) -> str:
    """A tjx.optim message in the caller's words (``OptimizerConfig.momentum`` → its key)."""
    section = _name(names, "settings")
    words = {  # most specific first: the alternation below tries them in this order
        "ScheduleConfig.peak_lr": f"{section}.lr",
        "ScheduleConfig.total_steps": _name(names, "total_steps"),
        "ScheduleConfig.": f"{section}.schedule.",
        "OptimizerConfig.": f"{section}.",
        "param_dtype=": f"{_name(names, 'param_dtype')}=",  # check_precision's arguments
        "compute_dtype=": f"{_name(names, 'compute_dtype')}=",
    }
    # One pass, so that a replacement is never itself replaced again.
    pattern = "|".join(re.escape(theirs) for theirs in words)
    return re.sub(pattern, lambda match: words[match.group()], message)
