"""A multi-host run in the trainer's words: `tjx.parallel.join` (a deadline, then one error for
every disagreement) with the trainer's own values, lines and exit statuses (1: not every process
joined; 2: a bad setup, or processes started differently), and the dead-peer watch."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path

import jax
import yaml  # type: ignore[import-untyped]

from tjx import ckpt, parallel
from tjx.parallel.arguments import DistributedArgs, not_joined_line
from trainer.config.seams import ConfigData
from trainer.plan.run_plan import error_exit, error_line


class JoinError(Exception):
    """The run could not start as several processes; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


#: The line for each of the trainer's values the processes disagree on (fields: a
#: tjx.parallel.Disagreement's); tjx.parallel words the process count (``--num-processes``).
DISAGREEMENTS = {
    "resume": "--resume: given to some processes only",
    "init_from": "--init-from: differs between processes",
    "config": "config: process(es) {differ} have another effective config than process 0 "
    "(compare the configs they printed)",
}


def join(
    dist: DistributedArgs, config: str | ConfigData, *, resume: bool, init_from: str | None
) -> parallel.DistributedInfo:
    """`tjx.parallel.join` with the launch flags ``dist``: all processes must agree on ``config``
    (the effective config's YAML with sorted keys, or the plain data dumped so), ``resume`` and
    ``init_from`` (the trainer's flags named in every message). Returns its `DistributedInfo`;
    raises `JoinError` (code 2: an incomplete setup or processes that disagree; 1: joining
    failed)."""

    text = config if isinstance(config, str) else yaml.safe_dump(config, sort_keys=True)

    # tjx.parallel's line, as the trainer's one error line
    def not_joined(info: parallel.DistributedInfo) -> str:
        return error_line(not_joined_line(info, dist.timeout_s))

    try:
        return parallel.join(
            dist.coordinator,
            dist.num_processes,
            dist.process_id,
            values={
                "resume": resume,
                "init_from": init_from or "",
                "config": text,
            },
            lines=DISAGREEMENTS,
            timeout_s=dist.timeout_s,
            timeout_message=not_joined,
            # The trainer agrees on stopping itself (tjx.parallel.stop_agreement); jax's service
            # would swallow a SIGTERM that arrives before the loop installs its handler.
            preemption_service=False,
            cluster=dist.cluster,
        )
    except parallel.DistributedSetupError as err:
        raise JoinError(f"multi-host setup: {err}", 2) from None
    except parallel.NotJoinedError as err:
        raise JoinError(f"{err.explanation}: {err.reason}", 1) from None
    except parallel.DisagreementError as err:
        raise JoinError(str(err), 2) from None


#: A peer silent this long is dead: well under jax's own heartbeat timeout (100 s, then SIGABRT
#: and a stack dump) and the issue's 30 s, well over any pause of a live process's watch thread
#: (it runs while the main thread is in XLA: compile and execute release the GIL).
PEER_SILENCE_S = 15.0


def watch(run_dir: Path) -> AbstractContextManager[object]:
    """The run's peer watch (`tjx.parallel.watch_peers`), a context manager: a dead peer costs one
    line naming it and the newest checkpoint, then exit 1 at once; leaving the block normally
    marks this process done (peers still writing their last files do not report it). A run of
    one process has no peer to watch or to lose: a null context."""
    if jax.process_count() == 1:
        return contextlib.nullcontext()
    # A save that a dead peer cuts short would add orbax's traceback to the watch's one line:
    # held back, and printed only if this process goes on (it was no lost-peer ending).
    ckpt.silence_lost_peer_commits()
    return parallel.watch_peers(silence_s=PEER_SILENCE_S, on_dead=partial(_peer_lost, run_dir))


def _peer_lost(run_dir: Path, message: str) -> None:
    again = "start every process again"
    then = ckpt.last_checkpoint_words(run_dir, f"{again} with --resume", f"; {again}")
    # A save the loss cut short is never resumed from: say so, or "step 5" reads as a mistake.
    unfinished = ckpt.RunFolder(run_dir).unfinished_step()
    if unfinished is not None:
        then = f"the save of step {unfinished} did not finish; {then}"
    error_exit(f"{message}; {then}", code=1)
    ckpt.release_held_locks()  # os._exit runs no `with`: a restart must find the run dir free
    parallel.exit_now(1)  # the main thread may be stuck in a collective with the dead peer
