"""How far a reader walks through the trainer from ``cli.main`` to the first train step.

``python tools/trainer_walk.py`` runs ``--config tiny`` (shrunk, on a small local text) in this
process with a profile hook, records every call of a function defined in ``apps/trainer/trainer``
(tests and module bodies excluded) until the step function ``train_step`` is first called, keeps
each function's first call only (a reader reads a function once, where it is first called),
collapses consecutive functions of one file, and prints the files in walk order, the number of
distinct files and the number of *returns*: entries into a file already visited before (the reader
turns back to a file seen earlier). Run it through ``tools/devtest``'s
environment (PYTHONPATH over the source roots, ``JAX_PLATFORMS=cpu``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parents[1] / "apps" / "trainer" / "trainer"
SETS = [
    "model.d_model=16",
    "model.num_layers=1",
    "model.num_heads=2",
    "model.mlp_dim=32",
    "model.max_seq_len=16",
    "data.seq_len=16",
    "data.batch_size=8",
    "eval.batch_size=8",
    "train.steps=1",
    "optimizer.schedule.warmup_steps=0",
    "train.eval_batches=1",
    "sampling.max_new_tokens=2",
    "logging.sinks=[jsonl]",
    "logging.progress=false",
]


class StepReachedError(Exception):
    """Raised at the first call of the train step."""


def walk(argv: list[str]) -> list[str]:
    """The trainer files entered (consecutive repeats collapsed) until ``train_step`` runs."""
    seen: list[str] = []
    read: set[Any] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call":
            return
        path = Path(frame.f_code.co_filename)
        if ROOT not in path.parents or "tests" in path.parts or frame.f_code.co_name == "<module>":
            return
        name = path.name
        if frame.f_code.co_name == "train_step" and name == "step.py":
            raise StepReachedError
        if frame.f_code in read:
            return
        read.add(frame.f_code)
        if not seen or seen[-1] != name:
            seen.append(name)

    from trainer.cli import main

    sys.setprofile(hook)
    try:
        main(argv)
    except StepReachedError:
        pass
    finally:
        sys.setprofile(None)
    return seen


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        text = Path(tmp) / "corpus.txt"
        text.write_text("".join(f"Line {i}: to be or not to be.\n" for i in range(200)))
        argv = ["--config", "tiny", "--run-dir", f"{tmp}/run", "--data", str(text)]
        for item in [*SETS, f"data.cache_dir={tmp}/cache"]:
            argv += ["--set", item]
        files = walk(argv)
    print(" -> ".join(files))
    print(f"{len(set(files))} files; {len(files)} entries; {len(files) - len(set(files))} returns")
    return 0


if __name__ == "__main__":
    sys.exit(main())
