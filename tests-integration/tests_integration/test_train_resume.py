"""Determinism and bit-exact resume (separate processes, CPU).

* The same config and seed give bit-identical losses (20 steps, dropout on).
* Stopping at step k (``train.stop_at``, the same save-and-exit path as a signal) and resuming gives
  the losses and the parameters of an uninterrupted run, bit for bit — data iterator included.

The uninterrupted run is `reference_run`'s (test_train_object_store.py resumes against the same
run: in CI's batch it is trained once for both).
"""

from __future__ import annotations

from tests_integration._helpers_apps import (
    RESUMED,
    RESUMED_STEPS,
    call_train,
    check_ok,
    final,
    reference_run,
    train,
    train_losses,
)

STEPS, STOP = RESUMED_STEPS, 10  # STOP between two periodic checkpoints (every 4): stop_at's save
SETS = RESUMED


def test_same_seed_same_losses_and_resume_is_bit_exact(tmp_path):
    ref = reference_run(tmp_path, SETS)
    a = train_losses(ref)
    assert sorted(a) == list(range(1, STEPS + 1))

    stopped = train(tmp_path, "c", [*SETS, f"train.stop_at={STOP}"])
    check_ok(stopped)
    assert f"saved step {STOP}" in stopped.stdout
    assert final(tmp_path / "c")["step"] == STOP
    # A second process with the same config and seed: bit-identical losses so far.
    assert train_losses(tmp_path / "c") == {s: a[s] for s in range(1, STOP + 1)}

    resumed = train(tmp_path, "c", SETS, "--resume")
    check_ok(resumed)
    assert f"resumed from step {STOP}" in resumed.stdout
    assert train_losses(tmp_path / "c") == a  # bit-identical floats, steps 6.. included
    assert final(tmp_path / "c")["params_sha256"] == final(ref)["params_sha256"]

    again = call_train(tmp_path, "c", SETS, "--resume")  # in this process: only a refusal to redo
    check_ok(again)
    assert "nothing to do" in again.stdout
