"""A C++ abort of jax's runtime ends the process with one line, not a stack dump.

jax 0.10 ends a process from a C++ thread when not every process joined by its deadline, and
every survivor the moment process 0's connection drops: ``LOG(FATAL)``, a stack dump, SIGABRT. The
client's ``missed_heartbeat_callback`` cannot carry the status to Python (``std::bad_cast``), and
a Python signal handler never runs. So :func:`guard_aborts` turns absl's C++ log off
(``TJX_CPP_LOGS=1`` keeps it) and gives SIGABRT a C-level handler (ctypes) that runs on the
aborting thread, reports the line of the moment (not joined; the peer watch's verdict; a lost
coordinator when process 0's port refuses; else jax's runtime) and ends the process with status 1.
A C++ exception that escapes a thread (gloo's, when a peer drops in the middle of a collective)
ends in ``std::terminate``, whose default handler prints the exception before it aborts: with the
log off, it aborts at once instead, so the same one line is all that is said.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import sys
import time
from collections.abc import Callable

from tjx.parallel.internals import set_cpp_log_level

#: Set to 1 to keep jax's C++ log output in a multi-process run.
CPP_LOGS_ENV = "TJX_CPP_LOGS"
_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_int)
_guard: dict[str, object] = {}  # the ctypes callback (kept alive) and what an abort means now


def exit_with(message: str, prefix: str = "tjx.parallel: error: ") -> None:
    """Print ``prefix + message`` and end the process with status 1 (the main thread may be
    stuck in a C++ collective, where nothing can be raised)."""
    print(prefix + message, file=sys.stderr, flush=True)
    os._exit(1)


def coordinator_reachable(
    address: str | None, timeout_s: float = 2.0, settle_s: float = 0.5
) -> bool:
    """Whether ``host:port`` accepts a TCP connection (a killed process 0's port refuses). The
    abort comes as its connection drops, while its listening socket may still be closing:
    ``settle_s`` first. Unknown or malformed: ``True`` (never claim a loss unseen)."""
    if not address or ":" not in address:
        return True
    time.sleep(settle_s)
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def abort_message(dead: str | None, rank: int, n: int, reachable: Callable[[], bool]) -> str:
    """An abort's line after joining: the watch's verdict if it spoke first; a lost coordinator
    when process 0's port refuses (asked off process 0 only); else jax's runtime."""
    if dead is not None:
        return dead
    if rank != 0 and not reachable():
        return (
            f"lost the coordinator (process 0 of {n}): its connection closed (killed or "
            "crashed), and jax's runtime ended this process"
        )
    return (
        f"jax's runtime aborted process {rank} of {n} (a fatal error in its C++ runtime; set "
        f"{CPP_LOGS_ENV}=1 to see its log)"
    )


def _terminate_by_abort() -> None:
    """``std::terminate`` calls libc's ``abort`` without printing the exception first (libstdc++,
    which jax's C++ runtime loads on Linux; elsewhere the print stays: the only difference)."""
    with contextlib.suppress(OSError, AttributeError):
        set_terminate = ctypes.CDLL("libstdc++.so.6")._ZSt13set_terminatePFvvE
        set_terminate.restype = ctypes.c_void_p
        set_terminate.argtypes = [ctypes.c_void_p]
        set_terminate(ctypes.cast(ctypes.CDLL(None).abort, ctypes.c_void_p))


def guard_aborts(describe: Callable[[], str], report: Callable[[str], None]) -> None:
    """From now on a SIGABRT runs ``report(describe())`` on the aborting thread, then
    ``os._exit(1)``; jax's C++ log is off unless ``TJX_CPP_LOGS=1``. A later call replaces what
    an abort means (joining, then joined, then watched)."""
    _guard["describe"], _guard["report"] = describe, report
    if os.environ.get(CPP_LOGS_ENV, "") in ("", "0"):
        set_cpp_log_level(1000)  # absl's kInfinity: nothing is logged, FATAL included
        _terminate_by_abort()
    if "callback" in _guard:
        return

    def on_abort(signum: int) -> None:
        with contextlib.suppress(BaseException):  # whatever fails: status 1, never return
            _guard["report"](_guard["describe"]())  # type: ignore[operator]
        os._exit(1)

    _guard["callback"] = callback = _HANDLER(on_abort)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, _HANDLER]
    libc.signal(signal.SIGABRT, callback)
