"""Where a stopped run goes on from, in words: its newest committed step (`RunFolder.latest_step`).

Standard library only (as `tjx.ckpt.folder`): an app says this after a Ctrl-C, whose signal may
have cut its import of jax short.
"""

from __future__ import annotations

from tjx.ckpt.folder import RunFolder
from tjx.ckpt.storage import StoragePath


def last_checkpoint_words(run_dir: StoragePath | str, then: str, otherwise: str = "") -> str:
    """The end of a stopped run's line: what was saved, and what to do next.

    Parameters
    ----------
    run_dir : path or str
        The run directory, named as the user gave it.
    then : str
        What to do with a committed step (``"continue with --resume"``).
    otherwise : str
        What follows when none was committed (``"; start again"``; default: nothing).

    Returns
    -------
    str
        ``"the last checkpoint is step N in 'RUN_DIR'; THEN"``, or ``"no checkpoint was
        savedOTHERWISE"``.
    """
    step = RunFolder(run_dir).latest_step()
    if step is None:
        return f"no checkpoint was saved{otherwise}"
    return f"the last checkpoint is step {step} in {str(run_dir)!r}; {then}"


__all__ = ["last_checkpoint_words"]
