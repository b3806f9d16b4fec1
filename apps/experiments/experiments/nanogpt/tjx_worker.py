"""The tjx side of the side-by-side: the trainer's real step, driven over stdin/stdout.

``python -m experiments.nanogpt.tjx_worker SPEC_JSON``; the protocol is `peer/torch_gpt.py`'s:
``ready <loss>`` after the first step on the first batch (compile included), then ``run N`` →
wall seconds of N steps (blocked until the last one finished), ``quit``; and the two additions
the experiments app's study uses: ``losses N`` → ``losses <seconds> <loss> ...`` (every step's
loss, fetched after the timed steps), ``val`` → ``val <loss>`` over ``spec["val_batches"]`` (the
trainer's eval step: tjx-metrics' token-weighted sums).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np


def trainer_config(spec: dict[str, Any]) -> Any:
    """The trainer config of a side-by-side shape (a preset and ``--set`` overrides)."""
    from trainer import load_config

    return load_config(spec["preset"], spec["sets"])


def sharded_batches(arrays: Any, mesh: Any) -> Iterator[dict[str, Any]]:
    """The ``inputs``/``targets`` batches of ``arrays`` (an ``.npz``, every batch the same shape),
    each row one document, placed on ``mesh``: the train and the held-out batches alike."""
    from tjx import parallel

    b, s = arrays["inputs"].shape[1:]
    layout = {
        "segment_ids": np.ones((b, s), np.int32),
        "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (b, s)).copy(),
    }
    for x, y in zip(arrays["inputs"], arrays["targets"], strict=True):
        yield parallel.shard_batch({"inputs": x, "targets": y, **layout}, mesh)


def validation_loss(setup: Any, state: Any, cfg: Any, path: str) -> float:
    """Token-weighted mean loss of the trainer's eval step over the held-out batches in ``path``."""
    from trainer import make_eval_step

    evaluate = jax.jit(make_eval_step(setup.graphdef, setup.rest, setup.step_config))
    total, count = 0.0, 0
    for batch in sharded_batches(np.load(path), setup.mesh):
        sums = jax.device_get(evaluate(state.param_tree(), batch))
        total, count = total + float(sums["sum_loss"]), count + int(sums["num_tokens"])
    return total / count


def main() -> int:
    """Build the step from the HF weights in ``spec["weights_dir"]``, then serve commands."""
    from trainer import build_state, jit_train_step, resolve, step_config

    spec = json.loads(sys.argv[1])
    cfg = trainer_config(spec)
    cfg = resolve(cfg, spec["vocab"])
    setup = build_state(step_config(cfg), init_from=spec["weights_dir"])
    step = jit_train_step(setup)
    batches = list(sharded_batches(np.load(spec["batches"]), setup.mesh))
    state, out = step(setup.state, batches[0])
    print(f"ready {float(out['loss'])!r}", flush=True)
    done = 1
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "quit":
            break
        if cmd[0] == "losses":
            t0 = time.perf_counter()
            outs = []
            for _ in range(int(cmd[1])):
                state, out = step(state, batches[done % len(batches)])
                outs.append(out["loss"])
                done += 1
            jax.block_until_ready(outs)
            seconds = time.perf_counter() - t0
            print("losses", repr(seconds), *(repr(float(x)) for x in outs), flush=True)
            continue
        if cmd[0] == "val":
            print(f"val {validation_loss(setup, state, cfg, spec['val_batches'])!r}", flush=True)
            continue
        t0 = time.perf_counter()
        for _ in range(int(cmd[1])):
            state, out = step(state, batches[done % len(batches)])
            done += 1
        jax.block_until_ready(out)
        print(f"{time.perf_counter() - t0!r}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
