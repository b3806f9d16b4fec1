"""SIGTERM/SIGINT: the trainer's words and exit policy (tjx.parallel.stop_on_signals has the
machinery: the flag, the handlers, a second Ctrl-C).

A signal stops the run at the next step boundary with a checkpoint (exit 0: preemption is normal).
A second Ctrl-C means "stop now": the process ends at once with one line naming the newest
committed checkpoint (exit 130), without unwinding through the save in progress (why:
tjx/parallel/preemption.py).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

# No jax in either: a Ctrl-C may have cut its import short when `interrupted_exit` runs.
from tjx.ckpt import RunDir
from tjx.parallel.preemption import write_stderr
from trainer.plan import INTERRUPTED, error_line

if TYPE_CHECKING:
    from tjx.parallel import StopFlag


def interrupted_exit(run_dir: Path) -> int:
    """Print the one line for a run stopped at once; returns the exit status (130)."""
    step = RunDir(run_dir).latest_step()
    last = (
        f"the last checkpoint is step {step} in {str(run_dir)!r}; continue with --resume"
        if step is not None
        else "no checkpoint was saved"
    )
    write_stderr(error_line(f"interrupted: stopped at once; {last}"))
    return INTERRUPTED


#: The first signal's line (tjx.parallel.STOP_MESSAGE's fields: the signal, the Ctrl-C hint).
STOP_MESSAGE = "trainer: {signal}: stopping after this step and saving a checkpoint{again}"


def stop_on_signals(run_dir: Path) -> AbstractContextManager[StopFlag]:
    """tjx.parallel.stop_on_signals with the trainer's line; a second Ctrl-C ends the process
    at once, naming the newest committed checkpoint of ``run_dir`` (exit 130)."""
    from tjx import parallel

    return parallel.stop_on_signals(
        message=STOP_MESSAGE, stop_now=lambda: parallel.exit_now(interrupted_exit(run_dir))
    )
