"""Joining a multi-host run: start ``jax.distributed`` with a deadline that ends in one clear
error line, then check that every process was started with the same run.

Two ways a multi-host launch goes wrong silently or loudly enough to confuse:

* Not every announced process joins (a wrong ``--num-processes``, a duplicated ``--process-id``,
  a coordinator nobody runs). jax 0.10 then aborts the process from a C++ thread once its
  ``initialization_timeout`` passes (SIGABRT, a stack trace, "another task died").
  :func:`tjx.parallel.initialize`'s watchdog fires a little earlier and exits 1 with the one
  line given here: what was expected and which flags fix it.
* Processes that disagree: jax uses process 0's count, so a process told ``--num-processes 3`` in a
  run of 2 joins without complaint; a different ``--set`` on one host trains another model and
  hangs or diverges later. After joining, every process compares what it was told with the
  others' (``tjx.parallel.disagreements``: one tiny all-gather) and all exit 2 together,
  naming what differs.

A preemption signal during the run is acted on by all processes at the same step boundary
(``tjx.parallel.stop_agreement``); jax's own preemption service is turned off here (see ``join``).
A peer that dies mid-run ends the others within seconds, each with one line (:func:`watch`).
"""

from __future__ import annotations

import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from tjx import ckpt
from trainer.plan import Distributed, error_exit


class JoinError(Exception):
    """The run could not start as several processes; ``code`` is the exit status to use."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def join(dist: Distributed, config: dict[str, Any], *, resume: bool, init_from: str | None) -> Any:
    """Start ``jax.distributed`` if this is one of several processes, then check agreement.

    Parameters
    ----------
    dist : Distributed
        The ``--coordinator`` / ``--num-processes`` / ``--process-id`` / ``--init-timeout`` flags
        (unset ones come from the environment or SLURM).
    config : dict
        The effective config; every process must have the same one.
    resume, init_from
        The other run options every process must share.

    Returns
    -------
    tjx.parallel.DistributedInfo
        Where this process stands (``num_processes == 1``: a single-process run).

    Raises
    ------
    JoinError
        Code 2: an incomplete setup or processes that disagree; code 1: joining failed.
    """
    from tjx import parallel

    try:
        info = parallel.resolve_distributed(dist.coordinator, dist.num_processes, dist.process_id)
    except ValueError as err:
        raise JoinError(f"multi-host setup: {err}", 2) from None
    if info.num_processes == 1:
        return info
    expected = (
        f"not all {info.num_processes} processes joined the run at coordinator "
        f"{info.coordinator} within {dist.timeout_s:g} s (this is process {info.process_id}); "
        f"start every process with the same --coordinator and --num-processes and its own "
        f"--process-id in 0..{info.num_processes - 1}, or raise --init-timeout"
    )
    try:
        parallel.initialize(
            info.coordinator,
            info.num_processes,
            info.process_id,
            timeout_s=dist.timeout_s,
            timeout_message=f"trainer: error: {expected}",
            # The trainer agrees on stopping itself (tjx.parallel.stop_agreement); jax's service
            # would swallow a SIGTERM that arrives before the loop installs its handler.
            preemption_service=False,
        )
    except (RuntimeError, ValueError) as err:
        raise JoinError(f"{expected}: {str(err).strip().splitlines()[0]}", 1) from None
    _check_agreement(info.num_processes, config, resume=resume, init_from=init_from)
    return info


#: The line for each value the processes disagree on (fields: a tjx.parallel.Disagreement's).
DISAGREEMENTS = {
    "num_processes": "--num-processes: the run has {expected} processes but they were told {each}",
    "resume": "--resume: given to some processes only",
    "init_from": "--init-from: differs between processes",
    "config": "config: process(es) {differ} have another effective config than process 0 "
    "(compare the configs they printed)",
}


def _check_agreement(
    num_processes: int, config: dict[str, Any], *, resume: bool, init_from: str | None
) -> None:
    import jax

    from tjx import parallel

    found = parallel.disagreements(
        {
            "num_processes": num_processes,
            "resume": resume,
            "init_from": init_from or "",
            "config": yaml.safe_dump(config, sort_keys=True),
        },
        # jax takes process 0's count: a process told another one would join without complaint.
        expected={"num_processes": jax.process_count()},
    )
    if found:
        problems = (
            DISAGREEMENTS[d.name].format(expected=d.expected, each=d.each(), differ=d.differ)
            for d in found
        )
        raise JoinError("multi-host processes disagree: " + "; ".join(problems), 2)


#: A peer silent this long is dead: well under jax's own heartbeat timeout (100 s, then SIGABRT
#: and a stack dump) and the issue's 30 s, well over any pause of a live process's watch thread
#: (it runs while the main thread is in XLA: compile and execute release the GIL).
PEER_SILENCE_S = 15.0


def watch(run_dir: Path) -> Any:
    """The run's peer watch (`tjx.parallel.watch_peers`), as a context manager.

    When a peer dies, this process prints one line naming it and the newest committed checkpoint,
    and exits with status 1 at once (its main thread may be stuck in a collective with the dead
    peer). Leaving the block normally marks this process done, so peers that are still writing
    their final files do not report it; leaving it with an error first gives the watch the time
    to name a dead peer (with gloo, a collective fails as soon as its peer's connection drops).
    """
    from tjx import parallel

    return parallel.watch_peers(silence_s=PEER_SILENCE_S, on_dead=partial(_peer_lost, run_dir))


def _peer_lost(run_dir: Path, message: str) -> None:
    step = ckpt.RunDir(run_dir).latest_step()
    if step is None:
        then = "no checkpoint was saved; start every process again"
    else:
        then = (
            f"the last checkpoint is step {step} in {str(run_dir)!r}; start every process again "
            "with --resume"
        )
    error_exit(f"{message}; {then}", code=1)
    sys.stdout.flush()
    os._exit(1)
