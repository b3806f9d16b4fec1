"""Async saves of an FSDP-sharded state on 8 CPU devices while jitted collectives keep running.

Regression test: fingerprinting used to launch one jitted all-reduce per sharded leaf; dozens of
independent collective programs in flight deadlocked XLA:CPU ("Expected 8 threads to join the
rendezvous, but only 7 of them arrived"). The scenario runs in a subprocess with a timeout so
that a deadlock fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TIMEOUT_S = 120


def test_async_saves_of_fsdp_state_while_training_do_not_deadlock(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    try:
        result = subprocess.run(
            [sys.executable, "-m", "tjx_ckpt_tests._fsdp_child", str(tmp_path / "run")],
            capture_output=True,
            text=True,
            env=env,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as err:  # subprocess.run has killed the child
        tail = (err.stderr or b"")[-2000:]
        raise AssertionError(f"saving hung for {TIMEOUT_S} s (deadlock?): {tail!r}") from err
    assert result.returncode == 0, result.stderr[-4000:]
    # keep_last=2 of the saves at steps 2, 4, 6, 8; each restored onto a 4x2 mesh and verified.
    assert result.stdout.split() == ["ok", "6", "8"], result.stdout
