"""Child process of the kill -9 test: resume from the latest step, then save forever.

Usage: python -m tjx_ckpt_tests._kill_child DIRECTORY PROGRESS_FILE
Writes "ready" on stdout once its first save has started (jit warm-up done); appends to
PROGRESS_FILE "start s" before each save and "committed s-1" after it returns (orbax
finishes step s-1 before it starts s).
"""

from __future__ import annotations

import sys

from tjx.ckpt import CheckpointManager
from tjx_ckpt_tests._states import make_state


def main() -> None:
    directory, progress = sys.argv[1], sys.argv[2]
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
                print("ready", flush=True)
            step += 1


if __name__ == "__main__":
    main()
