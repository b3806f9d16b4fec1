"""Exceptions raised by tjx.ckpt.

Every error derives from :class:`CheckpointError`, and also from the builtin exception a caller
would naturally catch (``FileNotFoundError``, ``ValueError``), so ``except FileNotFoundError``
keeps working.
"""

from __future__ import annotations

import re
from pathlib import Path

#: The most characters of one step's corruption reason (in the skip warning and in the
#: "no readable checkpoint" error, which an app prints as its one error line).
REASON_LIMIT = 200
# tensorstore appends the JSON spec of the failed read (about a kilobyte each, sometimes two)
# and source locations to its messages: nothing a reader of a one-line reason can use.
_TENSORSTORE_DETAIL = re.compile(
    r"\s*\[(?:tensorstore_spec(?:\[\d+\])?|source locations)='[^']*'\]"
)


def exception_chain(error: BaseException | None) -> list[BaseException]:
    """``error`` and the exceptions it was raised from or during, once each."""
    seen: list[BaseException] = []
    while error is not None and not any(error is e for e in seen):
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen


def one_line(text: str, limit: int = REASON_LIMIT) -> str:
    """The first non-empty line of ``text``, without tensorstore's specs, at most ``limit`` long.

    A longer line keeps its start and its end around a "…": a tensorstore error is a chain of
    contexts whose most specific cause (the file, the byte range) comes last.
    """
    text = _TENSORSTORE_DETAIL.sub("", text)
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    if len(line) <= limit:
        return line
    head = limit // 3
    return line[:head] + "…" + line[len(line) - (limit - head - 1) :]


class CheckpointError(Exception):
    """Base class of every tjx.ckpt error."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The directory does not exist, or holds no complete checkpoint (or not the step asked for)."""


class CheckpointMismatchError(CheckpointError, ValueError):
    """A checkpoint does not fit the target: tree structure, a shape, a dtype or a PRNG impl.

    The message names the first mismatching path, e.g.
    ``params/blocks/0/attn/kernel: shape (64, 32) in checkpoint, (64, 48) expected``.
    """


class CorruptCheckpointError(CheckpointError):
    """A step directory that looks committed cannot be read back intact (truncated, edited, ...).

    The message is short: ``step N (PATH): REASON`` with a one-line reason of at most
    :data:`REASON_LIMIT` characters, or, when every step failed, one such reason per step. The
    full underlying exception (orbax's, tensorstore's) is chained as ``__cause__``.

    Attributes
    ----------
    reason:
        The one-line reason without the step and its path (None when the error is not about one
        step).
    """

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason


class StepExistsError(CheckpointError, ValueError):
    """A save was asked for a step that already has a complete checkpoint in the directory."""


class CheckpointCommitError(CheckpointError, OSError):
    """A step could not be committed durably (an fsync, the commit marker or the rename failed).

    Nothing was committed: the step is not listed. `tjx.ckpt.durable.durable_commit` raises it
    and leaves the partial files in the temporary directory (a manager removes them when it next
    opens the checkpoint directory); `CheckpointManager` raises it as its subclass
    `CheckpointWriteError`, having removed them.
    """


class CheckpointWriteError(CheckpointCommitError):
    """A save could not be written: the disk is full, the folder is read-only or not writable
    (``ENOSPC``, ``EDQUOT``, ``EROFS``, ``EACCES``, ``EPERM`` ...), in the save itself or in its
    background write and commit.

    Nothing of the step was committed and its partial files are removed (on an object store:
    its objects without a commit marker); every step committed before stays as it was. The
    message is one line: ``cannot write checkpoint step N to DIR: REASON; ... (DETAIL)``; the
    error that orbax or the operating system raised is chained as ``__cause__``. A
    `CheckpointCommitError` (and an ``OSError``), so that callers of either keep working.

    Attributes
    ----------
    step : int or None
        The step whose save failed (None: not known, e.g. a failure outside any save).
    directory : str
        The checkpoint directory.
    reason : str
        The operating system's words for the failure (``"No space left on device"``).
    errno : int or None
        Its error number (``errno.ENOSPC`` ...), when the failure had one.
    """

    def __init__(
        self,
        message: str,
        *,
        step: int | None,
        directory: str,
        reason: str,
        errno: int | None = None,
    ) -> None:
        super().__init__(message)
        self.step, self.directory, self.reason = step, directory, reason
        self.errno = errno  # OSError's attribute: `except OSError` callers read it as usual


class NotCreatableError(CheckpointError, ValueError):
    """A folder is neither a directory nor something that can be made.

    Attributes
    ----------
    path : Path or str
        The folder asked for (a URL as a str: `tjx.ckpt.storage.StorageError`).
    """

    def __init__(self, path: Path | str, message: str) -> None:
        super().__init__(message)
        self.path = path


__all__ = [
    "CheckpointCommitError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CheckpointWriteError",
    "CorruptCheckpointError",
    "NotCreatableError",
    "StepExistsError",
    "exception_chain",
    "one_line",
]
