"""SIGTERM mid-run: the trainer saves, exits 0; ``--resume`` ends with the uninterrupted params.
SIGTERM during the final save: the save finishes, one line, exit 0, and ``--resume`` finishes.

The signals go to trainer processes; the resumes that only have to finish (after a second Ctrl-C,
after the cut final save) call the trainer's ``main`` in this process, while the one compared bit
for bit with an uninterrupted run is a process as that run is."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests_integration._helpers_apps import (
    RESUMED,
    RESUMED_STEPS,
    SMALL,
    app_env,
    call_train,
    check_ok,
    final,
    read_log,
    reference_run,
    train,
    train_args,
    train_losses,
)
from tests_integration._helpers_faults import run_with_fault

# test_train_resume.py's run (20 steps, dropout, a checkpoint every 4): the uninterrupted run is
# `reference_run`'s, trained once for the files of CI's batch that resume against it. 14 steps
# are left after the first signal's step 6: room for it to land mid-run.
STEPS, SETS = RESUMED_STEPS, RESUMED


def _start(tmp_path, run_dir):
    args = [sys.executable, "-m", "trainer", "--config", "tiny", "--run-dir", run_dir]
    for item in SETS:
        args += ["--set", item]
    return subprocess.Popen(
        args, cwd=tmp_path, env=app_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_sigterm_then_resume_equals_uninterrupted(tmp_path):
    proc = _start(tmp_path, "int")
    log = tmp_path / "int" / "metrics.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if log.exists() and any(r.get("step", 0) >= 6 for r in read_log(tmp_path / "int")):
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert "SIGTERM: saved step" in out
    stopped = final(tmp_path / "int")
    assert stopped["interrupted_by"] == "SIGTERM" and 6 <= stopped["step"] < STEPS
    check_ok(train(tmp_path, "int", SETS, "--resume"))
    ref = reference_run(tmp_path, SETS)
    assert final(tmp_path / "int")["step"] == STEPS
    assert final(tmp_path / "int")["params_sha256"] == final(ref)["params_sha256"]
    assert train_losses(tmp_path / "int") == train_losses(ref)
    for run in (tmp_path / "int", ref):  # old steps were removed through checkpoints/_deleted/,
        assert not (run / "checkpoints" / "_deleted").exists()  # which went


def test_second_ctrl_c_stops_at_once_in_one_line_and_the_run_resumes(tmp_path):
    proc = _start(tmp_path, "int")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # the first checkpoint (step 4) committed
        if (tmp_path / "int" / "checkpoints" / "4").is_dir():
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    assert proc.stderr is not None
    proc.send_signal(signal.SIGINT)  # "stop after this step and save"
    lines = []
    for line in proc.stderr:  # the trainer says it took the first one; only then the second
        lines.append(line)
        if "SIGINT: stopping after this step" in line:
            break
    proc.send_signal(signal.SIGINT)  # "stop now": lands in the save or the final files
    out, rest = proc.communicate(timeout=120)
    err = "".join(lines) + rest
    assert proc.returncode == 130, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if "trainer: error:" in line]
    assert len(errors) == 1 and "interrupted: stopped at once" in errors[0], err
    assert "the last checkpoint is step" in errors[0] and "--resume" in errors[0]
    assert not (tmp_path / "int" / "final.json").exists() or final(tmp_path / "int")  # whole
    check_ok(call_train(tmp_path, "int", SETS, "--resume"))
    assert final(tmp_path / "int")["step"] == STEPS
    assert not (tmp_path / "int" / "checkpoints" / "_deleted").exists()


def test_sigterm_during_the_final_save_lets_it_finish_in_one_line(tmp_path):
    """#71: the final save ran after the loop had given its signal handlers back, so SIGTERM
    there killed the process (exit 143, no word) and left the last checkpoint half-written.
    Here two SIGTERMs land while the last step's commit runs in orbax's thread."""
    sets = [*SMALL, "train.steps=4", "train.eval_every=0"]
    proc = run_with_fault("sigterm", 4, "trainer", train_args("r", sets), tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        "trainer: SIGTERM: stopping after this step and saving a checkpoint"
    ], proc.stderr[-3000:]
    assert "SIGTERM: saved step 4 to r; what follows the last step was cut short" in proc.stdout
    run = tmp_path / "r"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["4"]  # committed, whole
    assert not (run / "final.json").exists()  # its evaluation and samples were cut short
    again = call_train(tmp_path, "r", sets, "--resume")
    check_ok(again)
    assert "rebuilt samples/step_0000004.txt, final.json" in again.stdout, again.stdout
    assert final(run)["step"] == 4 and final(run)["interrupted_by"] is None
