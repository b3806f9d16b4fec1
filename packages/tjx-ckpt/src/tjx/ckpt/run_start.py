"""A command line's run directory, read and checked before anything is written: where it is, and
whether the run may start there fresh or resume (`RunDir.check_start`), as one `ConfigError`
line naming the flag to change and how. Standard library only, like `tjx.ckpt.run_dir`.
"""

from __future__ import annotations

from pathlib import Path

from tjx.ckpt.config_values import ConfigError, keyed
from tjx.ckpt.run_checks import NotCreatableError, RunStartError
from tjx.ckpt.run_dir import RunDir
from tjx.ckpt.storage import StoragePath

__all__ = ["start_location"]


def start_location(
    text: str, *, resume: bool, flag: str = "--run-dir", resume_flag: str = "--resume"
) -> StoragePath:
    """The run directory ``text`` names, checked for a run that starts fresh or resumes.

    Parameters
    ----------
    text : str
        A local path (``~`` expanded) or a ``gs://`` / ``s3://`` URL (an ``epath.Path``).
    resume : bool
        Whether the run resumes (it needs a checkpoint there) or starts fresh (it must find no
        step folder, committed or not: a fresh run never trains over an old one).
    flag, resume_flag : str
        The command's flags for the directory and for resuming, named in the messages.

    Returns
    -------
    Path or epath.Path
        The directory (nothing is written).

    Raises
    ------
    ConfigError
        ``FLAG: ...`` for a URL of another scheme or a folder that cannot be made
        (`NotCreatableError`); ``RESUME_FLAG: no checkpoint in ...`` for a resume with nothing
        to resume; ``FLAG: ... already holds checkpoints`` for a fresh start over an old run.
    """
    try:
        with keyed(flag, NotCreatableError):
            path = RunDir(text).path if "://" in text else Path(text).expanduser()
            RunDir(path).check_start(resume=resume)
    except RunStartError as err:
        if err.resume:
            raise ConfigError(f"{resume_flag}: {err}; train without {resume_flag} first") from None
        raise ConfigError(
            f"{flag}: {err}; pass {resume_flag} to continue or choose another {flag}"
        ) from None
    return path
