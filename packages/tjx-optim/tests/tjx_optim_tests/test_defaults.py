"""What a setting left None stands for, on settings given as plain data."""

from __future__ import annotations

import dataclasses

import pytest

from tjx.optim import (
    DEFAULT_LEARNING_RATES,
    OPTIMIZER_NAMES,
    OptimizerConfig,
    OwnDefault,
    migrate_section,
    own_defaults,
    with_own_defaults,
    with_schedule_defaults,
)


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_own_defaults_are_what_resolved_fills(name: str) -> None:
    own = own_defaults(name)
    assert own.pop("learning_rate") == DEFAULT_LEARNING_RATES[name]
    blank = dataclasses.asdict(OptimizerConfig(name=name))
    filled = dataclasses.asdict(OptimizerConfig(name=name).resolved())
    assert own == {k: v for k, v in filled.items() if blank[k] is None and v is not None}


def test_own_defaults_of_an_unknown_optimizer() -> None:
    with pytest.raises(
        ValueError, match=r"name='adamax' is not allowed; allowed values: \['adamw'"
    ):
        own_defaults("adamax")


def test_nulls_become_the_optimizers_own_values() -> None:
    settings = {
        "name": "adamw",
        "lr": None,
        "b1": 0.8,
        "b2": None,
        "momentum": None,  # adamw has none: stays None
        "clip_norm": None,  # None means no clipping, not a default value
        "schedule": {"name": "cosine"},
    }
    got = with_own_defaults(settings, aliases={"lr": "learning_rate"})
    assert got == {**settings, "lr": 3e-4, "b2": 0.999}
    assert repr(got["b2"]) == "0.999 (adamw's default)"
    assert isinstance(got["lr"], OwnDefault) and got["lr"].optimizer == "adamw"
    assert got["b1"] == 0.8 and not isinstance(got["b1"], OwnDefault)
    assert got["momentum"] is None and got["clip_norm"] is None
    assert settings["b2"] is None  # the input is left alone
    # Without the alias "lr" is no field of tjx.optim's: kept as it is.
    assert with_own_defaults(settings)["lr"] is None


def test_a_missing_name_is_the_default_optimizer_and_an_unknown_one_is_left_alone() -> None:
    assert with_own_defaults({"b2": None}) == {"b2": 0.999}
    assert with_own_defaults({"name": "adamax", "b2": None}) == {"name": "adamax", "b2": None}


def test_a_bool_default() -> None:
    got = with_own_defaults({"name": "sgd", "nesterov": None})
    assert got["nesterov"] == False  # noqa: E712 (OwnDefault compares as the value it stands for)
    assert got["nesterov"] != True  # noqa: E712
    assert repr(got["nesterov"]) == "False (sgd's default)"


def test_own_default_compares_and_hashes_as_its_value() -> None:
    a = OwnDefault(0.999, "adamw")
    assert a == 0.999 and a != 0.95
    assert 0.999 == a and 0.95 != a  # noqa: SIM300 (the float on the left: the reflected test)
    assert a == OwnDefault(0.999, "lamb")
    assert hash(a) == hash(0.999) and {a: 1}[0.999] == 1
    assert a != "0.999"


def test_a_null_peak_rate_compares_as_the_optimizers_own_rate():
    got = with_schedule_defaults({"name": "sgd", "schedule": {"peak_lr": None}})
    assert got["schedule"]["peak_lr"] == DEFAULT_LEARNING_RATES["sgd"]
    assert repr(got["schedule"]["peak_lr"]).endswith("(sgd's default)")
    set_rate = {"name": "adamw", "b2": None, "schedule": {"peak_lr": 0.5}}
    assert with_schedule_defaults(set_rate) == {**set_rate, "b2": 0.999}


def test_with_a_schedule_the_unused_constant_rate_is_no_difference_between_optimizers():
    """A resume that changes the optimizer is refused by the settings it changes: with a schedule
    those are the name and the schedule's peak (when left to the optimizer), not the constant
    rate the run never used (it was listed as ``0.0003 (adamw's default) → 0.0001 (lion's
    default)``)."""
    adamw, lion = (
        with_schedule_defaults({"name": n, "learning_rate": None, "schedule": {"peak_lr": p}})
        for n, p in (("adamw", 0.01), ("lion", 0.01))
    )
    assert adamw["learning_rate"] is None and lion["learning_rate"] is None
    assert adamw["schedule"] == lion["schedule"]
    constant = with_schedule_defaults({"name": "lion", "learning_rate": None, "schedule": None})
    assert constant["learning_rate"] == DEFAULT_LEARNING_RATES["lion"]


def test_the_old_lr_key_moves_to_the_schedules_peak_and_may_not_be_set_twice():
    old = {"name": "adamw", "lr": 0.1, "schedule": {"warmup_steps": 5}}
    assert migrate_section(old) == {
        "name": "adamw", "schedule": {"warmup_steps": 5, "peak_lr": 0.1}}  # fmt: skip
    assert old["schedule"] == {"warmup_steps": 5}  # the input is not modified
    assert migrate_section({"lr": 2, "schedule": None}) == {"schedule": {"peak_lr": 2}}
    assert migrate_section({"b1": 0.9}) == {"b1": 0.9}
    with pytest.raises(ValueError) as err:
        migrate_section({"lr": 1, "schedule": {"peak_lr": 2}}, key="opt")
    new = "opt.schedule.peak_lr"
    assert str(err.value) == f"opt.lr: is {new} now, which is set too; keep only {new}"
