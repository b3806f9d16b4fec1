"""An app process with a fault at a checkpoint's commit, deterministically (no racing timers).

`run_with_fault` runs ``python -c RUNNER`` — the app's ``main`` after replacing tjx-ckpt's
`durable_commit` (what orbax's background thread calls to commit a step on a local disk) by one
that, for the step named, first does the fault:

- ``"enospc"``: raises ``OSError(ENOSPC)``, as a disk that fills up during the write;
- ``"sigterm"``: sends this process SIGTERM twice (a scheduler repeating itself), then waits
  half a second before committing, so that the main thread takes the signals while the final
  save is being written.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests_integration._helpers_apps import app_env

RUNNER = """
import errno, importlib, os, signal, sys, time
import tjx.ckpt.durable as durable

fault, step, app = sys.argv[1], sys.argv[2], sys.argv[3]
real = durable.durable_commit


def commit(tmp, final, marker_text):
    if final.name == step and fault == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp / "state"))
    if final.name == step and fault == "sigterm":
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.5)
    return real(tmp, final, marker_text)


durable.durable_commit = commit
sys.exit(importlib.import_module(app + ".cli").main(sys.argv[4:]))
"""


def run_with_fault(
    fault: str, step: int, app: str, args: list[str], cwd: Path, *, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -m APP ARGS`` in ``cwd`` with ``fault`` at the commit of checkpoint ``step``."""
    return subprocess.run(
        [sys.executable, "-c", RUNNER, fault, str(step), app, *args],
        cwd=cwd,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
