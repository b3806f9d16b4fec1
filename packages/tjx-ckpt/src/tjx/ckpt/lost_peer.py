"""A save cut short by a dead peer process, said once (by the peer watch), not twice.

In a multi-process run, orbax finishes each asynchronous save on a background thread that meets
the other processes at a barrier of jax's coordination service. When a peer dies during that
wait (process 0, which hosts the service, above all), the barrier fails with an ``UNAVAILABLE``
error and orbax logs it through absl with a full traceback — while the process's peer watch
(`tjx.parallel.watch_peers`) is reporting the same loss in one line and ending the process. The
save itself is not lost silently: it never committed, so the newest committed step the watch
names is the one to resume from. :func:`silence_lost_peer_commits` drops exactly those
tracebacks; any other error orbax logs is kept.
"""

from __future__ import annotations

import logging

__all__ = ["silence_lost_peer_commits"]

#: What orbax's log record says (its background commit failed) and what the error says (the
#: coordination service, i.e. a peer process, went away).
_COMMIT_FAILED = "background save thread"
_PEER_GONE = ("coordination service", "UNAVAILABLE")


class _LostPeerCommit(logging.Filter):
    """Drops orbax's traceback of a background commit whose barrier lost a peer."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _COMMIT_FAILED not in record.getMessage() or not record.exc_info:
            return True
        error = str(record.exc_info[1])
        return not all(word in error for word in _PEER_GONE)


_installed = False


def silence_lost_peer_commits() -> None:
    """From now on, drop orbax's report of an asynchronous save whose processes lost a peer
    (idempotent). For a process whose peer watch reports that loss itself."""
    global _installed
    if not _installed:
        _installed = True
        logging.getLogger("absl").addFilter(_LostPeerCommit())
