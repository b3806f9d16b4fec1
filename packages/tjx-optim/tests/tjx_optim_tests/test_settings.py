"""config_from_settings: an app's optimizer section → the resolved OptimizerConfig, in its words."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import pytest

from tjx.optim import (
    DEFAULT_LEARNING_RATES,
    OPTIMIZER_NAMES,
    OptimizerConfig,
    ScheduleConfig,
    check_precision,
    config_from_settings,
    own_defaults,
)
from tjx.optim.config import WSD_DEFAULTS

# How a trainer names its settings (section `optimizer:`, run length `train.steps`, dtypes).
TRAINER = {
    "settings": "optimizer",
    "total_steps": "train.steps",
    "param_dtype": "model.param_dtype",
    "compute_dtype": "model.compute_dtype",
}
# The trainer's rewording before the packages owned it (its `_KEYS` less YAML's null): the
# reference the package's messages must equal, byte for byte.
TRAINER_WORDS = (
    ("ScheduleConfig.peak_lr", "optimizer.lr"),
    ("ScheduleConfig.total_steps", "train.steps"),
    ("ScheduleConfig.", "optimizer.schedule."),
    ("OptimizerConfig.", "optimizer."),
    ("param_dtype=", "model.param_dtype="),
    ("compute_dtype=", "model.compute_dtype="),
)


def section(name: str, **changes: Any) -> dict[str, Any]:
    """A whole section as a trainer holds it: every key present, the optimizer's own left None."""
    schedule = {
        "name": "cosine",
        "warmup_steps": 10,
        "min_lr_ratio": 0.1,
        "decay_fraction": None,
        "decay_shape": None,
        **changes.pop("schedule", {}),
    }
    return {
        "name": name,
        "lr": None,
        "b1": None,
        "b2": None,
        "eps": None,
        "weight_decay": None,
        "momentum": None,
        "nesterov": None,
        "clip_norm": 1.0,
        "accumulation_steps": 2,
        "loss_scale": None,
        "skip_nonfinite": True,
        "schedule": schedule,
        **changes,
    }


def trainer_words(message: str) -> str:
    for theirs, ours in TRAINER_WORDS:
        message = message.replace(theirs, ours)
    return message


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_a_bare_name_resolves_to_the_defaults_built_by_hand(name: str) -> None:
    got = config_from_settings({"name": name}, total_steps=100)
    lr = DEFAULT_LEARNING_RATES[name]
    want = OptimizerConfig(name=name, schedule=ScheduleConfig(peak_lr=lr, total_steps=100))
    assert got == want.resolved()
    assert got != want  # resolved: the optimizer's own values are filled in, not left None
    for field, value in own_defaults(name).items():
        if field != "learning_rate":  # the rate is the schedule's peak
            assert getattr(got, field) == value


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_a_whole_section_builds_what_the_trainer_built(name: str) -> None:
    got = config_from_settings(section(name), total_steps=500)
    schedule = ScheduleConfig(
        name="cosine",
        peak_lr=DEFAULT_LEARNING_RATES[name],
        warmup_steps=10,
        total_steps=500,
        min_lr_ratio=0.1,
    )
    want = OptimizerConfig(
        name=name, schedule=schedule, clip_norm=1.0, accumulation_steps=2, skip_nonfinite=True
    )
    assert got == want.resolved()


def test_lr_none_or_missing_is_the_default_rate_and_a_given_lr_is_the_peak() -> None:
    assert DEFAULT_LEARNING_RATES["sgd"] != DEFAULT_LEARNING_RATES["adamw"]
    for settings in ({"name": "sgd"}, {"name": "sgd", "lr": None}):
        got = config_from_settings(settings, total_steps=10)
        assert got.schedule is not None
        assert got.schedule.peak_lr == DEFAULT_LEARNING_RATES["sgd"]
    got = config_from_settings({"name": "sgd", "lr": 0.5}, total_steps=10)
    assert got.schedule is not None and got.schedule.peak_lr == 0.5
    # No name: OptimizerConfig's default optimizer and its rate.
    got = config_from_settings({}, total_steps=10)
    assert got.name == OptimizerConfig.name
    assert got.schedule is not None
    assert got.schedule.peak_lr == DEFAULT_LEARNING_RATES[OptimizerConfig.name]


def test_given_values_pass_on_and_missing_keys_take_the_class_defaults() -> None:
    assert config_from_settings({"clip_norm": None}, total_steps=10).clip_norm is None
    assert config_from_settings({}, total_steps=10).clip_norm == OptimizerConfig.clip_norm
    got = config_from_settings({"b2": 0.95, "schedule": {"name": "linear"}}, total_steps=10)
    assert got.b2 == 0.95 and got.b1 == own_defaults("adamw")["b1"]
    assert got.schedule == ScheduleConfig(name="linear", peak_lr=3e-4, total_steps=10)
    for schedule in ({}, None):
        got = config_from_settings({"schedule": schedule}, total_steps=7)
        assert got.schedule == ScheduleConfig(peak_lr=3e-4, total_steps=7)


def test_wsd_decay_settings_are_resolved() -> None:
    got = config_from_settings(section("adamw", schedule={"name": "wsd"}), total_steps=100)
    assert got.schedule is not None
    assert got.schedule.decay_fraction == WSD_DEFAULTS["decay_fraction"]
    assert got.schedule.decay_shape == WSD_DEFAULTS["decay_shape"]


# Each class of error, with what the classes themselves say about the same values (reference).
def _schedule_error(**fields: Any) -> str:
    with pytest.raises(ValueError) as err:
        ScheduleConfig(**fields)
    return str(err.value)


def _optimizer_error(**fields: Any) -> str:
    with pytest.raises(ValueError) as err:
        OptimizerConfig(**fields)
    return str(err.value)


def _precision_error(config: OptimizerConfig, param: str, compute: str) -> str:
    with pytest.raises(ValueError) as err:
        check_precision(config, param_dtype=param, compute_dtype=compute)
    return str(err.value)


ADAMW = OptimizerConfig(schedule=ScheduleConfig(peak_lr=3e-4, total_steps=100)).resolved()
ERRORS = [
    pytest.param(
        section("adamw", schedule={"warmup_steps": 200}),
        {},
        lambda: _schedule_error(warmup_steps=200, total_steps=100),
        "optimizer.schedule.warmup_steps=200 is longer than the run; allowed values: "
        "0 <= warmup_steps <= train.steps=100",
        id="warmup-longer-than-the-run",
    ),
    pytest.param(
        section("adamw", momentum=0.9),
        {},
        lambda: _optimizer_error(name="adamw", momentum=0.9),
        "optimizer.momentum: only sgd, muon use it (optimizer.name is 'adamw', momentum=0.9); "
        "set it to None",
        id="momentum-on-adamw",
    ),
    pytest.param(
        section("adamw", schedule={"decay_fraction": 0.3}),
        {},
        lambda: _schedule_error(decay_fraction=0.3),
        "optimizer.schedule.decay_fraction: only the 'wsd' schedule uses it "
        "(optimizer.schedule.name is 'cosine'); set it to None",
        id="wsd-only-key-on-cosine",
    ),
    pytest.param(
        section("adamw", lr=0.0),
        {},
        lambda: _schedule_error(peak_lr=0.0),
        "optimizer.lr=0.0 is out of range; allowed values: (0, inf)",
        id="lr-is-the-peak",
    ),
    pytest.param(
        section("adamax"),
        {},
        lambda: _optimizer_error(name="adamax"),
        "optimizer.name='adamax' is not allowed; allowed values: ['adamw', 'adam', 'sgd', "
        "'lamb', 'lion', 'adafactor', 'muon']",
        id="unknown-optimizer",
    ),
    pytest.param(
        section("adamw"),
        {"param_dtype": "float16", "compute_dtype": "float16"},
        lambda: _precision_error(ADAMW, "float16", "float16"),
        "model.param_dtype=float16: float16 parameters are not supported (scaled gradients "
        "overflow, small updates vanish); allowed values: float32 or bfloat16",
        id="float16-params",
    ),
    pytest.param(
        section("adamw"),
        {"param_dtype": "float32", "compute_dtype": "float16"},
        lambda: _precision_error(ADAMW, "float32", "float16"),
        "model.compute_dtype=float16 needs optimizer.loss_scale='dynamic' (got None): small "
        "float16 gradients flush to zero without it",
        id="float16-compute-without-loss-scaling",
    ),
]


@pytest.mark.parametrize(("settings", "dtypes", "reference", "message"), ERRORS)
def test_errors_speak_the_callers_names(
    settings: dict[str, Any], dtypes: dict[str, str], reference: Any, message: str
) -> None:
    with pytest.raises(ValueError) as err:
        config_from_settings(settings, total_steps=100, names=TRAINER, **dtypes)
    assert str(err.value) == message
    assert message == trainer_words(reference())  # what the trainer printed before


def test_without_names_messages_use_the_settings_own_keys() -> None:
    cases = [
        (section("adamw", schedule={"warmup_steps": 200}), "settings.schedule.warmup_steps=200"),
        (section("adamw", momentum=0.9), "settings.momentum: only sgd, muon use it"),
        (section("adamw", lr=-1.0), "settings.lr=-1.0 is out of range"),
    ]
    for settings, start in cases:
        with pytest.raises(ValueError) as err:
            config_from_settings(settings, total_steps=100)
        assert str(err.value).startswith(start), str(err.value)
    with pytest.raises(ValueError, match=r"<= total_steps=100$"):
        config_from_settings(section("adamw", schedule={"warmup_steps": 200}), total_steps=100)
    with pytest.raises(ValueError, match=r"^param_dtype=float16: "):
        config_from_settings({}, total_steps=10, param_dtype="float16")
    # Names left out of `names` keep their own.
    with pytest.raises(ValueError, match=r"^opt\.schedule\.warmup_steps=200 .*total_steps=100$"):
        config_from_settings(
            section("adamw", schedule={"warmup_steps": 200}),
            total_steps=100,
            names={"settings": "opt"},
        )


def test_one_dtype_alone_is_checked_against_float32_for_the_other() -> None:
    with pytest.raises(ValueError, match=r"^p=float16: float16 parameters"):
        config_from_settings({}, total_steps=10, param_dtype="float16", names={"param_dtype": "p"})
    names = {"compute_dtype": "c", "settings": "s"}
    with pytest.raises(ValueError, match=r"^c=float16 needs s\.loss_scale='dynamic'"):
        config_from_settings({}, total_steps=10, compute_dtype="float16", names=names)
    # Dynamic loss scaling makes float16 compute trainable; dtype objects are taken too.
    got = config_from_settings({"loss_scale": "dynamic"}, total_steps=10, compute_dtype=jnp.float16)
    assert got.loss_scale == "dynamic"
    # Without dtypes nothing about precision is checked.
    want = OptimizerConfig(schedule=ScheduleConfig(peak_lr=3e-4, total_steps=10)).resolved()
    assert config_from_settings({"loss_scale": None}, total_steps=10) == want


def test_unknown_keys_are_refused_naming_them_and_the_allowed_keys() -> None:
    with pytest.raises(ValueError) as err:
        config_from_settings({"name": "adamw", "lr_max": 1.0, "beta1": 0.9}, total_steps=10)
    assert str(err.value) == (
        f"settings got unknown keys ['beta1', 'lr_max']; allowed keys: {list(section('adamw'))}"
    )
    with pytest.raises(ValueError) as err:
        config_from_settings({"schedule": {"peak_lr": 1.0}}, total_steps=10, names=TRAINER)
    assert str(err.value) == (
        "optimizer.schedule got unknown keys ['peak_lr']; allowed keys: ['name', "
        "'warmup_steps', 'min_lr_ratio', 'decay_fraction', 'decay_shape']"
    )
    with pytest.raises(ValueError, match=r"^optimizer\.schedule='cosine' must be a mapping"):
        config_from_settings({"schedule": "cosine"}, total_steps=10, names=TRAINER)
