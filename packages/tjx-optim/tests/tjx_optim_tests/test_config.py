"""Config validation: bad input raises ValueError naming the field and the allowed values."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.optim import (
    DEFAULT_LEARNING_RATES,
    OPTIMIZER_NAMES,
    SCHEDULE_NAMES,
    OptimizerConfig,
    ScheduleConfig,
    build_optimizer,
    build_schedule,
    check_precision,
    schedule_over,
    users_of,
)
from tjx.optim.schedules import WSD_DEFAULTS


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(name="adamax"), r"ScheduleConfig.name='adamax'.*allowed values: \['constant'"),
        (dict(peak_lr=0.0), r"ScheduleConfig.peak_lr=0.0 is out of range.*\(0, inf\)"),
        (dict(peak_lr=-1e-3), r"ScheduleConfig.peak_lr"),
        (dict(peak_lr=float("nan")), r"ScheduleConfig.peak_lr=nan must be a number"),
        (dict(warmup_steps=1.5), r"ScheduleConfig.warmup_steps=1.5 must be an integer \(steps\)"),
        (dict(warmup_steps=-0.1), r"or a float in \[0, 1\) \(that fraction of total_steps\)"),
        (dict(min_lr_ratio=1.5), r"ScheduleConfig.min_lr_ratio.*\[0, 1\]"),
        (dict(name="linear_warmup", warmup_steps=0), r"ScheduleConfig.warmup_steps=0"),
        (dict(decay_shape="exp"), r"ScheduleConfig.decay_shape='exp'.*'sqrt'"),
    ],
)
def test_schedule_config_rejects(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        ScheduleConfig(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "total", "pattern"),
    [
        (dict(warmup_steps=200), 100, r"warmup_steps=200 is longer than the run.*total_steps=100"),
        (dict(), 0, r"total_steps=0; allowed values: an integer >= 1"),
        (dict(), 2.5, r"total_steps=2.5; allowed values: an integer >= 1"),
        (dict(name="wsd", warmup_steps=90), 100, r"ScheduleConfig.decay_fraction=0.2 .*exceeds"),
        (dict(name="linear_warmup", warmup_steps=0.01), 20, r"makes no warmup step"),
    ],
)
def test_a_schedule_that_does_not_fit_its_run_is_refused(
    kwargs: dict, total: int, pattern: str
) -> None:
    """The rules that need the run's length are `schedule_over`'s, and so `build_schedule`'s
    with that length: a config is valid alone, its schedule may not fit a given run."""
    c = ScheduleConfig(**kwargs, peak_lr=1.0)
    with pytest.raises(ValueError, match=pattern):
        schedule_over(c, total)
    with pytest.raises(ValueError, match=pattern):
        build_schedule(c, total)


def test_a_float_warmup_below_one_is_that_share_of_the_run() -> None:
    """A warmup written as a fraction fits every run length; it is held as the steps it makes
    (rounded), and the schedule is the one of those steps."""
    steps = np.random.default_rng().integers(2, 5000)
    given = ScheduleConfig(warmup_steps=0.1, peak_lr=1.0)
    assert given.warmup_steps == 0.1  # the run's length is not the config's
    share = schedule_over(given, int(steps))
    assert share.warmup_steps == round(0.1 * steps) and isinstance(share.warmup_steps, int)
    same = dataclasses.replace(share, warmup_steps=share.warmup_steps)
    got, want = build_schedule(given, int(steps)), build_schedule(same, int(steps))
    assert [float(got(t)) for t in range(0, int(steps), 7)] == [
        float(want(t)) for t in range(0, int(steps), 7)
    ]
    assert schedule_over(ScheduleConfig(warmup_steps=0.0834), 600).warmup_steps == 50
    assert schedule_over(ScheduleConfig(warmup_steps=0.0834), 30).warmup_steps == 3
    assert schedule_over(ScheduleConfig(warmup_steps=0.5), 1).warmup_steps == 0  # round half even
    with pytest.raises(ValueError, match=r"warmup_steps=30 is longer than the run"):
        schedule_over(ScheduleConfig(warmup_steps=30), 20)  # steps stay steps


def test_schedule_config_over_is_schedule_over_with_a_warning() -> None:
    """0.16's ``ScheduleConfig.over`` is `schedule_over` (beside `build_schedule`) until 0.17: the
    same result and the same refusals, with a DeprecationWarning."""
    steps = int(np.random.default_rng().integers(2, 5000))
    given = ScheduleConfig(warmup_steps=0.1, peak_lr=1.0)
    with pytest.warns(DeprecationWarning, match="schedule_over"):
        old = given.over(steps)
    assert old == schedule_over(given, steps)
    with (
        pytest.warns(DeprecationWarning),
        pytest.raises(ValueError, match=r"warmup_steps=30 is longer than the run"),
    ):
        ScheduleConfig(warmup_steps=30).over(20)


def test_the_0_15_total_steps_field_still_works_with_a_warning() -> None:
    """tjx-optim 0.15 held the run's length in ``ScheduleConfig.total_steps``: until 0.17 it
    warns, is checked at once as before, and is the length a schedule built without one spans;
    a schedule built with no length at all spans 0.15's default of 10,000 steps, warning."""
    steps = int(np.random.default_rng().integers(20, 400))
    with pytest.warns(DeprecationWarning, match=r"ScheduleConfig.total_steps is deprecated"):
        old = ScheduleConfig(name="linear", warmup_steps=0.1, total_steps=steps, peak_lr=1.0)
    assert old.warmup_steps == round(0.1 * steps)  # resolved at once, as in 0.15
    new = build_schedule(ScheduleConfig(name="linear", warmup_steps=0.1, peak_lr=1.0), steps)
    ts = range(0, steps + 5, 3)
    assert [float(build_schedule(old)(t)) for t in ts] == [float(new(t)) for t in ts]
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match=r"longer than the run"):
        OptimizerConfig(schedule={"warmup_steps": 500, "total_steps": 100})
    with pytest.warns(DeprecationWarning, match=r"spans 10000 steps; pass total_steps"):
        default = build_schedule(ScheduleConfig(name="linear", peak_lr=1.0, min_lr_ratio=0.0))
    assert float(default(5000)) == pytest.approx(0.5)  # halfway down a 10,000-step decay


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        (dict(name="adamax"), r"OptimizerConfig.name='adamax'.*'adamw', 'adam', 'sgd'"),
        (dict(learning_rate=0.0), r"OptimizerConfig.learning_rate=0.0 is out of range"),
        (dict(learning_rate=-1.0), r"OptimizerConfig.learning_rate"),
        (dict(weight_decay=-0.1), r"OptimizerConfig.weight_decay=-0.1 is out of range.*\[0, inf\)"),
        (dict(b1=1.0), r"OptimizerConfig.b1=1.0 is out of range.*\[0, 1\)"),
        (dict(eps=-1.0), r"OptimizerConfig.eps"),
        (dict(clip_norm=0.0), r"OptimizerConfig.clip_norm"),
        (dict(loss_scale="static"), r"OptimizerConfig.loss_scale='static'.*\[None, 'dynamic'\]"),
        (dict(loss_scale="dynamic", skip_nonfinite=False), r"OptimizerConfig.skip_nonfinite"),
        (dict(accumulation_steps=0), r"OptimizerConfig.accumulation_steps"),
        (dict(loss_scale_min=4.0, loss_scale_init=2.0), r"loss_scale_min <= loss_scale_init"),
        (dict(loss_scale_init=2.0**30), r"loss_scale_init=1073741824.0 with"),
        (dict(loss_scale_max=0.5), r"OptimizerConfig.loss_scale_max=0.5"),
        (dict(accumulation_mode="loop"), r"OptimizerConfig.accumulation_mode='loop'"),
        (dict(decay_mask_regex="("), r"OptimizerConfig.decay_mask_regex"),
        (dict(no_decay_regex=3), r"OptimizerConfig.no_decay_regex"),
        (dict(nesterov="yes"), r"OptimizerConfig.nesterov='yes'; allowed values: \[True, False\]"),
        (dict(learning_rate=1e-3, schedule=ScheduleConfig()), r"both set"),
        (dict(schedule=3), r"OptimizerConfig.schedule=3"),
        (dict(schedule={"name": "cosine", "warmup": 3}), r"unknown fields \['warmup'\]"),
        (dict(muon_adam_lr_ratio=0), r"OptimizerConfig.muon_adam_lr_ratio"),
    ],
)
def test_optimizer_config_rejects(kwargs: dict, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        OptimizerConfig(**kwargs)


def test_from_dict_and_defaults() -> None:
    c = OptimizerConfig.from_dict({"name": "lion", "schedule": {"name": "wsd", "peak_lr": 1e-4}})
    assert isinstance(c.schedule, ScheduleConfig) and c.schedule.peak_lr == 1e-4
    r = c.resolved()
    assert (r.b1, r.b2, r.weight_decay, r.eps) == (0.9, 0.99, 0.1, None)
    assert OptimizerConfig(name="adamw", b2=0.95).resolved().b2 == 0.95
    assert OptimizerConfig(name="muon").resolved().momentum == 0.95
    with pytest.raises(ValueError, match=r"unknown fields \['lr'\]"):
        OptimizerConfig.from_dict({"lr": 1.0})


@pytest.mark.parametrize("name", OPTIMIZER_NAMES)
def test_every_name_builds(name: str) -> None:
    tx = build_optimizer(OptimizerConfig(name=name))
    assert callable(tx.init) and callable(tx.update)


@pytest.mark.parametrize("field", ["momentum", "nesterov"])
@pytest.mark.parametrize("name", ["adamw", "adam", "lamb", "lion", "adafactor"])
def test_momentum_is_refused_where_it_would_be_ignored(name: str, field: str) -> None:
    value = True if field == "nesterov" else 0.9
    message = (
        rf"^OptimizerConfig\.{field}: only sgd, muon use it \(OptimizerConfig\.name is '{name}', "
        rf"{field}={value!r}\); set it to None$"
    )
    with pytest.raises(ValueError, match=message):
        OptimizerConfig(name=name, **{field: value})
    # False is a setting too: the optimizer has no Nesterov switch to turn off.
    with pytest.raises(ValueError, match=field):
        OptimizerConfig(name=name, **{field: False if field == "nesterov" else 0.0})


@pytest.mark.parametrize("name", ["sgd", "muon"])
def test_momentum_optimizers_take_it(name: str) -> None:
    c = OptimizerConfig(name=name, momentum=0.5, nesterov=True).resolved()
    assert (c.momentum, c.nesterov) == (0.5, True)
    assert users_of("momentum") == users_of("nesterov") == ("sgd", "muon")
    assert users_of("b1") == ("adamw", "adam", "lamb", "lion", "muon")


@pytest.mark.parametrize("field", ["decay_fraction", "decay_shape"])
@pytest.mark.parametrize("name", [n for n in SCHEDULE_NAMES if n != "wsd"])
def test_wsd_decay_settings_are_refused_elsewhere(name: str, field: str) -> None:
    value = 0.5 if field == "decay_fraction" else "sqrt"
    message = (
        rf"^ScheduleConfig\.{field}: only the 'wsd' schedule uses it \(ScheduleConfig\.name is "
        rf"'{name}'\); set it to None$"
    )
    warmup = 1 if name == "linear_warmup" else 0
    with pytest.raises(ValueError, match=message):
        ScheduleConfig(name=name, warmup_steps=warmup, **{field: value})
    assert getattr(ScheduleConfig(name=name, warmup_steps=warmup), field) is None


def test_wsd_fills_unset_decay_settings_with_its_defaults() -> None:
    c = ScheduleConfig(name="wsd", peak_lr=1e-3)
    assert (c.decay_fraction, c.decay_shape) == tuple(WSD_DEFAULTS.values())
    assert list(WSD_DEFAULTS) == ["decay_fraction", "decay_shape"]
    mine = ScheduleConfig(name="wsd", decay_fraction=0.5, decay_shape="sqrt")
    assert (mine.decay_fraction, mine.decay_shape) == (0.5, "sqrt")
    assert dataclasses.replace(c, peak_lr=1.0) == dataclasses.replace(
        mine, peak_lr=1.0, **WSD_DEFAULTS
    )
    # The same schedule as with the defaults spelled out.
    spelled = ScheduleConfig(name="wsd", peak_lr=1e-3, **WSD_DEFAULTS)
    steps = range(0, 101, 7)
    got, want = build_schedule(c, 100), build_schedule(spelled, 100)
    assert [got(s) for s in steps] == [want(s) for s in steps]


@pytest.mark.parametrize(
    ("param", "compute", "loss_scale", "pattern"),
    [
        ("float16", "float32", "dynamic", r"^param_dtype=float16: float16 parameters are not"),
        (
            "float32",
            "float16",
            None,
            r"^compute_dtype=float16 needs OptimizerConfig\.loss_scale='dynamic' \(got None\)",
        ),
    ],
)
def test_check_precision_refuses(
    param: str, compute: str, loss_scale: str | None, pattern: str
) -> None:
    with pytest.raises(ValueError, match=pattern):
        check_precision(
            OptimizerConfig(loss_scale=loss_scale), param_dtype=param, compute_dtype=compute
        )


@pytest.mark.parametrize(
    ("param", "compute", "loss_scale"),
    [
        ("float32", "float32", None),
        ("float32", "bfloat16", None),
        ("bfloat16", "bfloat16", None),
        ("float32", "float16", "dynamic"),
        (np.float32, jnp.float16, "dynamic"),
        ("float32", "float32", "dynamic"),
    ],
)
def test_check_precision_accepts(param: object, compute: object, loss_scale: str | None) -> None:
    check_precision(
        OptimizerConfig(loss_scale=loss_scale), param_dtype=param, compute_dtype=compute
    )


def test_a_schedule_without_a_rate_takes_its_optimizers_default_rate() -> None:
    assert ScheduleConfig().peak_lr is None
    for name, rate in DEFAULT_LEARNING_RATES.items():
        config = OptimizerConfig(name=name, schedule=ScheduleConfig(warmup_steps=0))
        assert config.schedule is not None and config.schedule.peak_lr == rate
        assert float(build_schedule(config.schedule, 100)(0)) == pytest.approx(rate)
    mine = OptimizerConfig(name="muon", schedule=ScheduleConfig(peak_lr=0.5))
    assert mine.schedule is not None and mine.schedule.peak_lr == 0.5
    with pytest.raises(ValueError, match="ScheduleConfig.peak_lr is None: give the peak rate"):
        build_schedule(ScheduleConfig(), 100)
