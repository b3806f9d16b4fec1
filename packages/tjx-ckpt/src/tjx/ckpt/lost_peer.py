"""A save cut short by a dead peer process, said once (by the peer watch), not twice.

In a multi-process run, orbax finishes each asynchronous save on a background thread that meets
the other processes at a barrier of jax's coordination service. When a peer dies during that
wait (process 0, which hosts the service, above all), the barrier fails with an ``UNAVAILABLE``
error and orbax logs it through absl with a full traceback — while the process's peer watch
(`tjx.parallel.watch_peers`) is reporting the same loss in one line and ending the process. The
save itself is not lost silently: it never committed here, so the newest committed step the watch
names is the one to resume from.

orbax logs ``TimeoutError: Timed out while waiting for async_commit_complete barrier`` (or
``async_write_complete``) raised *from* jax's ``UNAVAILABLE`` error, so the error is looked for
in the whole chain (``__cause__`` / ``__context__``), not only in the exception logged.

:func:`silence_lost_peer_commits` holds exactly those records back instead of printing them, and
prints them late unless the process ends first by the peer watch's verdict: that ending is
``os._exit`` (the main thread may be stuck in a collective), which skips ``atexit``, so a record
held then is never printed. A process that goes on for ``hold_s``, or exits normally (the commit
failed for a blip, and orbax raises the error on the main thread at its next save), prints it
then. Any other error orbax logs is printed at once, as before.
"""

from __future__ import annotations

import atexit
import logging
import threading

from tjx.ckpt.errors import exception_chain

__all__ = ["silence_lost_peer_commits"]

#: What orbax's log record says (its background commit failed) and what the error says (the
#: coordination service, i.e. a peer process, went away).
_COMMIT_FAILED = "background save thread"
_PEER_GONE = ("coordination service", "UNAVAILABLE")
#: Set on a held record when it is printed after all, so that the filter lets it through.
_RELEASED = "tjx_lost_peer_released"
#: How long a held record waits: the peer watch ends a process within its silence (15 s in the
#: trainer) plus a few rounds; jax's runtime ends one whose coordinator is gone at once.
HOLD_S = 60.0


def _is_lost_peer_commit(record: logging.LogRecord) -> bool:
    """Whether ``record`` is orbax's report of a background commit whose barrier lost a peer."""
    if _COMMIT_FAILED not in record.getMessage() or not record.exc_info:
        return False
    return any(all(w in str(e) for w in _PEER_GONE) for e in exception_chain(record.exc_info[1]))


class _LostPeerCommits(logging.Filter):
    """Holds orbax's traceback of a background commit whose barrier lost a peer (see module)."""

    def __init__(self, hold_s: float) -> None:
        super().__init__()
        self.hold_s = hold_s
        self._lock = threading.Lock()
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _RELEASED, False) or not _is_lost_peer_commit(record):
            return True
        with self._lock:
            self.held.append(record)
        timer = threading.Timer(self.hold_s, self.release)
        timer.daemon = True  # an os._exit meanwhile ends it unprinted: the watch said it
        timer.start()
        return False

    def release(self) -> None:
        """Print every record still held (the process went on: it was no lost-peer ending)."""
        with self._lock:
            held, self.held = self.held, []
        for record in held:
            setattr(record, _RELEASED, True)
            logging.getLogger(record.name).handle(record)


_installed: list[_LostPeerCommits] = []


def silence_lost_peer_commits(hold_s: float = HOLD_S) -> None:
    """From now on, hold back orbax's report of an asynchronous save whose processes lost a peer:
    printed only if the process is still running ``hold_s`` seconds later or exits normally, so
    that a process the peer watch ends (``os._exit``) says the loss in its one line only. For a
    process whose peer watch reports that loss itself. Idempotent (the first ``hold_s`` stays)."""
    if not _installed:
        _installed.append(_LostPeerCommits(hold_s))
        logging.getLogger("absl").addFilter(_installed[0])
        atexit.register(_installed[0].release)
