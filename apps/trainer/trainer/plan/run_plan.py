"""What a validated command line asks for (`RunPlan`), and how the trainer talks back: its one error
line (exit 2 for bad input) and its words on SIGTERM/SIGINT (tjx.parallel.stop_on_signals): stop at
the next step boundary with a checkpoint (exit 0), or on a second Ctrl-C at once, naming the newest
committed checkpoint (exit 130). Apart from `cli` (which builds a plan) and `startup` (which runs
it) so that neither imports the other; no jax: a Ctrl-C may have cut its import short.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from tjx import parallel
from tjx.ckpt import (
    NotCreatableError,
    check_can_create,
    last_checkpoint_words,
    release_held_locks,
)
from tjx.parallel.arguments import DistributedArgs
from tjx.parallel.preemption import write_stderr
from trainer.config.schema import ConfigError
from trainer.config.typed import Config


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
    #: Training-only settings a ``--resume`` changes: key → (saved, new) (`trainer.loop.resume`).
    resume_changes: dict[str, tuple[object, object]] = field(default_factory=dict)
    #: ``--export-peft``: the folder the trained LoRA adapters are written to, as PEFT reads them.
    export_peft: Path | None = None
    #: ``key=value`` of each key the command line changes from its preset (the first screen's).
    overridden: list[str] = field(default_factory=list)


#: Exit status after Ctrl-C stopped the run at once (128 + SIGINT, as a shell reports it).
INTERRUPTED = 130
#: The first signal's line (tjx.parallel.STOP_MESSAGE's fields: the signal, the Ctrl-C hint).
STOP_MESSAGE = "trainer: {signal}: stopping after this step and saving a checkpoint{again}"


def error_line(message: str) -> str:
    """The one line every failure prints (without its newline)."""
    return f"trainer: error: {message}"


def warning_line(message: str) -> str:
    """The one line a run prints for what it skips and goes on without (no newline)."""
    return f"trainer: warning: {message}"


def error_exit(message: str, code: int = 2) -> int:
    """Print one error line to stderr; the exit code for bad input is 2."""
    print(error_line(message), file=sys.stderr, flush=True)
    return code


def interrupted_exit(run_dir: Path) -> int:
    """Print the one line for a run stopped at once; returns the exit status (130)."""
    last = last_checkpoint_words(run_dir, "continue with --resume")
    release_held_locks()  # os._exit follows: the next --resume must find the run directory free
    write_stderr(error_line(f"interrupted: stopped at once; {last}"))
    return INTERRUPTED


def output_file(text: str, flag: str, example: str) -> Path:
    """The file a flag names for a report the command writes at its end (``--plan-json``,
    ``--search-out``), checked before any work: its folder exists and can be written into, and
    the path is no folder (nor a file that cannot be written). Nothing is created: a command
    that fails later leaves no empty file behind.

    Parameters
    ----------
    text : str
        The flag's value (``~`` expanded).
    flag : str
        The flag, named in the message.
    example : str
        A file name the message suggests where ``text`` is a folder (``plan.json``).

    Returns
    -------
    Path
        The file to write.

    Raises
    ------
    ConfigError
        ``FLAG: ...`` naming the path, what is wrong with it and what to do instead.
    """
    path = Path(text).expanduser()
    if path.is_dir() or text.endswith(("/", "\\")):
        inside = str(Path(text) / example)
        raise ConfigError(f"{flag}: {text!r} names a folder; name a file in it, e.g. {inside!r}")
    folder = path.parent
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(
            f"{flag}: the folder {str(folder)!r} of {text!r} {what}; create it or choose "
            "another path"
        )
    try:
        # A probe folder made and removed: root passes os.access on a read-only mount
        check_can_create(folder)
        if path.exists():  # opened to append, closed unwritten: its bytes and time stay
            with path.open("a"):
                pass
    except NotCreatableError as err:
        raise ConfigError(f"{flag}: {err}") from None
    except OSError as err:
        raise ConfigError(
            f"{flag}: cannot write {text!r} ({err.strerror or type(err).__name__}); choose "
            "another path"
        ) from None
    return path


def stop_on_signals(run_dir: Path) -> AbstractContextManager[parallel.StopFlag]:
    """tjx.parallel.stop_on_signals with the trainer's line; a second Ctrl-C ends the process
    at once, naming the newest committed checkpoint of ``run_dir`` (exit 130)."""
    return parallel.stop_on_signals(
        message=STOP_MESSAGE, stop_now=lambda: parallel.exit_now(interrupted_exit(run_dir))
    )
