"""SpikeDetector: a step whose loss lies ``sigma`` deviations above the rolling mean of the steps
before it, read one step late."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from tjx.metrics import SpikeDetector


def _marked(detector, losses):
    found = [s for step, loss in enumerate(losses, 1) if (s := detector.push(step, loss))]
    last = detector.flush()
    return found + ([last] if last else [])


def test_a_spike_is_marked_against_a_reference_on_fresh_noise():
    """Fresh noise with planted spikes: exactly the planted steps, each judged against numpy's
    mean and std of the window before it (spikes left out of the window)."""
    rng = np.random.default_rng()
    losses = list(3.0 - np.linspace(0, 1, 120) * 0.5 + rng.normal(0, 0.02, 120))
    planted = sorted(int(s) for s in rng.choice(np.arange(40, 120), 4, replace=False))
    for step in planted:
        losses[step - 1] += 1.0  # 50 deviations: unmistakable
    found = _marked(SpikeDetector(sigma=6.0, window=20), losses)
    assert [s.step for s in found] == planted
    kept = [x for i, x in enumerate(losses, 1) if i not in planted]
    for spike in found:
        before = [x for i, x in enumerate(losses[: spike.step - 1], 1) if i not in planted][-20:]
        assert spike.mean == pytest.approx(np.mean(before), rel=1e-12)
        assert spike.std == pytest.approx(np.std(before), rel=1e-12)
        assert spike.sigmas == pytest.approx((spike.loss - spike.mean) / spike.std)
    assert len(kept) == 116


def test_warmup_nonfinite_and_device_values():
    detector = SpikeDetector(sigma=2.0, window=4)
    # the first 4 steps fill the window: a fall there is no spike
    losses = [9.0, 5.0, 3.0, 2.9, float("nan"), 3.0, 2.95, 8.0]
    found = _marked(detector, [jnp.float32(x) for x in losses])
    assert [s.step for s in found] == [8]


def test_a_resumed_detector_marks_what_the_uninterrupted_one_marks():
    """Stopped after step k (flushed, its window kept as a checkpoint keeps it) and resumed in a
    new detector: the same spikes as one detector over all the steps, on fresh noise with a
    spike planted just after the stop (inside the warmup a fresh detector would need)."""
    rng = np.random.default_rng()
    losses = list(3.0 + rng.normal(0, 0.02, 60))
    stop = int(rng.integers(20, 50))
    losses[stop] += 1.0  # step stop + 1
    whole = _marked(SpikeDetector(sigma=6.0, window=10), losses)
    first = SpikeDetector(sigma=6.0, window=10)
    found = _marked(first, losses[:stop])
    again = SpikeDetector(sigma=6.0, window=10)
    again.resume(first.history)
    found += [s for i, x in enumerate(losses[stop:], stop + 1) if (s := again.push(i, x))]
    found += [s for s in [again.flush()] if s]
    assert found == whole and stop + 1 in [s.step for s in whole]
    assert len(first.history) == 10  # the window's length, whatever the steps before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"sigma": 0.0}, "sigma must be > 0"), ({"sigma": 1.0, "window": 1}, "window must be >= 2")],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SpikeDetector(**kwargs)
