"""DivergenceGuard: bad steps (non-finite loss or a skipped update) counted in a row, one late."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import DivergenceGuard


def _out(loss: float, skipped: bool) -> dict[str, object]:
    return {"loss": jnp.asarray(loss, jnp.float32), "skipped": jnp.asarray(skipped)}


def test_guard_counts_bad_steps_in_a_row_one_step_late(capsys):
    guard = DivergenceGuard(limit=3)
    rng = np.random.default_rng(0)
    losses = rng.uniform(1.0, 5.0, 3)
    guard.push(1, _out(losses[0], False))
    guard.push(2, _out(float("nan"), False))  # judges step 1 only
    assert guard.streak == 0
    guard.push(3, _out(losses[1], True))  # step 2 bad: non-finite loss
    guard.push(4, _out(losses[2], False))  # step 3 bad: skipped
    assert guard.streak == 2 and guard.diverged is None
    guard.push(5, _out(float("inf"), False))  # step 4 good: the streak ends
    assert guard.streak == 0 and guard.first_bad is None
    for step in (6, 7):
        guard.push(step, _out(float("nan"), True))
    assert guard.streak == 2 and guard.diverged is None
    guard.flush()  # step 7 judged now
    assert guard.diverged is not None and guard.diverged.startswith(
        "training diverged: steps 5–7 (3 in a row)"
    )
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "warning: step 2: loss is not finite" in err
    assert "the run stops after max_bad_steps=3 such steps in a row" in err


def test_messages_use_the_callers_names(capsys):
    guard = DivergenceGuard(2, limit_name="train.max_bad_steps", advice="lower optimizer.lr")
    guard.push(1, {"loss": 2.5})  # no ``skipped`` key: only the loss is judged
    guard.push(2, _out(float("nan"), True))
    guard.flush()
    assert guard.streak == 1 and guard.diverged is None
    guard.flush()  # nothing held: a no-op
    guard.push(3, _out(1.0, True))
    guard.flush()
    assert guard.diverged == (
        "training diverged: steps 2–3 (2 in a row) had a non-finite loss or a skipped update "
        "(last loss 1); lower optimizer.lr"
    )
    err = capsys.readouterr().err
    assert "warning: step 2: its update was skipped (non-finite gradients) (loss nan)" in err
    assert "train.max_bad_steps=2" in err


def test_limit_must_be_positive():
    with pytest.raises(ValueError, match="limit must be >= 1; got 0"):
        DivergenceGuard(0)


def test_a_run_ending_inside_a_nonfinite_streak_is_diverged(capsys):
    rng = np.random.default_rng(3)
    guard = DivergenceGuard(25, limit_name="train.max_bad_steps", advice="lower optimizer.lr")
    guard.push(1, _out(rng.uniform(1.0, 5.0), False))
    for step in range(2, 21):  # 19 bad steps: under the limit
        guard.push(step, _out(float("nan"), False))
    assert guard.diverged is None
    guard.end()
    assert guard.diverged == (
        "training ended inside a non-finite streak: steps 2–20 (19 in a row, under "
        "train.max_bad_steps=25) had a non-finite loss or a skipped update (last loss nan); "
        "lower optimizer.lr"
    )
    capsys.readouterr()


def test_a_run_may_end_in_a_tolerated_streak_of_skipped_updates(capsys):
    # A dynamic loss scale backing off skips updates with a finite loss: the state is unchanged.
    rng = np.random.default_rng(4)
    for skips, tolerance, diverged in [(2, 2, False), (3, 2, True), (1, 0, True)]:
        guard = DivergenceGuard(25, end_tolerance=tolerance)
        guard.push(1, _out(rng.uniform(1.0, 5.0), False))
        for step in range(2, 2 + skips):
            guard.push(step, _out(rng.uniform(1.0, 5.0), True))
        guard.end()
        assert guard.streak == skips and (guard.diverged is not None) == diverged, skips
    # A non-finite loss anywhere in the streak is never tolerated, even if the last is finite.
    guard = DivergenceGuard(25, end_tolerance=10)
    guard.push(1, _out(float("nan"), True))
    guard.push(2, _out(rng.uniform(1.0, 5.0), True))
    guard.end()
    assert guard.diverged is not None and "steps 1–2 (2 in a row" in guard.diverged
    fresh = DivergenceGuard(3)
    fresh.end()  # no step judged: nothing to say
    assert fresh.diverged is None
    capsys.readouterr()
