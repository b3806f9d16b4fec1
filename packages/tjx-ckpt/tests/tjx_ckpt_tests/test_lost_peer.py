"""Orbax's traceback of a save whose peer died is dropped once the watch says it; nothing else."""

from __future__ import annotations

import logging

import pytest

from tjx import ckpt

COMMIT = (
    "[process=1] Failed to run 6 Handler Commit operations or the Commit callback in background "
    "save thread, directory: /run/checkpoints/5"
)
LOST = (
    "UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was "
    "preempted/died/restarted unexpectedly"
)


def _logged(caplog: pytest.LogCaptureFixture, message: str, error: Exception | None) -> bool:
    caplog.clear()
    logger = logging.getLogger("absl")
    if error is None:
        logger.error(message)
    else:
        try:
            raise error
        except type(error):
            logger.exception(message)
    return any(r.getMessage() == message for r in caplog.records)


def test_a_commit_that_lost_its_peer_is_dropped_and_other_errors_are_kept(caplog):
    caplog.set_level(logging.ERROR, logger="absl")
    assert _logged(caplog, COMMIT, RuntimeError(LOST))  # before: orbax's traceback is printed
    ckpt.silence_lost_peer_commits()
    ckpt.silence_lost_peer_commits()  # idempotent: one filter
    assert len(logging.getLogger("absl").filters) == 1
    assert not _logged(caplog, COMMIT, RuntimeError(LOST))
    # A commit that failed for another reason, or another message with the same error, stays.
    assert _logged(caplog, COMMIT, OSError("No space left on device"))
    assert _logged(caplog, "Failed to restore step 5", RuntimeError(LOST))
    assert _logged(caplog, COMMIT, None)
