"""Params-only restores from a run's checkpoint directory, opened read-only (for evaluation)."""

from __future__ import annotations

import os
from typing import Any

from tjx.ckpt.manager import CheckpointManager

__all__ = ["restore_params", "restore_params_and_step"]


def restore_params(
    directory: str | os.PathLike[str],
    *,
    target: Any,
    step: int | None = None,
    subtree: str = "params",
) -> Any:
    """Restores only the params subtree of a checkpoint, for evaluation or fine-tuning.

    Parameters
    ----------
    directory:
        A run's checkpoint directory (opened read-only: nothing in it is changed).
    target:
        The params tree (arrays or ShapeDtypeStructs with the shardings wanted).
    step:
        The step; None takes the newest intact one (a corrupt newer step is skipped with a
        :class:`~tjx.ckpt.CorruptCheckpointWarning`, as :meth:`CheckpointManager.restore` does).
    subtree:
        The top-level key of the saved state holding the params.

    Returns
    -------
    Any
        The params, shaped like ``target``.

    Raises
    ------
    CheckpointNotFoundError
        If ``directory`` does not exist or holds no complete checkpoint.
    CheckpointMismatchError
        If the checkpoint's params do not fit ``target``.
    CorruptCheckpointError
        If ``step`` is corrupt, or (``step`` None) every step is.
    """
    return restore_params_and_step(directory, target=target, step=step, subtree=subtree)[1]


def restore_params_and_step(
    directory: str | os.PathLike[str],
    *,
    target: Any,
    step: int | None = None,
    subtree: str = "params",
) -> tuple[int, Any]:
    """:func:`restore_params`, plus the step it read: with ``step`` None, the newest intact one.

    An evaluator that must say which step it evaluated (and fall back past a corrupt newest step
    the way the trainer's resume does) calls this instead of picking the newest folder itself.
    """
    manager = CheckpointManager(directory, read_only=True, keep_last=None)
    try:
        return manager.restore_params_and_step(target=target, step=step, subtree=subtree)
    finally:
        manager.close()
