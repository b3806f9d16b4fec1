"""A corrupt step's fallback, said in one line: no Python warning format, no read's debris.

``CheckpointManager`` warns (:class:`CorruptCheckpointWarning`) once per step it skips, naming the
step, why and the step used instead. A command-line program wraps its restore in
:func:`corrupt_fallback_lines`, which prints each such warning as one ``<prog>: warning: …`` line
on stderr instead of Python's ``file:line: Category: message`` plus the source line.

A failed tensorstore read also leaves debris that Python prints later, when the failed reads'
futures are garbage-collected: asyncio's ``Future exception was never retrieved`` (logged with a
traceback of the same error the warning names), callbacks aimed at orbax's closed event loop
(``RuntimeError: Event loop is closed``, reported as unraisable) and orbax's own read coroutines,
closed at collection while still holding the read's error (``Exception ignored in: <coroutine
…>``, reported as unraisable with the whole tensorstore spec), and orbax's reads that the failure
cut off before they started (its array metadata read beside the arrays', scheduled but not yet
run when orbax's loop ended: ``RuntimeWarning: coroutine 'Store._get_array_metadatas' was never
awaited`` at collection). :func:`silence_failed_reads` drops exactly those kinds of message (the
last only for coroutines that orbax's modules define), for the rest of the process; the manager
installs it before its first fallback read, because the debris can arrive from tensorstore's
threads before the failed read's exception reaches the manager.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import re
import sys
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = [
    "CorruptCheckpointWarning",
    "collect_failed_read",
    "corrupt_fallback_lines",
    "silence_failed_reads",
    "warn_skipped",
]

#: Where orbax's modules live: a coroutine whose code is in one is one of orbax's reads.
_ORBAX_DIR = "/orbax/checkpoint/"
_NEVER_RETRIEVED = ("Future exception was never retrieved", "Task exception was never retrieved")


class CorruptCheckpointWarning(UserWarning):
    """Issued when restore skips a committed step that cannot be read back intact."""


class _FailedReadDebris(logging.Filter):
    """Drops asyncio's report of a failed read's future that nobody awaited any more."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_NEVER_RETRIEVED)


_installed = False
#: The message pattern of orbax's unawaited coroutines (None: not made yet).
_unawaited: str | None = None


def silence_failed_reads() -> None:
    """From now on, drop the messages a failed checkpoint read leaves behind (idempotent).

    The log filter and the unraisable hook are installed once; the warnings filter is put back
    at every call: a caller's ``warnings.catch_warnings`` (`corrupt_fallback_lines`' own, around
    a restore) drops it with its other filters at its end, and an orbax read a restore left
    unawaited then said "coroutine … was never awaited" whenever a later collection came (a
    resumed run's failed save printed it above its one error line)."""
    global _installed
    if not _installed:
        _installed = True
        logging.getLogger("asyncio").addFilter(_FailedReadDebris())
        previous = sys.unraisablehook

        def hook(unraisable: Any) -> None:
            exc = unraisable.exc_value
            if isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed":
                return  # a tensorstore callback to orbax's finished loop: nothing left to do
            orbax_read = _is_orbax_coroutine(getattr(unraisable, "object", None))
            if orbax_read and isinstance(exc, Exception):
                return  # an abandoned read of the failed step, collected: its error was reported
            previous(unraisable)

        sys.unraisablehook = hook
    _ignore_unawaited_orbax_reads()


def collect_failed_read() -> None:
    """Collect a failed read's abandoned coroutines now, their "never awaited" warnings dropped:
    here, not at a later collection, which a caller's ``warnings.catch_warnings`` (whose filters
    end with it) may leave without the filter of :func:`silence_failed_reads`."""
    with warnings.catch_warnings():
        _ignore_unawaited_orbax_reads()
        gc.collect()


def _ignore_unawaited_orbax_reads() -> None:
    """A warnings filter that drops "coroutine '…' was never awaited" for orbax's coroutines.

    No collection runs until the filter is in place (gathering the names and compiling the
    pattern allocate enough to start one), or it could end an abandoned read unfiltered.
    """
    global _unawaited
    enabled = gc.isenabled()
    gc.disable()
    try:
        if _unawaited is None:  # made once orbax is loaded (the manager's module imports it)
            names = sorted(re.escape(name) for name in _orbax_coroutine_names())
            if not names:
                return
            _unawaited = f"coroutine '(?:{'|'.join(names)})' was never awaited"
        warnings.filterwarnings("ignore", message=_unawaited, category=RuntimeWarning)
    finally:
        if enabled:
            gc.enable()


def _orbax_coroutine_names() -> set[str]:
    """The qualified names of the coroutine functions (and methods) of orbax's loaded modules:
    what Python's "coroutine '…' was never awaited" names."""
    names: set[str] = set()
    for name, module in list(sys.modules.items()):
        if not name.startswith("orbax.checkpoint") or module is None:
            continue
        for value in list(vars(module).values()):
            members = [value, *vars(value).values()] if inspect.isclass(value) else [value]
            for member in members:
                function = getattr(member, "__func__", member)  # static and class methods
                if inspect.iscoroutinefunction(function) and function.__module__ == name:
                    names.add(function.__qualname__)
    return names


def _is_orbax_coroutine(obj: Any) -> bool:
    """Whether ``obj`` is a coroutine defined in orbax's package (one of its array reads)."""
    return inspect.iscoroutine(obj) and _ORBAX_DIR in obj.cr_code.co_filename.replace("\\", "/")


def warn_skipped(failures: list[tuple[int, Any]], used: str) -> None:
    """One warning per skipped step: which, why (``str(err)`` of its `CorruptCheckpointError`
    is "step N (path): one short line", the cause chained, not shown) and ``used``, the step
    restored instead."""
    for _, err in failures:
        warnings.warn(
            f"tjx.ckpt: skipping corrupt checkpoint {err}{used}",
            CorruptCheckpointWarning,
            stacklevel=4,
        )


@contextlib.contextmanager
def corrupt_fallback_lines(prog: str, stream: TextIO | None = None) -> Iterator[None]:
    """Print each :class:`CorruptCheckpointWarning` raised in the block as one line.

    Parameters
    ----------
    prog : str
        The program's name, the line's prefix (``trainer: warning: tjx.ckpt: skipping …``).
    stream : TextIO, optional
        Where the lines go (default: ``sys.stderr`` at the time of the warning).

    Other warnings are shown as before.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", CorruptCheckpointWarning)
            shown = warnings.showwarning

            def show(message: Any, category: Any, *args: Any, **kwargs: Any) -> None:
                if not issubclass(category, CorruptCheckpointWarning):
                    shown(message, category, *args, **kwargs)
                    return
                out = stream if stream is not None else sys.stderr
                print(f"{prog}: warning: {message}", file=out, flush=True)

            warnings.showwarning = show
            yield
    finally:
        if _installed:  # a restore in the block silenced orbax's reads: its filter went with ours
            _ignore_unawaited_orbax_reads()
