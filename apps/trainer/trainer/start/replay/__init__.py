"""``python -m trainer --replay RUN (--steps A:B | --spikes) [--probe NAME,...] [--out DIR]``:
re-run steps of a finished, stopped or killed run bit for bit from its nearest checkpoint, prove
each logged loss reproduced, probe what the run did not record, and write a report.

The trainer owns the replay: it prepares the run as a ``--resume`` that changes nothing would
(trainer.start.startup's `prepare`), restores a checkpoint with the resume's own restore, and calls
the run's own compiled step, so the replayed losses are the run's (`runner`). The probes are a
program of their own beside it (`probes`); the report reads them (`findings`, `report`). A replay
only reads the run: it takes no lock (a live run may be replayed) and writes its report to its
own folder. `request` checks the command line first, before JAX is used.
"""

from __future__ import annotations

import argparse

from trainer.config.schema import ConfigError
from trainer.plan.run_plan import error_exit
from trainer.start.replay import report, runner
from trainer.start.replay.request import PROBES, ReplayRequest, build_request

__all__ = ["PROBES", "ReplayRequest", "replay_from_args"]


def replay_from_args(args: argparse.Namespace) -> int:
    """Run a ``--replay`` command line: 0 with the report written; 2 with one line for bad input
    or a replay that is not faithful (the first step that differs, and why)."""
    try:
        request = build_request(args)
    except ConfigError as err:
        return error_exit(str(err))
    print(f"replay: {request.run_dir} {request.asked}; report to {request.out}", flush=True)
    try:
        replayed = runner.replay(request, say=lambda line: print(line, flush=True))
    except (ConfigError, runner.NotFaithfulError) as err:
        return error_exit(str(err))
    path = report.write_report(replayed, request.out)
    compared = sum(r.logged is not None for r in replayed.steps.values())
    print(
        f"replay: faithful: {compared} logged losses replayed bit for bit; report {path}",
        flush=True,
    )
    return 0
