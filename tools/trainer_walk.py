"""How far a reader walks through the trainer from ``cli.main`` to the first train step.

``python tools/trainer_walk.py`` runs ``--config tiny`` (shrunk, on a small local text) in this
process with a profile hook and records every call of a named function of the ``trainer`` package
on PYTHONPATH (tests, module and class bodies, lambdas and comprehensions excluded) until the step
function ``train_step`` is first called. It keeps each function's first call only (a reader reads
a function once, where it is first called), collapses consecutive functions of one file, and
prints the files in walk order, the number of distinct files and the number of *returns*: entries
into a file already visited (the reader turns back to a file seen earlier). ``--functions`` also
prints each function as it is first called, on stderr. Run it in ``tools/devtest``'s environment
(PYTHONPATH over the source roots, ``JAX_PLATFORMS=cpu``); any revision's trainer can be walked.
"""

from __future__ import annotations

import sys
import tempfile
from inspect import CO_NEWLOCALS
from pathlib import Path
from types import FrameType
from typing import Any

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
    import trainer

    root = Path(trainer.__file__).resolve().parent  # the checkout on PYTHONPATH: any revision
    seen: list[str] = []
    read: set[Any] = set()

    def hook(frame: FrameType, event: str, arg: Any) -> None:
        code = frame.f_code
        # Named functions only: a class body runs at import, a lambda or comprehension is read
        # as part of the function that holds it.
        if event != "call" or code.co_name.startswith("<") or not code.co_flags & CO_NEWLOCALS:
            return
        path = Path(code.co_filename)
        if root not in path.parents or "tests" in path.parts:
            return
        name = path.name
        if code.co_name == "train_step" and name == "step.py":
            raise StepReachedError
        if code in read:
            return
        read.add(code)
        if "--functions" in sys.argv:
            print(f"{name}:{code.co_name}", file=sys.stderr)
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
