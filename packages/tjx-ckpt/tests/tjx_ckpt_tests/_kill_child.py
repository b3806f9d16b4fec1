"""Child process of the kill -9 test: resume from the latest step, then save forever.

Forked from a fork server that imported this module once (`forked`), so each child skips the
interpreter start and the imports of jax, orbax and the store clients. Also runnable by hand:
``python -m tjx_ckpt_tests._kill_child DIRECTORY PROGRESS_FILE`` (prints "ready" on stdout).

Says "ready" once its first save has started (jit warm-up done); appends to PROGRESS_FILE
"start s" before each save and "committed s-1" after it returns (orbax finishes step s-1 before
it starts s).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from multiprocessing.connection import Connection

from tjx.ckpt import CheckpointManager
from tjx_ckpt_tests._states import make_state


def save_forever(directory: str, progress: str, ready: Callable[[], None]) -> None:
    """Save step after step into ``directory`` (resuming after its latest); never returns."""
    manager = CheckpointManager(directory, keep_last=2, keep_best=1, best_metric="loss")
    latest = manager.latest_step()
    step = first = 1 if latest is None else latest + 1
    with open(progress, "a", encoding="utf-8") as log:
        while True:
            log.write(f"start {step}\n")
            log.flush()
            state = make_state(step, layers=1)
            loss = float((step * 7) % 5) + 1.0 / step
            manager.save(
                step,
                state=state,
                data_state={"step": step},
                config={"name": "kill"},
                metrics={"loss": loss},
            )
            log.write(f"committed {step - 1}\n")
            log.flush()
            if step == first:
                ready()
            step += 1


def forked(directory: str, progress: str, environ: dict[str, str], ready: Connection) -> None:
    """A fork server's child: the test's environment (the store's endpoint and credentials, one
    CPU device) replaces the server's before jax or a store client reads it; stderr is dropped
    as a launched child's was (orbax's waiting warnings)."""
    os.environ.clear()
    os.environ.update(environ)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    save_forever(directory, progress, lambda: ready.send("ready"))


def main() -> None:
    save_forever(sys.argv[1], sys.argv[2], lambda: print("ready", flush=True))


if __name__ == "__main__":
    main()
