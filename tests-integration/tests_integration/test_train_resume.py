"""Determinism and bit-exact resume (separate processes, CPU).

* The same config and seed give bit-identical losses (50 steps, dropout on).
* Stopping at step k (``train.stop_at``, the same save-and-exit path as a signal) and resuming gives
  the losses and the parameters of an uninterrupted run, bit for bit — data iterator included.
"""

from __future__ import annotations

from tests_integration._helpers_apps import SMALL, check_ok, final, train, train_losses

STEPS = 50
SETS = [*SMALL, f"train.steps={STEPS}", "train.eval_every=0", "model.dropout=0.1"]


def test_same_seed_same_losses_and_resume_is_bit_exact(tmp_path):
    check_ok(train(tmp_path, "a", SETS))
    a = train_losses(tmp_path / "a")
    assert sorted(a) == list(range(1, STEPS + 1))

    stopped = train(tmp_path, "c", [*SETS, "train.stop_at=20"])
    check_ok(stopped)
    assert "saved step 20" in stopped.stdout
    assert final(tmp_path / "c")["step"] == 20
    # A second process with the same config and seed: bit-identical losses so far.
    assert train_losses(tmp_path / "c") == {s: a[s] for s in range(1, 21)}

    resumed = train(tmp_path, "c", SETS, "--resume")
    check_ok(resumed)
    assert "resumed from step 20" in resumed.stdout
    assert train_losses(tmp_path / "c") == a  # bit-identical floats, steps 6.. included
    assert final(tmp_path / "c")["params_sha256"] == final(tmp_path / "a")["params_sha256"]

    again = train(tmp_path, "c", SETS, "--resume")
    check_ok(again)
    assert "nothing to do" in again.stdout
