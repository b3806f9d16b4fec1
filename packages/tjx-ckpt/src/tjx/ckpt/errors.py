"""Exceptions raised by tjx.ckpt.

Every error derives from :class:`CheckpointError`, and also from the builtin exception a caller
would naturally catch (``FileNotFoundError``, ``ValueError``), so ``except FileNotFoundError``
keeps working.
"""

from __future__ import annotations


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
    """A step directory that looks committed cannot be read back intact (truncated, edited, ...)."""


class StepExistsError(CheckpointError, ValueError):
    """A save was asked for a step that already has a complete checkpoint in the directory."""


class CheckpointCommitError(CheckpointError, OSError):
    """A step could not be committed durably (an fsync, the commit marker or the rename failed).

    Nothing was committed: the step is not listed, and its partial files stay in the temporary
    directory until a manager next opens the checkpoint directory.
    """


__all__ = [
    "CheckpointCommitError",
    "CheckpointError",
    "CheckpointMismatchError",
    "CheckpointNotFoundError",
    "CorruptCheckpointError",
    "StepExistsError",
]
