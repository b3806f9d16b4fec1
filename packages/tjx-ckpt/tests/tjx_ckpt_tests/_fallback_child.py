"""Child process: restore past a step whose data files start with zeros, in one-line mode.

Run as ``python -m tjx_ckpt_tests._fallback_child DIR``; its whole stderr is what a user sees.
"""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import jax.numpy as jnp

from tjx.ckpt import CheckpointManager, corrupt_fallback_lines


def main(directory: Path) -> None:
    # Many leaves: many concurrent reads, each of whose futures fails on the damaged b-tree.
    state = {
        "params": {f"w{i}": jnp.arange(500.0) + i for i in range(16)},
        "step": jnp.asarray(0, jnp.int32),
    }
    with CheckpointManager(directory, async_save=False) as manager:
        manager.save(1, state=state)
        manager.save(2, state=state)
    for f in (directory / "2" / "state").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            data = bytearray(f.read_bytes())
            data[:64] = bytes(64)  # damage at the start of the data file
            f.write_bytes(bytes(data))
    with CheckpointManager(directory) as manager, corrupt_fallback_lines("demo"):
        restored = manager.restore(target=state)
    del manager
    gc.collect()  # the failed reads' futures are collected (and would be reported) here
    print(f"restored {restored.step}", flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
