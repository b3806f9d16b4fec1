"""When jax's C++ runtime aborts a watched process, end it with one line, not a stack dump.

jax 0.10's coordination client polls the service (hosted by process 0) for errors; when process
0 dies, every other process sees its connection drop and aborts within a second: a C++
``LOG(FATAL)`` ("Terminating process because the JAX distributed service detected fatal
errors"), a stack trace, SIGABRT. The client's ``missed_heartbeat_callback`` would be the hook,
but jaxlib 0.10 cannot hand its ``absl::Status`` to a Python callable (``std::bad_cast``, then
``std::terminate``), and a Python ``signal.signal`` handler never runs: ``abort()`` kills the
process as soon as the C handler returns.

So while a multi-process run is watched (:class:`tjx.parallel.PeerWatch`), two things:

* absl's C++ log output is turned off (minimum level above FATAL), so the dump is never written;
  ``TJX_CPP_LOGS=1`` keeps it (to debug jax itself);
* SIGABRT gets a C-level handler (ctypes) that runs on the aborting thread, names what happened
  — process 0's port refuses connections: the coordinator is gone; else a fatal error inside
  jax's runtime — and hands the message to the watch's ``on_dead`` (one line, exit status 1).
  The handler never returns: returning would let ``abort()`` end the process by SIGABRT.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "CPP_LOGS_ENV",
    "abort_message",
    "coordinator_reachable",
    "guard_aborts",
    "install_abort_handler",
    "silence_cpp_logs",
]

#: Set to 1 to keep jax's C++ log output in a watched multi-process run.
CPP_LOGS_ENV = "TJX_CPP_LOGS"
#: absl's ``LogSeverityAtLeast::kInfinity``: no message is logged, FATAL included.
_ABSL_OFF = 1000

_HANDLER_TYPE = ctypes.CFUNCTYPE(None, ctypes.c_int)
_installed: list[object] = []  # the ctypes callback: alive as long as the handler is installed


def silence_cpp_logs() -> bool:
    """Turn absl's C++ log output off (unless ``TJX_CPP_LOGS=1``); whether it was turned off."""
    if os.environ.get(CPP_LOGS_ENV, "") not in ("", "0"):
        return False
    from jax._src.lib import utils  # jaxlib's setter of absl's minimum log level, as jax uses it

    utils.absl_set_min_log_level(_ABSL_OFF)
    return True


def coordinator_reachable(
    address: str | None, timeout_s: float = 2.0, settle_s: float = 0.5
) -> bool:
    """Whether ``host:port`` accepts a TCP connection (a killed process 0's port refuses).

    The abort comes the moment process 0's connection drops, while the kernel may still be
    closing its listening socket (which completes handshakes by itself): ``settle_s`` first.
    """
    if not address or ":" not in address:
        return True  # unknown: do not claim the coordinator is gone
    time.sleep(settle_s)
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return True
    except (OSError, ValueError):
        return False


def install_abort_handler(describe: Callable[[], str], report: Callable[[str], None]) -> None:
    """On SIGABRT: ``report(describe())`` on the aborting thread, then ``os._exit(1)``.

    Parameters
    ----------
    describe : callable
        The message, computed when the abort comes (it may probe the coordinator).
    report : callable
        Prints the line (the watch's ``on_dead``); it usually ends the process itself.
    """
    if _installed:
        return

    def on_abort(signum: int) -> None:
        # Any failure here must still end the process quietly with status 1, never return.
        with contextlib.suppress(BaseException):
            report(describe())
        os._exit(1)

    callback = _HANDLER_TYPE(on_abort)
    libc = ctypes.CDLL(None, use_errno=True)
    libc.signal.restype = ctypes.c_void_p
    libc.signal.argtypes = [ctypes.c_int, _HANDLER_TYPE]
    libc.signal(signal.SIGABRT, callback)
    _installed.append(callback)


def abort_message(
    dead: str | None, rank: int, num_processes: int, reachable: Callable[[], bool]
) -> str:
    """The line for an abort: the watch's own message if it spoke first (a verdict, a silence);
    else a lost coordinator when process 0's port refuses (asked only off process 0); else a
    fatal error inside jax's runtime."""
    if dead is not None:
        return dead
    if rank != 0 and not reachable():
        return (
            f"lost the coordinator (process 0 of {num_processes}): its connection closed "
            "(killed or crashed), and jax's runtime ended this process"
        )
    return (
        f"jax's runtime aborted process {rank} of {num_processes} (a fatal error in its C++ "
        f"runtime; set {CPP_LOGS_ENV}=1 to see its log)"
    )


class _Reporter(Protocol):
    """What a watch offers the handler (a :class:`tjx.parallel.PeerWatch`)."""

    @property
    def dead(self) -> str | None: ...

    def report(self, message: str) -> None: ...


def guard_aborts(watch: _Reporter, rank: int, num_processes: int) -> None:
    """Silence jax's C++ log and report an abort through ``watch`` (see the module docstring)."""
    from jax._src import distributed as _distributed  # where jax 0.10 keeps the address

    address = getattr(_distributed.global_state, "coordinator_address", None)

    def describe() -> str:
        return abort_message(
            watch.dead, rank, num_processes, lambda: coordinator_reachable(address)
        )

    silence_cpp_logs()
    install_abort_handler(describe, watch.report)
