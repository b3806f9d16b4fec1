"""The tjx side of the side-by-side: the trainer's real step, driven over stdin/stdout.

``python -m tjx_tools.nanogpt.tjx_worker SPEC_JSON``; the protocol is `peer/torch_gpt.py`'s:
``ready <loss>`` after the first step on the first batch (compile included), then ``run N`` →
wall seconds of N steps (blocked until the last one finished), ``quit``.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import jax
import numpy as np


def trainer_config(spec: dict[str, Any]) -> Any:
    """The trainer config of a side-by-side shape (a preset and ``--set`` overrides)."""
    from trainer.config import build_config
    from trainer.overrides import apply_overrides
    from trainer.presets import load_config_data

    return build_config(apply_overrides(load_config_data(spec["preset"]), spec["sets"]))


def main() -> int:
    """Build the step from the HF weights in ``spec["weights_dir"]``, then serve commands."""
    from tjx import parallel
    from trainer import state as state_mod
    from trainer.step import make_train_step

    spec = json.loads(sys.argv[1])
    cfg = trainer_config(spec)
    setup = state_mod.build(cfg, spec["vocab"], init_from=spec["weights_dir"])
    step = jax.jit(make_train_step(setup.graphdef, setup.rest, setup.tx, cfg), donate_argnums=(0,))
    arrays = np.load(spec["batches"])
    b, s = arrays["inputs"].shape[1:]
    layout = {
        "segment_ids": np.ones((b, s), np.int32),
        "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy(),
    }
    batches = [
        parallel.shard_batch({"inputs": x, "targets": y, **layout}, setup.mesh)
        for x, y in zip(arrays["inputs"], arrays["targets"], strict=True)
    ]
    state, out = step(setup.state, batches[0])
    print(f"ready {float(out['loss'])!r}", flush=True)
    done = 1
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "quit":
            break
        t0 = time.perf_counter()
        for _ in range(int(cmd[1])):
            state, out = step(state, batches[done % len(batches)])
            done += 1
        jax.block_until_ready(out)
        print(f"{time.perf_counter() - t0!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
