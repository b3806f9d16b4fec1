"""A training run's ``--resume``: its newest intact step, onto the fresh state's placement."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax

from tjx.ckpt.fallback import corrupt_fallback_lines
from tjx.ckpt.manager import CheckpointManager
from tjx.ckpt.reader import Restored


def restore_placed(
    manager: CheckpointManager, target: Any, *, prog: str, step: int | None = None
) -> Restored:
    """`CheckpointManager.restore` of the newest intact step (or ``step``) onto ``target``,
    placed exactly so.

    A corrupt newer step is skipped in one ``PROG: warning:`` line (`corrupt_fallback_lines`).
    Restoring reshards onto the target's shardings already; each leaf is then put on its target
    leaf's own sharding object, so that the state is placed as the fresh one it replaces (a
    jitted step compiled for that one runs it unchanged).

    Parameters
    ----------
    manager : CheckpointManager
        The run's checkpoints.
    target : pytree of jax.Array
        The fresh state: structure, shapes, dtypes and shardings to restore onto.
    prog : str
        The program's name, the warning line's prefix.
    step : int, optional
        This step (a replay's start), not the newest; a corrupt one is an error.

    Returns
    -------
    Restored
        The step read, its ``state`` placed as ``target``.

    Raises
    ------
    CheckpointError
        As `CheckpointManager.restore` (no complete step, one that does not fit, all corrupt).
    """
    with corrupt_fallback_lines(prog):
        restored = manager.restore(step, target=target)
    state = jax.tree.map(lambda x, t: jax.device_put(x, t.sharding), restored.state, target)
    return dataclasses.replace(restored, state=state)


__all__ = ["restore_placed"]
