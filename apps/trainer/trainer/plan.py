"""What a validated command line asks for (`RunPlan`), and the two ways the trainer talks back.

Kept apart from `cli` (which builds a plan) and `loop` (which carries it out) so that neither
imports the other.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from tjx.parallel.arguments import DistributedArgs
from trainer.config import Config


@dataclass
class RunPlan:
    """A validated request: the config and everything the run needs to know before it starts."""

    config: Config
    run_dir: Path
    resume: bool
    init_from: str | None
    profile: tuple[int, int] | None
    #: The multi-host launch flags (``None``: from the environment, or a single process).
    distributed: DistributedArgs = field(default_factory=DistributedArgs)
    #: Training-only settings a ``--resume`` changes: key → (saved, new) (see `trainer.resume`).
    resume_changes: dict[str, tuple[object, object]] = field(default_factory=dict)
    #: ``--export-peft``: the folder the trained LoRA adapters are written to, as PEFT reads them.
    export_peft: Path | None = None


#: Exit status after Ctrl-C stopped the run at once (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130


def error_line(message: str) -> str:
    """The one line every failure prints (without its newline)."""
    return f"trainer: error: {message}"


def error_exit(message: str, code: int = 2) -> int:
    """Print one error line to stderr; the exit code for bad input is 2."""
    print(error_line(message), file=sys.stderr, flush=True)
    return code
