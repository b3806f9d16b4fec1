"""Schedules at their key steps, composition, and the PNG helper."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tjx.optim import (
    ScheduleConfig,
    build_schedule,
    constant,
    join,
    linear_warmup,
    plot_schedule,
    schedule_values,
    warmup_stable_decay,
)

PEAK = 1e-3


def _at(config: ScheduleConfig, total: int, *steps: int) -> list[float]:
    """The rates at ``steps`` of ``config``'s schedule over a run of ``total`` steps."""
    s = build_schedule(config, total)
    return [float(s(t)) for t in steps]


def test_constant_and_linear_warmup() -> None:
    assert _at(ScheduleConfig("constant", PEAK, 0), 100, 0, 50, 1000) == pytest.approx([PEAK] * 3)
    got = _at(ScheduleConfig("linear_warmup", PEAK, 10), 100, 0, 5, 10, 99)
    assert got == pytest.approx([0.0, PEAK / 2, PEAK, PEAK])
    got = _at(ScheduleConfig("constant", PEAK, 4, init_lr_ratio=0.5), 100, 0, 2, 4)
    assert got == pytest.approx([PEAK / 2, 0.75 * PEAK, PEAK])


def test_cosine_to_floor() -> None:
    c = ScheduleConfig("cosine", PEAK, warmup_steps=10, min_lr_ratio=0.1)
    got = _at(c, 110, 0, 5, 10, 60, 110, 500)
    floor = 0.1 * PEAK
    mid = floor + (PEAK - floor) * 0.5 * (1 + math.cos(math.pi * 0.5))
    assert got == pytest.approx([0.0, PEAK / 2, PEAK, mid, floor, floor], rel=1e-5)


def test_linear_decay() -> None:
    c = ScheduleConfig("linear", PEAK, warmup_steps=0, min_lr_ratio=0.0)
    assert _at(c, 100, 0, 25, 100, 200) == pytest.approx(
        [PEAK, 0.75 * PEAK, 0.0, 0.0], rel=1e-6, abs=1e-12
    )


def test_inverse_sqrt_matches_transformer_rule() -> None:
    w = 16
    c = ScheduleConfig("inverse_sqrt", PEAK, warmup_steps=w)
    steps = [1, 8, 16, 64, 400]
    want = [PEAK * min(t / w, math.sqrt(w / t)) for t in steps]
    assert _at(c, 1000, *steps) == pytest.approx(want, rel=1e-5)
    # Without warmup: peak / sqrt(step + 1) (the documented rule; no division by zero at 0).
    c0 = ScheduleConfig("inverse_sqrt", PEAK, warmup_steps=0)
    assert _at(c0, 1000, 0, 3, 99) == pytest.approx([PEAK, PEAK / 2, PEAK / 10], rel=1e-6)


@pytest.mark.parametrize("shape", ["linear", "cosine", "sqrt"])
def test_warmup_stable_decay(shape: str) -> None:
    c = ScheduleConfig("wsd", PEAK, 10, min_lr_ratio=0.0, decay_fraction=0.2, decay_shape=shape)
    # warmup 0..10, stable 10..80, decay 80..100 to the floor.
    got = _at(c, 100, 5, 10, 50, 80, 90, 100, 150)
    half = {"linear": 0.5, "cosine": 0.5, "sqrt": 1 - math.sqrt(0.5)}[shape]
    assert got == pytest.approx([PEAK / 2, PEAK, PEAK, PEAK, half * PEAK, 0.0, 0.0], abs=1e-9)


def test_composable_pieces() -> None:
    s = join([linear_warmup(2.0, 4), constant(1.0), constant(0.5)], [4, 10])
    assert [float(s(t)) for t in (0, 2, 4, 9, 10, 20)] == pytest.approx([0, 1, 1, 1, 0.5, 0.5])
    w = warmup_stable_decay(1.0, warmup_steps=0, total_steps=10, decay_steps=0)
    assert float(w(9)) == 1.0
    with pytest.raises(ValueError, match="boundaries"):
        join([constant(1.0)], [3])
    with pytest.raises(ValueError, match="decay_shape"):
        warmup_stable_decay(1.0, warmup_steps=0, total_steps=10, decay_steps=2, decay_shape="exp")


def test_schedule_is_jittable_on_traced_steps() -> None:
    import jax
    import jax.numpy as jnp

    s = build_schedule(ScheduleConfig("wsd", PEAK, 3, decay_shape="sqrt"), 20)
    vals = jax.jit(jax.vmap(s))(jnp.arange(25))
    np.testing.assert_allclose(np.asarray(vals), [float(s(t)) for t in range(25)], rtol=1e-6)


def test_plot_schedule_writes_png(tmp_path: Path) -> None:
    s = build_schedule(ScheduleConfig("cosine", PEAK, 5), 50)
    out = plot_schedule(s, 50, tmp_path / "sub" / "lr.png", title="cosine")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000
    vals = schedule_values(s, 50)
    assert vals.shape == (50,) and vals.max() == pytest.approx(PEAK)
    with pytest.raises(ValueError, match="steps"):
        schedule_values(s, 0)
