"""Orbax's traceback of a save whose peer died is held back, and printed only if the process goes
on (the peer watch's ``os._exit`` ends it unprinted); every other error is printed at once."""

from __future__ import annotations

import logging
import subprocess
import sys
import time

import pytest

from tjx import ckpt
from tjx.ckpt import lost_peer
from tjx.ckpt.lost_peer import _LostPeerCommits

COMMIT = (
    "[process=1] Failed to run 6 Handler Commit operations or the Commit callback in background "
    "save thread, directory: /run/checkpoints/5"
)
LOST = (
    "UNAVAILABLE: Failed to send RPC to coordination service. Either the leader task was "
    "preempted/died/restarted unexpectedly"
)
BARRIER = "Timed out while waiting for async_commit_complete barrier."


def _barrier_error(cause: Exception) -> TimeoutError:
    """What orbax's background thread raises: a TimeoutError from jax's error (orbax 0.12.8)."""
    try:
        try:
            raise cause
        except type(cause) as err:
            raise TimeoutError(BARRIER) from err
    except TimeoutError as err:
        return err


def _logged(
    caplog: pytest.LogCaptureFixture, message: str, error: BaseException | None, name="absl"
) -> bool:
    caplog.clear()
    logger = logging.getLogger(name)
    if error is None:
        logger.error(message)
    else:
        try:
            raise error
        except type(error):
            logger.exception(message)
    return any(r.getMessage() == message for r in caplog.records)


@pytest.fixture
def no_filter_yet(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process as it starts: no lost-peer filter on absl's logger (an earlier test of the
    same process may have started a trainer, whose peer watch installs it), restored after."""
    absl = logging.getLogger("absl")
    kept = [f for f in absl.filters if not isinstance(f, _LostPeerCommits)]
    monkeypatch.setattr(absl, "filters", kept)  # a new list: the old one is back at teardown
    monkeypatch.setattr(lost_peer, "_installed", [])


def test_a_commit_that_lost_its_peer_is_held_and_other_errors_are_kept(caplog, no_filter_yet):
    caplog.set_level(logging.ERROR, logger="absl")
    assert _logged(caplog, COMMIT, _barrier_error(RuntimeError(LOST)))  # before: printed
    ckpt.silence_lost_peer_commits()
    ckpt.silence_lost_peer_commits()  # idempotent: one filter
    filters = logging.getLogger("absl").filters  # (a save's held errors may have one too)
    assert sum(isinstance(f, _LostPeerCommits) for f in filters) == 1
    # orbax's form: the barrier's TimeoutError raised from jax's UNAVAILABLE error
    assert not _logged(caplog, COMMIT, _barrier_error(RuntimeError(LOST)))
    assert not _logged(caplog, COMMIT, RuntimeError(LOST))  # the error itself
    # A commit that failed for another reason, or another message with the same error, stays.
    assert _logged(caplog, COMMIT, _barrier_error(RuntimeError("DEADLINE_EXCEEDED: Barrier")))
    assert _logged(caplog, COMMIT, OSError("No space left on device"))
    assert _logged(caplog, "Failed to restore step 5", RuntimeError(LOST))
    assert _logged(caplog, COMMIT, None)
    caplog.clear()  # the process went on: both held records are printed (not at pytest's exit)
    lost_peer._installed[0].release()
    assert [r.getMessage() for r in caplog.records] == [COMMIT, COMMIT]


def test_a_held_record_is_printed_once_if_the_process_goes_on(caplog):
    caplog.set_level(logging.ERROR)
    name = "tjx-ckpt-test-lost-peer"
    held = _LostPeerCommits(hold_s=0.2)
    logging.getLogger(name).addFilter(held)
    assert not _logged(caplog, COMMIT, _barrier_error(RuntimeError(LOST)), name)
    deadline = time.monotonic() + 10.0
    while not caplog.records and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [r.getMessage() for r in caplog.records] == [COMMIT]
    assert isinstance(caplog.records[0].exc_info[1], TimeoutError)  # the traceback too
    held.release()  # nothing held any more: not printed twice
    assert len(caplog.records) == 1


# A process that logs orbax's record, then ends as the peer watch ends it (os._exit) or normally.
CHILD = f"""
import logging, os, sys
from tjx.ckpt.lost_peer import silence_lost_peer_commits
silence_lost_peer_commits()
try:
    try:
        raise RuntimeError({LOST!r})
    except RuntimeError as err:
        raise TimeoutError("barrier") from err
except TimeoutError:
    logging.getLogger("absl").exception({COMMIT!r})
sys.stderr.flush()
os._exit(1) if sys.argv[1] == "watch" else sys.exit(1)
"""


@pytest.mark.parametrize("ending", ["watch", "normal"])
def test_only_the_peer_watchs_ending_leaves_the_record_unprinted(ending):
    done = subprocess.run(
        [sys.executable, "-c", CHILD, ending], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    if ending == "watch":
        assert done.stderr == ""
    else:  # at a normal exit it is printed after all, traceback and cause included
        assert COMMIT in done.stderr and "Traceback" in done.stderr and LOST in done.stderr
