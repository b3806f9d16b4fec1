"""A save that cannot be written, said once: which OS error it was, and orbax's reports of it held.

orbax writes a step in background threads. When the disk is full or the folder read-only, each
of its threads logs the failure through absl with a full traceback, tensorstore's callbacks hit
orbax's closed event loop ("Event loop is closed", printed as unraisable), the abandoned write
coroutines print their own at exit, and the error itself reaches the caller only at its next
save or wait: 165–800 lines on a small run, which went on training meanwhile.
`CheckpointManager` turns such a failure into one `CheckpointWriteError`; this module holds
what it needs:

- `write_failure` finds the operating system's error behind what orbax raised: an ``OSError``
  with an error number (Python's writes: ``EROFS``, ``EACCES``, ``EPERM``; tjx-ckpt's durable
  commit chains it), or tensorstore's ``ValueError`` whose message carries
  ``[os_error_code='28']`` (its array writes: ``ENOSPC``). A save cut short by a lost peer
  process (jax's ``UNAVAILABLE``, a barrier's ``TimeoutError``) is not one: the peer watch says
  that (`tjx.ckpt.lost_peer`).
- `held_save_logs` holds back orbax's ERROR records while a save is in flight: printed when the
  save turns out fine (there are none then) or failed for another reason, dropped when the
  manager raises `CheckpointWriteError` (whose one line says it), printed at exit when nobody
  waited for the save. Records outside a save pass.
"""

from __future__ import annotations

import atexit
import errno as errno_codes
import logging
import os
import re
import threading
from dataclasses import dataclass

from tjx.ckpt.errors import exception_chain, one_line

__all__ = ["WriteFailure", "held_save_logs", "write_failure"]

#: tensorstore's way of naming the OS error of a failed file write.
_TENSORSTORE_ERRNO = re.compile(r"os_error_code='?(\d+)'?")
#: A save that failed because a peer process went away (not a storage failure).
_PEER_GONE = ("coordination service", "UNAVAILABLE")
#: Set on a held record when it is printed after all, so that the filter lets it through.
_RELEASED = "tjx_save_log_released"
_ORBAX_DIR = "/orbax/"


@dataclass(frozen=True)
class WriteFailure:
    """The operating system's error behind a failed save."""

    errno: int | None
    reason: str  # its words: os.strerror, or the error's own message
    detail: str  # the error that said it, in one line (a path, tensorstore's operation)

    @property
    def full(self) -> bool:
        """Whether space ran out (the fix is to free some, not to grant permissions)."""
        return self.errno in (errno_codes.ENOSPC, errno_codes.EDQUOT, errno_codes.EFBIG)


def write_failure(error: BaseException) -> WriteFailure | None:
    """The OS error a failed save raised (anywhere in its chain), or None when it was not one.

    Examples
    --------
    >>> write_failure(ValueError("RESOURCE_EXHAUSTED: ... [os_error_code='28']")).reason
    'No space left on device'
    >>> write_failure(PermissionError(1, "Operation not permitted", "/ckpt/3.tmp")).errno
    1
    >>> write_failure(TypeError("a bug")) is None
    True
    """
    chain = exception_chain(error)
    if any(all(word in str(e) for word in _PEER_GONE) for e in chain):
        return None
    for e in chain:
        if isinstance(e, TimeoutError):  # a barrier: peers, not storage
            return None
        if isinstance(e, OSError) and e.errno is not None:
            return WriteFailure(e.errno, e.strerror or os.strerror(e.errno), one_line(str(e)))
        found = _TENSORSTORE_ERRNO.search(str(e))
        if found:
            code = int(found.group(1))
            return WriteFailure(code, os.strerror(code), one_line(str(e)))
    for e in chain:  # an OSError without a number (an object store's client): its own words
        if isinstance(e, OSError) and not isinstance(e, TimeoutError) and str(e):
            return WriteFailure(None, one_line(str(e)), one_line(str(e)))
    return None


class _HeldSaveLogs(logging.Filter):
    """Holds orbax's ERROR records while a save is in flight (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.held: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _RELEASED, False) or record.levelno < logging.ERROR:
            return True
        if _ORBAX_DIR not in record.pathname.replace("\\", "/"):
            return True
        with self._lock:
            if not self.in_flight:
                return True
            self.held.append(record)
        return False

    def start(self) -> None:
        """A save begins: hold orbax's error records from now on."""
        with self._lock:
            self.in_flight += 1

    def settle(self, *, said: bool) -> None:
        """A save ended: drop what was held when its failure is said in a `CheckpointWriteError`
        (``said``), else print it as orbax logged it."""
        with self._lock:
            self.in_flight = max(0, self.in_flight - 1)
            held, self.held = self.held, []
        if not said:
            self._print(held)

    def release(self) -> None:
        """Print whatever is still held (at exit: a save nobody waited for)."""
        with self._lock:
            held, self.held = self.held, []
        self._print(held)

    @staticmethod
    def _print(records: list[logging.LogRecord]) -> None:
        for record in records:
            setattr(record, _RELEASED, True)
            logging.getLogger(record.name).handle(record)


_installed: list[_HeldSaveLogs] = []


def held_save_logs() -> _HeldSaveLogs:
    """The process's holder of orbax's save errors, installed on absl's logger at first use."""
    if not _installed:
        _installed.append(_HeldSaveLogs())
        logging.getLogger("absl").addFilter(_installed[0])
        atexit.register(_installed[0].release)
    return _installed[0]
