"""What a setting left ``None`` stands for: the named optimizer's own default.

``OptimizerConfig.resolved()`` fills these in for a config object. The functions here do the same
for settings as plain data (a parsed YAML section, a config saved with a run), so that two sets
of settings can be compared by the values an optimizer really uses: ``b2: null`` under adamw is
0.999, equal to a saved ``b2: 0.999`` and different from a saved ``b2: 0.95``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from tjx.optim.config import _DEFAULTS, OPTIMIZER_NAMES, OptimizerConfig
from tjx.optim.optimizers import DEFAULT_LEARNING_RATES


@dataclasses.dataclass(frozen=True, eq=False)
class OwnDefault:
    """A setting left ``None`` that stands for optimizer ``optimizer``'s own ``value``.

    It compares and hashes as ``value`` (``OwnDefault(0.999, "adamw") == 0.999``) and prints
    whose default it is: ``0.999 (adamw's default)``.
    """

    value: float | bool
    optimizer: str

    def __eq__(self, other: object) -> bool:
        if isinstance(other, OwnDefault):
            other = other.value
        return bool(self.value == other)

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        return f"{self.value!r} ({self.optimizer}'s default)"


def own_defaults(name: str) -> dict[str, float | bool]:
    """Optimizer ``name``'s value for each `OptimizerConfig` field it fills when left ``None``.

    ``learning_rate`` (the constant rate used without a schedule, `DEFAULT_LEARNING_RATES`) and
    the hyper-parameters of the README's defaults table that this optimizer takes. Fields whose
    ``None`` means something else (``clip_norm``: no clipping) are not listed.

    Raises
    ------
    ValueError
        ``name`` is not one of `OPTIMIZER_NAMES`.
    """
    if name not in OPTIMIZER_NAMES:
        raise ValueError(f"name={name!r} is not allowed; allowed values: {list(OPTIMIZER_NAMES)}")
    return {"learning_rate": DEFAULT_LEARNING_RATES[name], **_DEFAULTS[name]}


def with_own_defaults(
    settings: Mapping[str, Any], *, aliases: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``settings`` with each ``None`` the optimizer fills replaced by an `OwnDefault`.

    Parameters
    ----------
    settings:
        One optimizer's settings as plain data: ``name`` (missing: `OptimizerConfig`'s default
        name) and any fields. Keys that are no such field, and fields whose ``None`` has no
        default (see `own_defaults`), are kept as they are.
    aliases:
        The caller's key → the `OptimizerConfig` field it is, e.g. ``{"lr": "learning_rate"}``.

    Returns
    -------
    dict
        A copy; unchanged when ``name`` is not an optimizer (nothing is known about it).
    """
    name = settings.get("name", OptimizerConfig.name)
    if name not in OPTIMIZER_NAMES:
        return dict(settings)
    own = own_defaults(name)
    fields = aliases or {}
    out = dict(settings)
    for key, value in settings.items():
        field = fields.get(key, key)
        if value is None and field in own:
            out[key] = OwnDefault(own[field], name)
    return out


def with_schedule_defaults(settings: Mapping[str, Any]) -> dict[str, Any]:
    """`with_own_defaults` of an optimizer section, and a ``schedule`` mapping's null ``peak_lr``
    as the optimizer's own rate: what a comparison of two sections sees. With a schedule the
    constant ``learning_rate`` is unused (the two are exclusive) and stays as given, so that a
    comparison names the rate the optimizer uses, the schedule's peak."""
    out = with_own_defaults(settings)
    schedule = out.get("schedule")
    if isinstance(schedule, dict):
        if "learning_rate" in settings:
            out["learning_rate"] = settings["learning_rate"]
        if schedule.get("peak_lr") is None:
            name = out.get("name", OptimizerConfig.name)
            own = with_own_defaults({"name": name, "learning_rate": None})
            out["schedule"] = {**schedule, "peak_lr": own["learning_rate"]}
    return out


#: Old key of an optimizer section → the key it is now (tjx-optim 0.6 took the constant rate as
#: ``lr``; it is the schedule's peak now).
RENAMED_KEYS = {"lr": "schedule.peak_lr"}


def migrate_section(settings: Mapping[str, Any], *, key: str = "optimizer") -> dict[str, Any]:
    """A copy of optimizer ``settings`` (plain data) in today's keys (`RENAMED_KEYS`); ``key``
    is the section's path in messages. An old key set beside its new one is a ``ValueError``:
    neither may silently win."""
    out = dict(settings)
    if "lr" in out:
        value = out.pop("lr")
        schedule = out.get("schedule")
        schedule = out["schedule"] = dict(schedule) if isinstance(schedule, dict) else {}
        if "peak_lr" in schedule:
            new = f"{key}.schedule.peak_lr"
            raise ValueError(f"{key}.lr: is {new} now, which is set too; keep only {new}")
        schedule["peak_lr"] = value
    return out


__all__ = ["RENAMED_KEYS", "OwnDefault", "migrate_section", "own_defaults"]
__all__ += ["with_own_defaults", "with_schedule_defaults"]
