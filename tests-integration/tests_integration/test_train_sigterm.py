"""SIGTERM mid-run: the trainer saves, exits 0; ``--resume`` ends with the uninterrupted params."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests_integration._helpers_apps import (
    SMALL,
    app_env,
    check_ok,
    final,
    read_log,
    train,
    train_losses,
)

STEPS = 30
SETS = [*SMALL, f"train.steps={STEPS}", "train.eval_every=0", "train.checkpoint_every=4"]


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
    check_ok(train(tmp_path, "ref", SETS))
    assert final(tmp_path / "int")["step"] == STEPS
    assert final(tmp_path / "int")["params_sha256"] == final(tmp_path / "ref")["params_sha256"]
    assert train_losses(tmp_path / "int") == train_losses(tmp_path / "ref")
